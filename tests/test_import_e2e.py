"""End to end: the real import command, read back with independent readers (pyarrow, DuckDB)."""
import datetime
import decimal
import json
import os

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipelines import samples
from tests.conftest import SCHEMA, event, run_cli, table, uuid, write_file
from transforms.stores import fs

pytestmark = pytest.mark.engine

UTC = datetime.timezone.utc


def customer_day(bucket, rows, name='000000000000.parquet', success=True, schema=SCHEMA, **kw):
  directory = os.path.join(bucket, 'dt=2023-01-01')
  write_file(os.path.join(directory, name), table(rows, schema), **kw)
  if success:
    fs.write_bytes(os.path.join(directory, '_SUCCESS'), b'')
  return directory


def import_day(bucket, lake, *extra, check=True):
  return run_cli('pipelines.import_events', '--source', str(bucket), '--date', '2023-01-01',
                 '--lake', str(lake), *extra, check=check)


def lake_rows(lake):
  return ds.dataset(str(lake), partitioning='hive').to_table().sort_by('insert_id').to_pylist()


def test_exact_values_survive_and_duplicates_and_rejects_are_accounted(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  rows = [
      event(1, metric_value=decimal.Decimal('123456789012345678.123456'),
            ts=datetime.datetime(2023, 1, 1, 23, 59, 59, 999000, tzinfo=UTC),
            event_properties=[('Product_Category', '레저 & <스포츠>'), ('note', 'a,b "q"\nline')]),
      event(2, insert_id=uuid(2).upper()),
      event(2, ts=datetime.datetime(2023, 1, 1, 0, 0, tzinfo=UTC), event_key='earliest'),
      event(3, insert_id='nope'),
  ]
  customer_day(bucket, rows)
  out = import_day(bucket, lake, '--max_rejected_ratio', '0.5', '--report', str(tmp_path / 'r.json'))
  got = lake_rows(lake)
  assert [r['insert_id'] for r in got] == [uuid(1), uuid(2)]
  assert got[0]['metric_value'] == decimal.Decimal('123456789012345678.123456')
  assert got[0]['ts'] == datetime.datetime(2023, 1, 1, 23, 59, 59, 999000, tzinfo=UTC)
  assert dict(got[0]['event_properties']) == {'product_category': '레저 & <스포츠>',
                                             'note': 'a,b "q"\nline'}
  assert got[1]['event_key'] == 'earliest'
  assert got[0]['dt'] == '2023-01-01' and got[0]['environment'] == 'production'

  report = json.loads((tmp_path / 'r.json').read_text())
  day = report['days'][0]
  assert (day['rows_in'], day['rows_written'], day['rows_rejected'], day['rows_duplicate']) == (4, 2, 1, 1)
  assert day['rows_in'] == day['rows_written'] + day['rows_rejected'] + day['rows_duplicate']
  assert report['metrics']['eventferry.read.rows_in'] == 4
  assert report['metrics']['eventferry.dedupe.rows_duplicate'] == 1
  assert '2023-01-01 published' in out.stdout

  con = duckdb.connect()
  rejected = con.execute(
      f"select reason, source_file, source_row, original from "
      f"read_parquet('{lake}/_rejected/dt=2023-01-01/*.parquet')").fetchall()
  assert [(r[0], os.path.basename(r[1]), r[2]) for r in rejected] == [
      ('invalid_insert_id', '000000000000.parquet', 3)]
  assert json.loads(rejected[0][3])['insert_id'] == 'nope'
  total, metric = con.execute(
      f"select count(*), sum(metric_value) from read_parquet('{lake}/dt=*/*.parquet', "
      f"hive_partitioning=true) where dt = '2023-01-01'").fetchone()
  assert total == 2 and metric == decimal.Decimal('123456789012345679.623456')
  manifest = json.loads((lake / 'dt=2023-01-01' / '_manifest.json').read_text())
  assert manifest['rows'] == 2 and manifest['schema_fingerprint'].startswith('sha256:')


def test_rerun_replaces_the_day_exactly_and_byte_identically(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  day = datetime.date(2023, 1, 1)
  samples.write_day(str(bucket), day, samples.events(day, 3000, seed=3), files=3)
  import_day(bucket, lake, '--shards', '4')
  first = {n: (lake / 'dt=2023-01-01' / n).read_bytes()
           for n in os.listdir(lake / 'dt=2023-01-01') if n.startswith('part-')}
  assert len(first) == 4
  import_day(bucket, lake, '--shards', '4')
  again = {n: (lake / 'dt=2023-01-01' / n).read_bytes() for n in first}
  assert again == first
  import_day(bucket, lake, '--shards', '2')
  names = sorted(os.listdir(lake / 'dt=2023-01-01'))
  assert names == ['_SUCCESS', '_manifest.json', 'part-00000-of-00002.parquet',
                   'part-00001-of-00002.parquet']
  rows = lake_rows(lake)
  assert len(rows) == len({r['insert_id'] for r in rows})
  assert not os.path.exists(lake / '_staging')


def test_spark_and_bigquery_files_read_the_same_as_pyarrow(tmp_path):
  day = datetime.date(2023, 1, 1)
  events = samples.events(day, 2000, seed=5)
  results = {}
  for writer in ('pyarrow', 'spark', 'bigquery'):
    bucket, lake = tmp_path / writer / 'bucket', tmp_path / writer / 'lake'
    samples.write_day(str(bucket), day, events, files=2, writer=writer)
    import_day(bucket, lake)
    results[writer] = ds.dataset(str(lake), partitioning='hive').to_table().sort_by('insert_id')
  assert results['spark'].equals(results['pyarrow'])
  assert results['bigquery'].equals(results['pyarrow'])


def test_a_day_without_success_is_not_read(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  customer_day(bucket, [event(1)], success=False)
  proc = import_day(bucket, lake, check=False)
  assert proc.returncode == 3
  assert '_SUCCESS does not exist' in proc.stderr and '--wait_for_success' in proc.stderr
  assert not os.path.exists(lake / 'dt=2023-01-01')


def test_quality_gate_refuses_the_day_but_keeps_the_rejects(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  customer_day(bucket, [event(1), event(2, event_key='')])
  proc = import_day(bucket, lake, check=False)
  assert proc.returncode == 1
  assert 'refused' in proc.stdout and '--max_rejected_ratio' in proc.stdout
  assert not os.path.exists(lake / 'dt=2023-01-01' / '_SUCCESS')
  assert os.path.exists(lake / '_rejected' / 'dt=2023-01-01' / '_SUCCESS')


def test_a_file_that_is_not_the_contract_stops_the_run_naming_it(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  bad = SCHEMA.set(0, pa.field('ts', pa.float64()))   # int64 is epoch millis, float is not
  customer_day(bucket, [event(1, ts=5.5)], name='bad.parquet', schema=bad)
  proc = import_day(bucket, lake, check=False)
  assert proc.returncode == 3
  assert 'bad.parquet' in proc.stderr and "column 'ts' is double" in proc.stderr


def test_lookback_drops_ids_already_in_earlier_days(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  prev = os.path.join(bucket, 'dt=2022-12-31')
  write_file(os.path.join(prev, 'a.parquet'), table([event(1), event(2)]))
  fs.write_bytes(os.path.join(prev, '_SUCCESS'), b'')
  run_cli('pipelines.import_events', '--source', str(bucket), '--date', '2022-12-31',
          '--lake', str(lake))
  customer_day(bucket, [event(2), event(3)])
  import_day(bucket, lake, '--dedupe_lookback_days', '1')
  day = ds.dataset(str(lake / 'dt=2023-01-01')).to_table()
  assert day['insert_id'].to_pylist() == [uuid(3)]


@pytest.mark.parametrize('args,message', [
    (['--lake', 'x', '--date', '2023-01-01'], '--source is required'),
    (['--source', 's', '--lake', 'x', '--date', '2023-13-01'], '--date'),
    (['--source', 's', '--lake', 'x', '--from_date', '2023-01-02'], '--to_date go together'),
    (['--source', 's', '--lake', 'x', '--shards', '0'], '--shards 0'),
    (['--source', 's', '--lake', 'x', '--sourec', 'y'], 'unknown flag --sourec'),
    (['--source', 's', '--lake', 'x', '--wait_for_success', 'soon'], '--wait_for_success'),
    (['--source', 's', '--lake', 'x', '--timezone', 'Mars/Base'], '--timezone'),
])
def test_wrong_flags_fail_before_the_pipeline_naming_the_flag(args, message):
  proc = run_cli('pipelines.import_events', *args, check=False)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_help_lists_every_flag():
  out = run_cli('pipelines.import_events', '--help').stdout
  for flag in ('--source', '--lake', '--date', '--from_date', '--to_date', '--timezone',
               '--shards', '--dedupe_lookback_days', '--wait_for_success', '--max_rejected_ratio'):
    assert flag in out


def test_a_complete_day_without_data_is_published_empty(tmp_path):
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  fs.write_bytes(str(bucket / 'dt=2023-01-01' / '_SUCCESS'), b'')
  out = import_day(bucket, lake)
  assert '2023-01-01 published' in out.stdout
  manifest = json.loads((lake / 'dt=2023-01-01' / '_manifest.json').read_text())
  assert manifest['rows'] == 0 and [f['name'] for f in manifest['files']] == [
      'part-00000-of-00001.parquet']
  assert ds.dataset(str(lake / 'dt=2023-01-01')).to_table().num_rows == 0


def test_a_second_import_of_the_same_day_refuses_while_the_first_holds_the_lock(tmp_path):
  from transforms.lake import locks
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  customer_day(bucket, [event(1)])
  held = locks.acquire(str(lake), 'dt=2023-01-01', 'first-run', 'import of dt=2023-01-01')
  proc = import_day(bucket, lake, check=False)
  assert proc.returncode == 4
  assert 'another import of dt=2023-01-01' in proc.stderr and 'first-run' in proc.stderr
  assert not os.path.exists(lake / 'dt=2023-01-01')
  locks.release([held])
  import_day(bucket, lake)
  assert lake_rows(lake)[0]['insert_id'] == uuid(1)
