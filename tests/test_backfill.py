"""Backfills: the real `python -m pipelines.backfill` command over small sample days."""
import datetime
import json
import os
import re

import pyarrow.dataset as ds
import pytest

from pipelines import backfill, samples
from tests.conftest import run_cli
from transforms.stores import fs

pytestmark = pytest.mark.engine

FIRST = datetime.date(2023, 1, 1)


def days(n):
  return [FIRST + datetime.timedelta(days=i) for i in range(n)]


def bucket_of(root, n, skip_success=(), rows=400):
  bucket = root / 'bucket'
  for i, day in enumerate(days(n)):
    samples.write_day(str(bucket), day, samples.events(day, rows, seed=i), files=2,
                      success=day not in skip_success)
  return bucket


def backfill_import(bucket, lake, n, *flags, check=True):
  last = FIRST + datetime.timedelta(days=n - 1)
  return run_cli('pipelines.backfill', 'import', '--source', str(bucket), '--lake', str(lake),
                 '--from_date', str(FIRST), '--to_date', str(last), *flags, check=check)


def manifest(root, dt):
  return json.loads((root / f'dt={dt}' / '_manifest.json').read_text())


def corrupt_pages(path):
  """Garbles the data pages but keeps the footer, so only reading the rows fails."""
  data = bytearray(open(path, 'rb').read())
  data[100:len(data) // 2] = b'\xab' * (len(data) // 2 - 100)
  open(path, 'wb').write(data)


@pytest.mark.parametrize('argv, what, dry, rest', [
    (['import', '--dry_run', '--lake', 'l'], 'import', True, ['--lake', 'l']),
    (['--pipeline=export', '--dry_run=false'], None, False, ['--pipeline=export']),
    (['export', '--dry_run=True'], 'export', True, []),
])
def test_split_argv(argv, what, dry, rest):
  assert backfill.split_argv(argv) == (what, dry, rest)


def test_dry_run_prints_each_day_and_runs_nothing(tmp_path):
  bucket = bucket_of(tmp_path, 3, skip_success=[days(3)[2]])
  lake = tmp_path / 'lake'
  backfill_import(bucket, lake, 1)
  before = sorted(p.name for p in lake.iterdir())
  proc = backfill_import(bucket, lake, 3, '--dry_run', '--days_per_job', '2', check=False)
  assert proc.returncode == 3   # a day could not run
  out = proc.stdout
  assert 'backfill import plan: 3 days, 1 to run in 1 job(s) of up to 2 days' in out
  assert f'2023-01-01 skip   {bucket}/dt=2023-01-01 -> {lake}/dt=2023-01-01' in out
  assert 'complete: run ' in out and 'from the same 2 source files' in out
  assert f'2023-01-02 run    {bucket}/dt=2023-01-02 -> {lake}/dt=2023-01-02' in out
  assert 'not in the lake yet' in out
  assert '2023-01-03 fail' in out and '_SUCCESS does not exist' in out
  assert sorted(p.name for p in lake.iterdir()) == before


def test_complete_days_are_skipped_force_reruns_them_and_a_changed_source_reruns(tmp_path):
  bucket, lake = bucket_of(tmp_path, 2), tmp_path / 'lake'
  backfill_import(bucket, lake, 2)
  first = {dt: manifest(lake, dt) for dt in ('2023-01-01', '2023-01-02')}
  assert sorted(first['2023-01-01']['source_files']) == ['part-0.parquet', 'part-1.parquet']
  assert first['2023-01-01']['source_fingerprint'].startswith('sha256:')
  again = backfill_import(bucket, lake, 2)
  assert again.stdout.count(' skipped ') == 2 and '0 published, 2 skipped' in again.stdout
  assert {dt: manifest(lake, dt)['run_id'] for dt in first} == \
      {dt: m['run_id'] for dt, m in first.items()}

  forced = backfill_import(bucket, lake, 2, '--force', '--days_per_job', '1')
  assert '2 published, 0 skipped' in forced.stdout
  for dt, m in first.items():
    now = manifest(lake, dt)
    assert now['run_id'] != m['run_id']
    assert [f['sha256'] for f in now['files']] == [f['sha256'] for f in m['files']]

  samples.write_day(str(bucket), days(2)[1], samples.events(days(2)[1], 50, seed=9), files=3)
  changed = backfill_import(bucket, lake, 2)
  assert '1 published, 1 skipped' in changed.stdout
  assert len(manifest(lake, '2023-01-02')['source_files']) == 3


def test_a_failing_day_does_not_stop_the_others(tmp_path):
  d = days(5)
  bucket, lake = bucket_of(tmp_path, 5, skip_success=[d[1]]), tmp_path / 'lake'
  bad = bucket / 'dt=2023-01-03' / 'part-1.parquet'
  corrupt_pages(bad)
  held = lake / '_eventferry' / 'locks' / 'dt=2023-01-05.lock'
  fs.write_bytes(str(held), b'{"run_id": "still-running"}')
  proc = backfill_import(bucket, lake, 5, '--days_per_job', '5', check=False)
  assert proc.returncode == 1
  lines = proc.stdout.splitlines()
  status = {line.split()[0]: line.split()[1] for line in lines if line.startswith('2023-')}
  assert status == {'2023-01-01': 'published', '2023-01-02': 'failed', '2023-01-03': 'failed',
                    '2023-01-04': 'published', '2023-01-05': 'failed'}
  assert '_SUCCESS does not exist' in proc.stdout
  assert f'{bad} cannot be read at row group 0' in proc.stdout
  assert f'holds {held}' in proc.stdout and 'still-running' in proc.stdout
  assert 'retrying its days one by one' in proc.stderr
  assert 'backfill import: 5/5 days done (3 not published)' in proc.stderr
  assert '2 published, 0 skipped, 0 refused, 3 failed' in proc.stdout
  held.unlink()
  assert sorted(ds.dataset(str(lake), partitioning='hive').to_table()
                .column('dt').unique().to_pylist()) == ['2023-01-01', '2023-01-04']
  assert not (lake / 'dt=2023-01-03' / '_SUCCESS').exists()
  assert not os.path.exists(lake / '_staging')
  assert not os.listdir(lake / '_eventferry' / 'locks')


def test_export_backfill_from_a_spec_skips_what_was_exported(tmp_path):
  bucket, lake, dest = bucket_of(tmp_path, 3), tmp_path / 'lake', tmp_path / 'export'
  backfill_import(bucket, lake, 3)
  spec = tmp_path / 'acme.yaml'
  spec.write_text(f'lake: {lake}\ndest: {dest}\nformat: jsonl\nexclude_events: [$session_start]\n')

  def export(*flags, check=True):
    return run_cli('pipelines.backfill', 'export', '--spec', str(spec), '--from_date',
                   '2023-01-01', '--to_date', '2023-01-03', *flags, check=check)

  plan = export('--dry_run')
  assert f'2023-01-02 run    {lake}/dt=2023-01-02 -> {dest}/dt=2023-01-02' in plan.stdout
  first = export('--days_per_job', '2')
  assert '3 published, 0 skipped' in first.stdout
  for dt in ('2023-01-01', '2023-01-02', '2023-01-03'):
    m = manifest(dest, dt)
    assert m['files'][0]['name'].endswith('.jsonl')
    lake_rows = ds.dataset(str(lake / f'dt={dt}')).to_table()
    kept = sum(1 for e in lake_rows.column('event_key').to_pylist() if e != '$session_start')
    assert m['rows'] == kept
  assert '0 published, 3 skipped' in export().stdout

  backfill_import(bucket, lake, 1, '--force')          # the lake day changes: export it again
  assert 'the lake day was committed again (import run' in export('--dry_run').stdout
  assert '1 published, 2 skipped' in export().stdout


def test_export_backfill_with_a_layout_whose_days_share_a_folder_runs_a_job_per_day(tmp_path):
  bucket, lake, dest = bucket_of(tmp_path, 2, rows=50), tmp_path / 'lake', tmp_path / 'adobe'
  backfill_import(bucket, lake, 2)
  proc = run_cli('pipelines.backfill', 'export', '--lake', str(lake), '--dest', str(dest),
                 '--layout', 'adobe', '--from_date', '2023-01-01', '--to_date', '2023-01-02')
  assert '2 published' in proc.stdout and 'retrying' not in proc.stderr
  assert proc.stderr.count('days done') == 2          # one job per day


def test_a_dry_run_prints_the_folder_a_run_scoped_layout_renders_and_the_run_uses(tmp_path):
  bucket, lake, dest = bucket_of(tmp_path, 1, rows=50), tmp_path / 'lake', tmp_path / 'adobe'
  backfill_import(bucket, lake, 1)
  utc = datetime.timezone.utc

  def minute_of(folder):   # exportTime=YYYYMMDDHHMM, the minute the run started (UTC)
    return datetime.datetime.strptime(folder.rsplit('=', 1)[1], '%Y%m%d%H%M').replace(tzinfo=utc)

  def export(*flags):
    before = datetime.datetime.now(utc).replace(second=0, microsecond=0)
    proc = run_cli('pipelines.backfill', 'export', '--lake', str(lake), '--dest', str(dest),
                   '--layout', 'adobe', '--dataset_id', 'web', '--from_date', '2023-01-01',
                   '--to_date', '2023-01-01', *flags)
    return before, proc, datetime.datetime.now(utc)
  before, plan, after = export('--dry_run')
  found = re.search(rf' -> ({re.escape(str(dest))}/web/exportTime=\d{{12}})\n', plan.stdout)
  assert found and '{' not in plan.stdout, plan.stdout
  assert before <= minute_of(found.group(1)) <= after
  assert not dest.exists()                                 # a dry run writes nothing
  before, _, after = export('--report', str(tmp_path / 'report.json'))
  (written,) = os.listdir(dest / 'web')                    # what the export really wrote
  assert before <= minute_of(written) <= after
  (day,) = json.loads((tmp_path / 'report.json').read_text())['days']
  assert day['dest'] == str(dest / 'web' / written)


def test_export_backfill_of_the_flat_clevertap_layout_runs_days_together_and_skips_them(tmp_path):
  bucket, lake, dest = bucket_of(tmp_path, 2, rows=50), tmp_path / 'lake', tmp_path / 'ct'
  backfill_import(bucket, lake, 2)

  def export(*flags):
    return run_cli('pipelines.backfill', 'export', '--lake', str(lake), '--dest', str(dest),
                   '--layout', 'clevertap', '--request_id', 'R1', '--database_id', 'DB1',
                   '--format', 'csv', '--from_date', '2023-01-01', '--to_date', '2023-01-02',
                   *flags)
  proc = export()
  assert '2 published' in proc.stdout and proc.stderr.count('days done') == 1   # one job
  assert {'_SUCCESS-20230101', '_SUCCESS-20230102'} <= set(os.listdir(dest))
  assert '0 published, 2 skipped' in export().stdout
  os.remove(dest / '_SUCCESS-20230102')                 # the day's export is gone: redo it
  assert '1 published, 1 skipped' in export().stdout


@pytest.mark.parametrize('flags, message', [
    (['import', '--source', 's', '--lake', 'l', '--wait_for_success', '1h'],
     '--wait_for_success does not apply to a backfill'),
    (['export', '--lake', 'l', '--dest', 'd', '--format', 'bogus'], "--format 'bogus'"),
    (['import', '--source', 's', '--lake', 'l', '--from_date', '2023-01-01'],
     '--to_date is required'),
    (['--source', 's', '--lake', 'l'], 'say what to backfill'),
])
def test_wrong_flags_stop_the_backfill_before_any_day(flags, message):
  dates = [] if '--from_date' in flags else ['--from_date', '2023-01-01', '--to_date', '2023-01-02']
  proc = run_cli('pipelines.backfill', *flags, *dates, check=False)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr
