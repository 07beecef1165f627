"""End to end: the real export command, read back with DuckDB and pyarrow."""
import datetime
import decimal
import gzip
import json
import os

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import event, run_cli, table, uuid, write_file
from transforms.stores import fs

pytestmark = pytest.mark.engine

UTC = datetime.timezone.utc
# Seed 000's printed export schema, verbatim.
SEED_SCHEMA = """
 |-- server_dt: date (nullable = false)
 |-- ts: timestamp (nullable = false)
 |-- environment: string (nullable = false)
 |-- event_key: string (nullable = false)
 |-- identifiers: string (nullable = false)
 |-- insert_id: string (nullable = false)
 |-- metric_value: decimal(24,6) (nullable = false)
 |-- hackle_properties: string (nullable = false)
 |-- user_properties: string (nullable = false)
 |-- event_properties: string (nullable = false)
"""
SPARK_TYPES = {'date': 'date32[day]', 'timestamp': 'timestamp[ms, tz=UTC]', 'string': 'string',
               'decimal(24,6)': 'decimal128(24, 6)'}
AWKWARD = 'a|b,"q"\nline <&> 레저'


@pytest.fixture(scope='module')
def lake(tmp_path_factory):
  """A committed lake with 2023-01-01 (three events, one awkward) and an empty 2023-01-02."""
  root = tmp_path_factory.mktemp('e')
  bucket, lake = root / 'bucket', root / 'lake'
  rows = [event(1, metric_value=decimal.Decimal('123456789012345678.123456'),
                event_properties=[('Note', AWKWARD)], event_key='purchase'),
          event(2, event_key='signup'), event(3, event_key='purchase')]
  write_file(str(bucket / 'dt=2023-01-01' / 'a.parquet'), table(rows))
  fs.write_bytes(str(bucket / 'dt=2023-01-01' / '_SUCCESS'), b'')
  fs.write_bytes(str(bucket / 'dt=2023-01-02' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--from_date', '2023-01-01',
          '--to_date', '2023-01-02', '--lake', str(lake))
  return lake


def export(lake, dest, *flags, date=('--date', '2023-01-01'), check=True):
  return run_cli('pipelines.export_events', '--lake', str(lake), '--dest', str(dest), *date,
                 *flags, check=check)


def only_file(dest, suffix):
  day = os.path.join(dest, 'dt=2023-01-01')
  names = [n for n in os.listdir(day) if n.endswith(suffix)]
  assert len(names) == 1, os.listdir(day)
  return os.path.join(day, names[0])


def test_parquet_schema_is_the_seeds_field_by_field(lake, tmp_path):
  export(lake, tmp_path)
  schema = pq.read_schema(only_file(tmp_path, '.parquet'))
  expected = [line.split('|-- ')[1] for line in SEED_SCHEMA.strip().splitlines()]
  got = [f'{f.name}: {next(k for k, v in SPARK_TYPES.items() if v == str(f.type))} '
         f'(nullable = {str(f.nullable).lower()})' for f in schema]
  assert got == expected


def test_parquet_values_are_exact(lake, tmp_path):
  export(lake, tmp_path)
  rows = duckdb.connect().execute(
      f"select insert_id, server_dt, ts, metric_value, event_properties, identifiers, "
      f"hackle_properties from read_parquet('{only_file(tmp_path, '.parquet')}') "
      f"order by insert_id").fetchall()
  assert [r[0] for r in rows] == [uuid(1), uuid(2), uuid(3)]
  first = rows[0]
  assert first[1] == datetime.date(2023, 1, 1)
  assert first[3] == decimal.Decimal('123456789012345678.123456')
  assert json.loads(first[4]) == {'note': AWKWARD}
  assert json.loads(first[5]) == {'id': 'user-1', 'device_id': 'DEV-1'}
  assert json.loads(first[6]) == {'osname': 'Android', 'appversion': '6.9.0'}


@pytest.mark.parametrize('compression', ['none', 'gzip'])
def test_json_lines_round_trip(lake, tmp_path, compression):
  export(lake, tmp_path, '--format', 'jsonl', '--compression', compression)
  path = only_file(tmp_path, '.jsonl.gz' if compression == 'gzip' else '.jsonl')
  raw = open(path, 'rb').read()
  text = gzip.decompress(raw) if compression == 'gzip' else raw
  rows = [json.loads(line) for line in text.decode().splitlines()]
  first = next(r for r in rows if r['insert_id'] == uuid(1))
  assert first['metric_value'] == '123456789012345678.123456'
  assert first['ts'] == '2023-01-01T00:01:03.333Z'
  assert first['event_properties'] == {'note': AWKWARD}
  count = duckdb.connect().execute(f"select count(*) from read_json('{path}')").fetchone()[0]
  assert count == 3


@pytest.mark.parametrize('delimiter,header', [(',', 'true'), ('|', 'false')])
def test_csv_round_trip(lake, tmp_path, delimiter, header):
  export(lake, tmp_path, '--format', 'csv', '--compression', 'gzip', '--csv_delimiter', delimiter,
         '--csv_header', header)
  path = only_file(tmp_path, '.csv.gz')
  rows = duckdb.connect().execute(
      f"select * from read_csv('{path}', delim='{delimiter}', header={header}, quote='\"', "
      f"escape='\"', all_varchar=true) order by 6").fetchall()
  assert len(rows) == 3
  first = rows[0]
  assert first[5] == uuid(1) and first[6] == '123456789012345678.123456'
  assert json.loads(first[9]) == {'note': AWKWARD}
  assert first[1] == '2023-01-01T00:01:03.333Z'


def test_events_filter_rerun_and_no_stale_files(lake, tmp_path):
  export(lake, tmp_path, '--format', 'csv')
  export(lake, tmp_path, '--events', 'signup')
  day = tmp_path / 'dt=2023-01-01'
  assert sorted(os.listdir(day)) == ['_SUCCESS', '_manifest.json', 'part-00000-of-00001.parquet']
  assert pq.read_table(day / 'part-00000-of-00001.parquet')['event_key'].to_pylist() == ['signup']
  manifest = json.loads((day / '_manifest.json').read_text())
  assert manifest['rows'] == 1 and manifest['files'][0]['sha256']
  assert not os.path.exists(tmp_path / '_staging')


def test_a_day_without_events_gets_an_empty_manifest_and_success(lake, tmp_path):
  export(lake, tmp_path, date=('--date', '2023-01-02'))
  day = tmp_path / 'dt=2023-01-02'
  assert sorted(os.listdir(day)) == ['_SUCCESS', '_manifest.json']
  assert json.loads((day / '_manifest.json').read_text())['rows'] == 0


def test_an_uncommitted_lake_day_is_refused(lake, tmp_path):
  proc = export(lake, tmp_path, date=('--date', '2022-12-31'), check=False)
  assert proc.returncode == 3 and 'not a committed lake day' in proc.stderr


@pytest.mark.parametrize('flags,message', [
    (['--format', 'xlsx'], '--format'),
    (['--format', 'csv', '--compression', 'zstd'], '--compression'),
    (['--events', 'a', '--exclude_events', 'b'], '--events or --exclude_events'),
    (['--max_range_days', '1', '--from_date', '2023-01-01', '--to_date', '2023-01-02'],
     '--max_range_days 1'),
    (['--layout', 'adobe', '--from_date', '2023-01-01', '--to_date', '2023-01-02'], '--layout adobe puts a run'),
    (['--max_rows_per_file', '0'], '--max_rows_per_file'),
])
def test_wrong_export_flags_name_the_flag(lake, tmp_path, flags, message):
  dated = any(f.startswith('--from_date') for f in flags)
  proc = export(lake, tmp_path, *flags, check=False, **({'date': ()} if dated else {}))
  assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.parametrize('compression', ['null', 'deflate'])
def test_avro_round_trip(lake, tmp_path, compression):
  import fastavro
  export(lake, tmp_path, '--format', 'avro', '--compression', compression)
  with open(only_file(tmp_path, '.avro'), 'rb') as f:
    rows = {r['insert_id']: r for r in fastavro.reader(f)}
  first = rows[uuid(1)]
  assert first['metric_value'] == decimal.Decimal('123456789012345678.123456')
  assert first['ts'] == datetime.datetime(2023, 1, 1, 0, 1, 3, 333000, tzinfo=UTC)
  assert first['server_dt'] == datetime.date(2023, 1, 1)
  assert json.loads(first['event_properties']) == {'note': AWKWARD}


def test_xml_round_trip_with_the_standard_library(lake, tmp_path):
  import xml.etree.ElementTree as ET
  export(lake, tmp_path, '--format', 'xml', '--compression', 'gzip')
  root = ET.fromstring(gzip.decompress(open(only_file(tmp_path, '.xml.gz'), 'rb').read()))
  events = {e.findtext('insert_id'): e for e in root.iter('Event')}
  assert len(events) == 3
  first = events[uuid(1)]
  assert first.findtext('metric_value') == '123456789012345678.123456'
  assert first.findtext('ts') == '2023-01-01T00:01:03.333Z'
  props = {e.findtext('key'): e.findtext('value') for e in first.find('event_properties')}
  assert props == {'note': AWKWARD}


def test_hourly_and_event_name_layouts(lake, tmp_path):
  export(lake, tmp_path / 'h', '--layout', 'hourly')
  day = tmp_path / 'h' / 'dt=2023-01-01'
  assert sorted(os.listdir(day)) == ['_SUCCESS', '_manifest.json', 'hr=00']
  export(lake, tmp_path / 'e', '--file_template', '{event}-{yyyymmdd}-{index}.{ext}',
         '--format', 'csv', '--compression', 'gzip')
  names = sorted(os.listdir(tmp_path / 'e' / 'dt=2023-01-01'))
  assert names == ['_SUCCESS', '_manifest.json', 'purchase-20230101-00000.csv.gz',
                   'signup-20230101-00000.csv.gz']


def test_adobe_layout_and_hostile_event_names_stay_inside_dest(tmp_path):
  bucket, lake, dest = tmp_path / 'bucket', tmp_path / 'lake', tmp_path / 'dest'
  names = ['../../escape', '/abs', '.hidden', '장바구니 담기', 'x' * 300]
  write_file(str(bucket / 'dt=2023-01-01' / 'a.parquet'),
             table([event(i, event_key=k) for i, k in enumerate(names)]))
  fs.write_bytes(str(bucket / 'dt=2023-01-01' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--date', '2023-01-01',
          '--lake', str(lake))
  export(lake, dest, '--layout', 'adobe', '--dataset_id', 'ds/../1',
         '--file_template', '{event}/{run_id}-{index}.{ext}')
  files = [os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs
           if '_eventferry' not in d]   # export state (history, locks) lives beside the data
  assert len(files) == len(names) + 2
  assert all(not f.startswith('..') and os.path.realpath(dest / f).startswith(str(dest))
             for f in files)
  folders = {f.split('/')[0] for f in files}
  assert len(folders) == 1 and folders.pop().startswith('ds____1-')


def test_spec_file_configures_the_export_and_flags_override_it(lake, tmp_path):
  spec = tmp_path / 'acme.yaml'
  spec.write_text(f'lake: {lake}\ndest: {tmp_path / "dest"}\nformat: csv\ncompression: gzip\n'
                  f'events: [purchase]\n')
  run_cli('pipelines.export_events', '--spec', str(spec), '--date', '2023-01-01',
          '--format', 'jsonl')   # the flag wins over the spec's csv
  day = tmp_path / 'dest' / 'dt=2023-01-01'
  text = gzip.decompress((day / 'part-00000-of-00001.jsonl.gz').read_bytes()).decode()
  assert sorted(json.loads(line)['insert_id'] for line in text.splitlines()) == [uuid(1), uuid(3)]


def test_a_bad_spec_names_each_field_and_the_fix(tmp_path):
  spec = tmp_path / 'bad.yaml'
  spec.write_text('lake: x\ndest: y\nformat: xlsx\nbogus: 1\n')
  proc = run_cli('pipelines.export_events', '--spec', str(spec), '--date', '2023-01-01',
                 check=False)
  assert proc.returncode == 2
  assert "field 'format'" in proc.stderr and "field 'bogus'" in proc.stderr
  assert 'Fix the file' in proc.stderr


def test_since_last_export_sends_only_days_recommitted_after_their_export(tmp_path):
  bucket, lake, dest = tmp_path / 'bucket', tmp_path / 'lake', tmp_path / 'dest'
  for dt, n in (('2023-01-01', 1), ('2023-01-02', 2)):
    write_file(str(bucket / f'dt={dt}' / 'a.parquet'), table([event(n)]))
    fs.write_bytes(str(bucket / f'dt={dt}' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--from_date', '2023-01-01',
          '--to_date', '2023-01-02', '--lake', str(lake))
  first = export(lake, dest, '--since_last_export', date=())
  assert '2023-01-01' in first.stdout and '2023-01-02' in first.stdout
  assert 'nothing to export' in export(lake, dest, '--since_last_export', date=()).stdout
  write_file(str(bucket / 'dt=2023-01-02' / 'b.parquet'), table([event(9)]))
  run_cli('pipelines.import_events', '--source', str(bucket), '--date', '2023-01-02',
          '--lake', str(lake))
  third = export(lake, dest, '--since_last_export', date=())
  assert '2023-01-02' in third.stdout and '2023-01-01' not in third.stdout
  assert pq.read_table(str(dest / 'dt=2023-01-02')).num_rows == 2
  history = json.loads((dest / '_eventferry' / 'export_history.json').read_text())
  assert set(history) == {'2023-01-01', '2023-01-02'}
  assert not os.listdir(dest / '_eventferry' / 'locks')


def test_a_second_export_of_the_same_day_refuses_while_the_first_holds_the_lock(lake, tmp_path):
  from transforms.lake import locks
  held = locks.acquire(str(tmp_path), 'dt=2023-01-01', 'first-run', 'export of dt=2023-01-01')
  proc = export(lake, tmp_path, check=False)
  assert proc.returncode == 4
  assert 'another export of dt=2023-01-01 to this destination' in proc.stderr
  assert 'first-run' in proc.stderr
  assert not os.path.exists(tmp_path / 'dt=2023-01-01')
  locks.release([held])
  export(lake, tmp_path)
  assert os.path.exists(tmp_path / 'dt=2023-01-01' / '_SUCCESS')


def test_files_are_chunked_by_rows_and_by_bytes(lake, tmp_path):
  export(lake, tmp_path / 'rows', '--max_rows_per_file', '2', '--format', 'jsonl')
  day = tmp_path / 'rows' / 'dt=2023-01-01'
  parts = sorted(n for n in os.listdir(day) if n.startswith('part-'))
  assert parts == ['part-00000-000-of-00001.jsonl', 'part-00000-001-of-00001.jsonl']
  assert [len(open(day / n).read().splitlines()) for n in parts] == [2, 1]
  export(lake, tmp_path / 'bytes', '--max_file_bytes', '700', '--format', 'csv')
  day = tmp_path / 'bytes' / 'dt=2023-01-01'
  sizes = [os.path.getsize(day / n) for n in os.listdir(day) if n.startswith('part-')]
  assert len(sizes) >= 2 and max(sizes) <= 700
  manifest = json.loads((day / '_manifest.json').read_text())
  assert manifest['rows'] == 3 and len(manifest['files']) == len(sizes)


def test_profiles_are_the_latest_properties_per_user_as_of_the_date(tmp_path):
  bucket, lake, dest = tmp_path / 'bucket', tmp_path / 'lake', tmp_path / 'dest'
  t1 = datetime.datetime(2023, 1, 1, 10, tzinfo=UTC)
  days = {'2023-01-01': [event(1, identifiers=[('id', 'd1'), ('device_id', 'x'), ('user_id', 'u1')],
                               user_properties=[('grade', 'SILVER')], ts=t1),
                         event(2, identifiers=[('id', 'anon'), ('device_id', 'y')],
                               user_properties=[('grade', 'NONE')], ts=t1)],
          '2023-01-02': [event(3, identifiers=[('id', 'd2'), ('device_id', 'x'), ('user_id', 'u1')],
                               user_properties=[('grade', 'GOLD')],
                               ts=t1 + datetime.timedelta(days=1))]}
  for dt, rows in days.items():
    write_file(str(bucket / f'dt={dt}' / 'a.parquet'), table(rows))
    fs.write_bytes(str(bucket / f'dt={dt}' / '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--from_date', '2023-01-01',
          '--to_date', '2023-01-02', '--lake', str(lake))
  for as_of, grade in (('2023-01-01', 'SILVER'), ('2023-01-02', 'GOLD')):
    export(lake, dest, '--kind', 'profiles', date=('--date', as_of))
    rows = {r['user_key']: r for r in pq.read_table(str(dest / f'dt={as_of}')).to_pylist()}
    assert set(rows) == {'u1', 'anon'}
    assert json.loads(rows['u1']['user_properties']) == {'grade': grade}
    assert rows['anon']['user_id'] == '' and rows['anon']['id'] == 'anon'
