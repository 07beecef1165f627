"""What an operator reads when a flag or an input is wrong: one line that names the flag, file or
day and what to do, and the documented exit code (README: 0 ok, 1 refused, 2 wrong flag, 3 input
not usable)."""
import datetime
import decimal
import json
import os

import duckdb
import pytest

from pipelines import options as opts
from pipelines import samples
from tests.conftest import event, run_cli, table, write_file
from transforms.stores import fs

pytestmark = pytest.mark.engine

DAY = datetime.date(2023, 1, 1)


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
  """A customer prefix with two delivered days, and a side folder next to them."""
  root = tmp_path_factory.mktemp('m') / 'events'
  for day in (DAY, DAY + datetime.timedelta(days=1)):
    samples.write_day(str(root), day, samples.events(day, 200, seed=day.day), files=1)
  write_file(str(root / 'exports' / 'old.parquet'), table([event(1)]))
  return root


def one_line_error(proc, code: int) -> str:
  assert proc.returncode == code, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
  return lines[0]


def wrong_sources(bucket) -> dict[str, tuple[str, list[str]]]:
  """--source value -> what the refusal must say."""
  return {
      str(bucket) + 'x': ('does not exist', ['check --source for a typo']),
      str(bucket / 'dt=2023-01-01'): ('has no dt=YYYY-MM-DD folders', ['part-0.parquet']),
      str(bucket.parent): ('has no dt=YYYY-MM-DD folders', ['events/']),
  }


@pytest.mark.parametrize('case', range(3))
def test_a_wrong_source_prefix_is_named_as_such(bucket, tmp_path, case):
  source, (what, names) = list(wrong_sources(bucket).items())[case]
  proc = run_cli('pipelines.import_events', '--source', source, '--lake', str(tmp_path / 'lake'),
                 '--date', str(DAY), check=False)
  line = one_line_error(proc, 3)
  assert f'source prefix {source} {what}' in line and all(n in line for n in names), line
  assert '_SUCCESS does not exist' not in line
  check = run_cli('pipelines.check', '--source', source, check=False)
  assert check.returncode == 1, check.stdout
  assert f'  DAYS    FAILED   source prefix {source} {what}' in check.stdout
  assert 'verdict: NOT usable as source' in check.stdout


def test_check_of_a_good_source_lists_its_days(bucket):
  proc = run_cli('pipelines.check', '--source', str(bucket))
  assert '  DAYS    OK       it has 2 days, dt=2023-01-01 to dt=2023-01-02' in proc.stdout
  assert 'verdict: usable as source' in proc.stdout


def test_a_day_not_delivered_says_so_and_names_the_days_there(bucket, tmp_path):
  proc = run_cli('pipelines.import_events', '--source', str(bucket), '--lake',
                 str(tmp_path / 'lake'), '--date', '2023-01-05', check=False)
  line = one_line_error(proc, 3)
  assert f'{bucket} has no dt=2023-01-05 folder' in line
  assert 'it has 2 days, dt=2023-01-01 to dt=2023-01-02' in line


def test_backfill_does_not_recommend_a_flag_it_refuses(tmp_path):
  bucket = tmp_path / 'bucket'
  samples.write_day(str(bucket), DAY, samples.events(DAY, 100, seed=1), files=1, success=False)
  proc = run_cli('pipelines.backfill', 'import', '--source', str(bucket), '--lake',
                 str(tmp_path / 'lake'), '--from_date', str(DAY), '--to_date', str(DAY),
                 check=False)
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert '_SUCCESS does not exist' in proc.stdout
  assert '--wait_for_success' not in proc.stdout + proc.stderr
  assert 'rerun the backfill once it is there' in proc.stdout


@pytest.mark.parametrize('text, plain, expected', [
    ('104857600', 1, 104_857_600), ('100MB', 1, 100_000_000), ('100MiB', 1, 100 * 2**20),
    ('1.5GB', 1, 1_500_000_000), ('1.5GiB', 1, 3 * 2**29), ('512k', 1, 512_000),
    ('512 KiB', 1, 512 * 1024), ('2gb', 1, 2 * 10**9), ('7b', 1, 7), (128, 2**20, 128 * 2**20),
    ('256', 2**20, 256 * 2**20), ('1GiB', 2**20, 2**30), ('0.5kB', 1, 500),
])
def test_sizes_take_units(text, plain, expected):
  assert opts.parse_size('--x', text, plain) == expected


@pytest.mark.parametrize('text', ['100 parsecs', 'MB', '-5MB', '1e6', '0', '0.0001k', ''])
def test_a_size_that_is_not_one_is_refused_naming_the_flag(text):
  with pytest.raises(opts.UsageError, match="--max_file_bytes .* (is not a size|at least 1 byte)"):
    opts.parse_size('--max_file_bytes', text)


@pytest.fixture(scope='module')
def lake(tmp_path_factory):
  """One committed lake day with purchase and signup events."""
  root = tmp_path_factory.mktemp('l')
  rows = [event(i, event_key=('purchase', 'signup')[i % 2], metric_value=decimal.Decimal(i))
          for i in range(1, 400)]
  write_file(str(root / 'bucket' / 'dt=2023-01-01' / 'a.parquet'), table(rows))
  fs.write_bytes(str(root / 'bucket' / 'dt=2023-01-01' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(root / 'bucket'), '--date', str(DAY),
          '--lake', str(root / 'lake'), '--target_file_mb', '64MB')
  return root / 'lake'


def export(lake, dest, *flags, check=True):
  return run_cli('pipelines.export_events', '--lake', str(lake), '--dest', str(dest), '--date',
                 str(DAY), *flags, check=check)


def test_size_flags_take_units_end_to_end(lake, tmp_path):
  dest = tmp_path / 'out'
  export(lake, dest, '--format', 'csv', '--max_file_bytes', '8kB')
  day = dest / 'dt=2023-01-01'
  sizes = [os.path.getsize(day / n) for n in os.listdir(day) if n.endswith('.csv')]
  assert len(sizes) > 1 and max(sizes) <= 8000, sizes
  rows = duckdb.sql(f"SELECT count(*) FROM read_csv('{day}/*.csv')").fetchall()[0][0]
  assert rows == 399
  line = one_line_error(export(lake, tmp_path / 'bad', '--max_file_bytes', '8 furlongs',
                               check=False), 2)
  assert "--max_file_bytes '8 furlongs' is not a size" in line


def test_events_that_match_nothing_are_named_with_the_days_events(lake, tmp_path):
  dest = tmp_path / 'out'
  report = tmp_path / 'report.json'
  proc = export(lake, dest, '--events', 'purchase,Purchase,sign_up', '--report', str(report))
  warning = ('warning: dt=2023-01-01: --events Purchase, sign_up matched no event of the day, so '
             'nothing of them is exported (the day has 2 event names: purchase, signup)')
  assert warning in proc.stderr.splitlines(), proc.stderr
  assert json.loads(report.read_text())['warnings'] == [warning[len('warning: '):]]
  exported = duckdb.sql(f"SELECT DISTINCT event_key FROM "
                        f"read_parquet('{dest}/dt=2023-01-01/*.parquet')").fetchall()
  assert exported == [('purchase',)]
