"""CleverTap's flat layout end to end: the real command, exact file names, days side by side in
one prefix, each day committed (and replaced) on its own; read back with gzip + json/csv."""
import csv
import datetime
import gzip
import io
import json
import os
import re

import pytest

from tests.conftest import event, run_cli, table, uuid, write_file
from transforms.stores import fs

pytestmark = pytest.mark.engine

REQ, DB = '1700000000123', 'W8R-6K4-5W7Z'
CLEVERTAP = ('--layout', 'clevertap', '--request_id', REQ, '--database_id', DB)
DAY2 = datetime.datetime(2023, 1, 2, 5, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope='module')
def lake(tmp_path_factory):
  """2023-01-01: purchase x2, signup; 2023-01-02: purchase."""
  root = tmp_path_factory.mktemp('flat')
  bucket, lake = root / 'bucket', root / 'lake'
  days = {'2023-01-01': [event(1), event(2, event_key='signup'), event(3)],
          '2023-01-02': [event(4, ts=DAY2)]}
  for dt, rows in days.items():
    write_file(str(bucket / f'dt={dt}' / 'a.parquet'), table(rows))
    fs.write_bytes(str(bucket / f'dt={dt}' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--from_date', '2023-01-01',
          '--to_date', '2023-01-02', '--lake', str(lake))
  return lake


def export(lake, dest, *flags, days=('--date', '2023-01-01'), check=True):
  return run_cli('pipelines.export_events', '--lake', str(lake), '--dest', str(dest), *days,
                 *CLEVERTAP, *flags, check=check)


def data_files(dest) -> dict[str, bytes]:
  """Every file in the prefix but export state, by name (the layout is flat: no folders)."""
  return {n: (dest / n).read_bytes() for n in sorted(os.listdir(dest)) if n != '_eventferry'}


def without_run_time(names) -> list[str]:
  """Names with the run's timestamp (YYYYMMDDHHMM, after the request id) as TS."""
  return sorted(re.sub(rf'^{REQ}-\d{{12}}-', f'{REQ}-TS-', n) for n in names)


@pytest.mark.parametrize('fmt', ['jsonl', 'csv'])
def test_clevertap_names_are_exact_and_files_read_back(lake, tmp_path, fmt):
  export(lake, tmp_path, '--format', fmt)
  files = data_files(tmp_path)
  assert without_run_time(files) == sorted([
      f'{REQ}-TS-purchase-20230101-00000-000-{DB}.{fmt}.gz',
      f'{REQ}-TS-signup-20230101-00000-000-{DB}.{fmt}.gz',
      '_SUCCESS-20230101', '_manifest-20230101.json'])
  run_times = {n.split('-')[1] for n in files if n.startswith(REQ)}
  assert len(run_times) == 1 and re.fullmatch(r'\d{12}', run_times.pop())
  by_event = {}
  for name, data in files.items():
    if name.startswith(REQ):
      text = gzip.decompress(data).decode()
      rows = ([json.loads(line) for line in text.splitlines()] if fmt == 'jsonl'
              else list(csv.DictReader(io.StringIO(text))))
      by_event[name.split('-')[2]] = sorted(r['insert_id'] for r in rows)
  assert by_event == {'purchase': [uuid(1), uuid(3)], 'signup': [uuid(2)]}
  manifest = json.loads(files['_manifest-20230101.json'])
  assert manifest['rows'] == 3
  assert sorted(f['name'] for f in manifest['files']) == sorted(n for n in files
                                                                if n.startswith(REQ))


def test_a_rerun_replaces_exactly_its_day_and_leaves_the_rest_of_the_prefix(lake, tmp_path):
  export(lake, tmp_path, '--format', 'jsonl', '--max_rows_per_file', '1',
         days=('--from_date', '2023-01-01', '--to_date', '2023-01-02'))
  # what else a customer's prefix may hold: their own file, another request's export of the day
  (tmp_path / 'notes.txt').write_text('keep me')
  other = tmp_path / f'999-202212310000-purchase-20230101-00000-000-{DB}.jsonl.gz'
  other.write_bytes(b'another request')
  before = data_files(tmp_path)
  day2 = {n: b for n, b in before.items() if '20230102' in n}
  assert without_run_time(day2) == sorted([f'{REQ}-TS-purchase-20230102-00000-000-{DB}.jsonl.gz',
                                           '_SUCCESS-20230102', '_manifest-20230102.json'])

  # cut differently: even within the same minute (same names) purchase's second file is stale
  export(lake, tmp_path, '--format', 'jsonl')
  after = data_files(tmp_path)
  assert {n: b for n, b in after.items() if '20230102' in n} == day2
  assert after['notes.txt'] == b'keep me' and after[other.name] == b'another request'
  day1 = sorted(n for n in after if n.startswith(REQ) and '-20230101-' in n)
  assert without_run_time(day1) == sorted([f'{REQ}-TS-purchase-20230101-00000-000-{DB}.jsonl.gz',
                                           f'{REQ}-TS-signup-20230101-00000-000-{DB}.jsonl.gz'])
  manifest = json.loads(after['_manifest-20230101.json'])
  assert sorted(f['name'] for f in manifest['files']) == day1 and manifest['rows'] == 3
  assert '_SUCCESS-20230101' in after
  assert set(after) - set(before) <= set(day1)   # nothing else appeared
  assert not os.path.exists(tmp_path / '_staging')


def test_hostile_event_names_stay_one_file_name_inside_the_prefix(tmp_path):
  bucket, lake, dest = tmp_path / 'bucket', tmp_path / 'lake', tmp_path / 'dest'
  names = ['../../escape', '/abs', '.hidden', '장바구니 담기', 'x' * 300, 'a-20230102-00000']
  write_file(str(bucket / 'dt=2023-01-01' / 'a.parquet'),
             table([event(i, event_key=k) for i, k in enumerate(names)]))
  fs.write_bytes(str(bucket / 'dt=2023-01-01' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--date', '2023-01-01',
          '--lake', str(lake))
  export(lake, dest, '--format', 'csv')
  files = [os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs
           if '_eventferry' not in d]
  exported = [f for f in files if f.startswith(REQ)]
  assert len(exported) == len(names) and len(files) == len(names) + 2
  assert all('/' not in f and f.endswith(f'-20230101-00000-000-{DB}.csv.gz') for f in exported)
  assert any('장바구니_담기' in f for f in exported)
  assert all(len(f.encode()) < 255 for f in exported)


@pytest.mark.parametrize('flags,message', [
    (['--database_id', DB], '--request_id'),
    (['--request_id', REQ], '--database_id'),
    (['--request_id', 'a/b', '--database_id', DB], "--request_id 'a/b'"),
    (['--request_id', REQ, '--database_id', '..'], "--database_id '..'"),
])
def test_clevertap_ids_are_required_and_checked(lake, tmp_path, flags, message):
  proc = run_cli('pipelines.export_events', '--lake', str(lake), '--dest', str(tmp_path),
                 '--date', '2023-01-01', '--layout', 'clevertap', *flags, check=False)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_spec_file_takes_the_clevertap_fields(lake, tmp_path):
  spec = tmp_path / 'ct.yaml'
  spec.write_text(f'lake: {lake}\ndest: {tmp_path / "dest"}\nformat: csv\nlayout: clevertap\n'
                  f'request_id: "{REQ}"\ndatabase_id: {DB}\nmax_file_bytes: 104857600\n')
  run_cli('pipelines.export_events', '--spec', str(spec), '--date', '2023-01-02')
  assert without_run_time(data_files(tmp_path / 'dest')) == sorted([
      f'{REQ}-TS-purchase-20230102-00000-000-{DB}.csv.gz', '_SUCCESS-20230102',
      '_manifest-20230102.json'])
  spec.write_text(f'lake: {lake}\ndest: x\nlayout: clevertap\nrequest_id: "a b"\n')
  proc = run_cli('pipelines.export_events', '--spec', str(spec), '--date', '2023-01-02',
                 check=False)
  assert proc.returncode == 2 and "field 'request_id'" in proc.stderr
