"""The lake as an Iceberg table (--lake_format iceberg): for a day written by real writers
(pyarrow, pandas, Polars, DuckDB), the Iceberg lake holds exactly the rows the Hive lake holds,
read by readers that are not the project's code: pyiceberg's scan, Polars' scan_iceberg,
DuckDB's iceberg extension (DuckDB 1.5.5 with duckdb-extension-{avro,httpfs,iceberg} 1.5.5 in a
venv of its own under .tools/: the project venv's duckdb 2.0 cannot download extensions here)
and Spark 4.1.1 with iceberg-spark-runtime-4.1_2.13 1.12.0 (also its own venv under .tools/).
The Hive lake is read by DuckDB's read_parquet. Catalogs SQLite and PostgreSQL, warehouses local
disk and S3 (moto); Glue through moto with an S3 warehouse. Commits: a rerun replaces the day,
days committed at once all land, the same day twice refuses one with exit 4, a SIGKILL before
the commit leaves the previous snapshot. Export from the Iceberg lake writes the Hive lake's files.
"""
import datetime
import decimal
import json
import os
import signal
import subprocess
import sys
import threading
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import import_events, options
from tests import servers
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.engine

UTC = datetime.timezone.utc
D = decimal.Decimal
MAP = pa.map_(pa.string(), pa.string())
DAY1, DAY2 = '2023-03-01', '2023-03-02'
PG_USER, PG_PASSWORD = 'ferry', 'pg-SECRET-3a91c0e2'


# ---- a day written by real writers -------------------------------------------------------------

def _row(day: str, n: int, **over) -> dict:
  start = datetime.datetime.fromisoformat(day).replace(tzinfo=UTC)
  row = {'ts': start + datetime.timedelta(seconds=n, microseconds=123_456),
         'event_key': f'Event {n}', 'identifiers': {'Id': f'user-{n}', 'Device_ID': f'D-{n}'},
         'insert_id': f'00000000-0000-4000-8000-{n:012x}', 'metric_value': (D(n) / 7).quantize(D('1e-10')),
         'user_properties': {'Grade': 'GOLD'} if n % 3 else {},
         'event_properties': {'n': str(n), 'nothing': None},
         'platform_properties': {'OSName': 'Android', 'AppVersion': '6.9.0'}}
  row.update(over)
  return row


def _table(rows: list[dict]) -> pa.Table:
  return pa.table({
      'ts': pa.array([r['ts'] for r in rows], pa.timestamp('us', tz='UTC')),
      'event_key': [r['event_key'] for r in rows], 'insert_id': [r['insert_id'] for r in rows],
      'metric_value': pa.array([r['metric_value'] for r in rows], pa.decimal128(30, 10)),
      **{c: pa.array([list(r[c].items()) for r in rows], MAP)
         for c in ('identifiers', 'user_properties', 'event_properties', 'platform_properties')}})


def write_day(source: str, day: str, first: int, count: int) -> None:
  """Rows first..first+count-1 of `day`, a quarter each by pyarrow, pandas, Polars and DuckDB;
  each writer also repeats a row of the one before it (later ts: the duplicate loses)."""
  folder = os.path.join(source, f'dt={day}')
  os.makedirs(folder, exist_ok=True)
  quarters = [list(range(first + i, first + count, 4)) for i in range(4)]
  tables = []
  for i, numbers in enumerate(quarters):
    rows = [_row(day, n) for n in numbers]
    if i:
      rows.append(_row(day, quarters[i - 1][0], event_key='duplicate',
                       ts=_row(day, quarters[i - 1][0])['ts'] + datetime.timedelta(hours=1)))
    tables.append(_table(rows))
  pq.write_table(tables[0], os.path.join(folder, 'pyarrow.parquet'))
  tables[1].to_pandas(types_mapper=pd_types()).to_parquet(os.path.join(folder, 'pandas.parquet'),
                                                          index=False)
  import polars as pl
  pl.from_arrow(tables[2]).write_parquet(os.path.join(folder, 'polars.parquet'))
  con = duckdb.connect()
  con.register('t', tables[3])
  con.execute(f"copy t to '{os.path.join(folder, 'duckdb.parquet')}' (format parquet)")
  open(os.path.join(folder, '_SUCCESS'), 'wb').close()


def pd_types():
  import pandas as pd
  return pd.ArrowDtype


# ---- independent readers ------------------------------------------------------------------------

def _key(insert_id, ts_ms, event_key, identifiers, metric, user, event, platform, dt) -> tuple:
  def m(v):
    return tuple(sorted(dict(v).items())) if not isinstance(v, dict) else tuple(sorted(v.items()))
  return (insert_id, int(ts_ms), event_key, m(identifiers), D(str(metric)), m(user), m(event),
          m(platform), str(dt))


def hive_rows(lake: str, days: list[str]) -> set[tuple]:
  con = duckdb.connect()
  rows = set()
  for day in days:
    rows |= {_key(*r, day) for r in con.execute(
        f"select insert_id, epoch_ms(ts), event_key, identifiers, metric_value, user_properties, "
        f"event_properties, platform_properties from read_parquet('{lake}/dt={day}/*.parquet')"
    ).fetchall()}
  return rows


def pyiceberg_rows(tbl) -> set[tuple]:
  t = tbl.scan().to_arrow()
  ms = t.column('ts').cast(pa.int64()).to_pylist()
  return {_key(r['insert_id'], us // 1000, r['event_key'], r['identifiers'], r['metric_value'],
               r['user_properties'], r['event_properties'], r['platform_properties'], r['dt'])
          for r, us in zip(t.to_pylist(), ms)}


def polars_rows(tbl, s3: list[str] | None = None) -> set[tuple]:
  import polars as pl   # Polars 2 reads Iceberg maps as its Map type: dicts
  os.environ.setdefault('POLARS_ICEBERG_PLANNER', 'pyiceberg')
  storage = None
  if s3:
    storage = {'aws_access_key_id': s3[0], 'aws_secret_access_key': s3[1],
               'aws_endpoint_url': f'http://{s3[2]}', 'aws_region': 'us-east-1',
               'aws_allow_http': 'true'}
  frame = pl.scan_iceberg(tbl, storage_options=storage).collect()
  frame = frame.with_columns(pl.col('ts').dt.epoch('ms').alias('ms'))
  return {_key(r['insert_id'], r['ms'], r['event_key'], r['identifiers'], r['metric_value'],
               r['user_properties'], r['event_properties'], r['platform_properties'], r['dt'])
          for r in frame.iter_rows(named=True)}


DUCKDB_ICEBERG = os.path.join(ROOT, '.tools', 'duckdb-iceberg-1.5.5')
DUCKDB_READER = r'''
import duckdb, importlib, json, os, sys
con = duckdb.connect()
for ext in ('avro', 'httpfs', 'iceberg'):
  folder = os.path.dirname(importlib.import_module(f'duckdb_extension_{ext}').__file__)
  con.execute(f"LOAD '{folder}/extensions/v{duckdb.__version__}/{ext}.duckdb_extension'")
metadata, s3 = sys.argv[1], json.loads(sys.argv[2])
if s3:
  key, secret, endpoint = s3
  con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{key}', SECRET '{secret}', ENDPOINT '{endpoint}', "
              "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')")
maps = ('identifiers', 'user_properties', 'event_properties', 'platform_properties')
rows = con.execute(
    "select insert_id, epoch_ms(ts), event_key, metric_value::varchar, dt::varchar, "
    + ', '.join(f'map_entries({m})' for m in maps) + f" from iceberg_scan('{metadata}')").fetchall()
out = [[r[0], r[1], r[2], r[3], r[4]] + [[[e['key'], e['value']] for e in m] for m in r[5:]]
       for r in rows]
print(json.dumps(out))
'''


@pytest.fixture(scope='session')
def duckdb_iceberg() -> str:
  """The python of a venv with DuckDB 1.5.5 and its iceberg extension (made once, under .tools/)."""
  python = os.path.join(DUCKDB_ICEBERG, 'bin', 'python')
  if not os.path.exists(python):
    try:
      subprocess.run([sys.executable, '-m', 'venv', DUCKDB_ICEBERG], check=True, capture_output=True)
      subprocess.run([python, '-m', 'pip', 'install', '-q', 'duckdb==1.5.5', 'pytz',
                      *(f'duckdb-extension-{e}==1.5.5' for e in ('avro', 'httpfs', 'iceberg'))],
                     check=True, capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
      pytest.skip(f'no DuckDB iceberg extension: {e}')
  return python


def duckdb_rows(python: str, tbl, s3: list[str] | None = None) -> set[tuple]:
  out = subprocess.run([python, '-c', DUCKDB_READER, tbl.metadata_location, json.dumps(s3 or [])],
                       check=True, capture_output=True, text=True, timeout=300).stdout
  return {_key(i, ms, key, ids, metric, user, event, platform, dt)
          for i, ms, key, metric, dt, ids, user, event, platform in json.loads(out)}


SPARK_VENV = os.path.join(ROOT, '.tools', 'pyspark-4.1.1')
SPARK_RUNTIME = 'org.apache.iceberg:iceberg-spark-runtime-4.1_2.13:1.12.0'
SPARK_READER = r'''
import json, sys
from pyspark.sql import SparkSession
jar, metadata = sys.argv[1:]
spark = (SparkSession.builder.master('local[1]').config('spark.jars', jar)
         .config('spark.ui.enabled', 'false').config('spark.driver.host', '127.0.0.1')
         .config('spark.driver.bindAddress', '127.0.0.1')
         .config('spark.sql.session.timeZone', 'UTC').getOrCreate())
spark.read.format('iceberg').load(metadata).createOrReplaceTempView('lake')
maps = ('identifiers', 'user_properties', 'event_properties', 'platform_properties')
rows = spark.sql('select insert_id, unix_millis(ts), event_key, cast(metric_value as string), '
                 'cast(dt as string), ' + ', '.join(f'map_entries({m})' for m in maps)
                 + ' from lake').collect()
print(json.dumps([list(r[:5]) + [[[e[0], e[1]] for e in m] for m in r[5:]] for r in rows]))
'''


@pytest.fixture(scope='session')
def spark_iceberg() -> tuple[str, str]:
  """(python, jar): pyspark 4.1.1 in a venv of its own under .tools/ and Iceberg's Spark 4.1
  runtime from Maven Central (pyspark 4.3.0, the project's, fails with every Iceberg runtime
  published: docs/iceberg.md)."""
  import shutil
  python = os.path.join(SPARK_VENV, 'bin', 'python')
  jars = os.path.join(ROOT, '.tools', 'jars')
  jar = os.path.join(jars, 'iceberg-spark-runtime-4.1_2.13-1.12.0.jar')
  if shutil.which('java') is None or shutil.which('mvn') is None:
    pytest.skip('Spark needs Java (17) and mvn on PATH')
  try:
    if not os.path.exists(jar):
      subprocess.run(['mvn', '-q', 'dependency:copy', f'-Dartifact={SPARK_RUNTIME}',
                      f'-DoutputDirectory={jars}'], check=True, capture_output=True, timeout=600)
    if not os.path.exists(python):
      subprocess.run([sys.executable, '-m', 'venv', SPARK_VENV], check=True, capture_output=True)
      subprocess.run([python, '-m', 'pip', 'install', '-q', 'pyspark==4.1.1'], check=True,
                     capture_output=True, timeout=1200)
  except (subprocess.SubprocessError, OSError) as e:
    pytest.skip(f'no Spark with Iceberg: {e}')
  return python, jar


def spark_rows(spark: tuple[str, str], tbl) -> set[tuple]:
  python, jar = spark
  out = subprocess.run([python, '-c', SPARK_READER, jar, tbl.metadata_location], check=True,
                       capture_output=True, text=True, timeout=600).stdout
  return {_key(i, ms, key, ids, metric, user, event, platform, dt)
          for i, ms, key, metric, dt, ids, user, event, platform in json.loads(out.splitlines()[-1])}


# ---- catalogs and warehouses --------------------------------------------------------------------

@pytest.fixture(scope='session')
def postgres(servers_dir):
  server = servers.postgres(servers_dir, PG_USER, PG_PASSWORD)
  yield f'postgresql://{PG_USER}:{PG_PASSWORD}@{servers.HOST}:{server.port}/{PG_USER}'
  server.stop()


def _catalog(kind: str, tmp_path, request) -> list[str]:
  """The flags of a catalog: SQLite in the test's folder, the session's PostgreSQL (each test
  its own namespace: _names), or Glue in the session's moto."""
  if kind == 'sqlite':
    return ['--catalog', f'sqlite:///{tmp_path}/catalog.db']
  if kind == 'glue':
    return ['--catalog', 'glue', '--catalog_endpoint', request.getfixturevalue('s3_store').server.endpoint]
  return ['--catalog', request.getfixturevalue('postgres')]


def _names(tmp_path) -> list[str]:
  ns = 'ns_' + os.path.basename(str(tmp_path)).replace('-', '_').lower()
  return ['--table', f'{ns}.events']


def _lake(where: str, tmp_path, request) -> tuple[str, list[str], list[str] | None]:
  """(warehouse, flags, S3 settings for DuckDB)."""
  if where == 'local':
    return str(tmp_path / 'warehouse'), [], None
  store = request.getfixturevalue('s3_store')
  return (store.url(os.path.basename(str(tmp_path)), 'warehouse'), store.flags,
          [servers.MOTO_KEY, servers.MOTO_SECRET, store.server.endpoint.split('//')[1]])


def iceberg_import(source: str, day: str, warehouse: str, flags: list[str], *extra: str) -> dict:
  code = options.main_guard(import_events.run, [
      '--source', source, '--date', day, '--lake', warehouse, '--lake_format', 'iceberg', *flags,
      *extra])
  assert code == 0
  runs = os.path.join(warehouse, '_runs') if '://' not in warehouse else None
  return {'code': code, 'runs': runs}


def load(warehouse: str, flags: list[str]):
  """The table as the flags name it, through pyiceberg (also the checks' oracle)."""
  from apache_beam.options.pipeline_options import PipelineOptions
  from transforms.lake import iceberg
  return iceberg.table(iceberg.from_options(PipelineOptions(flags), warehouse))


def hive_import(source: str, day: str, lake: str) -> None:
  assert options.main_guard(import_events.run, ['--source', source, '--date', day,
                                                '--lake', lake]) == 0


@pytest.mark.parametrize('catalog,where', [('sqlite', 'local'), ('postgres', 'local'),
                                           ('sqlite', 's3'), ('postgres', 's3'), ('glue', 's3')])
def test_iceberg_lake_holds_the_hive_lake_rows(tmp_path, request, catalog, where, duckdb_iceberg):
  source, hive = str(tmp_path / 'bucket'), str(tmp_path / 'hive')
  write_day(source, DAY1, 1, 40)
  write_day(source, DAY2, 100, 21)
  warehouse, store_flags, s3 = _lake(where, tmp_path, request)
  flags = [*_catalog(catalog, tmp_path, request), *_names(tmp_path), *store_flags]
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
    iceberg_import(source, day, warehouse, flags)
  want = hive_rows(hive, [DAY1, DAY2])
  assert len(want) == 40 + 21
  tbl = load(warehouse, flags)
  assert pyiceberg_rows(tbl) == want
  assert polars_rows(tbl, s3) == want
  assert duckdb_rows(duckdb_iceberg, tbl, s3) == want
  assert [p['partition']['dt'] for p in tbl.inspect.partitions().to_pylist()] != []
  assert {str(p['partition']['dt']) for p in tbl.inspect.partitions().to_pylist()} == {DAY1, DAY2}


@pytest.mark.spark
def test_spark_reads_the_hive_lake_rows(tmp_path, spark_iceberg):
  source, hive, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'hive'), str(tmp_path / 'wh')
  flags = ['--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 25)
  write_day(source, DAY2, 100, 9)
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
    iceberg_import(source, day, warehouse, flags)
  want = hive_rows(hive, [DAY1, DAY2])
  assert len(want) == 34
  assert spark_rows(spark_iceberg, load(warehouse, flags)) == want


def test_rerun_replaces_the_day_and_leaves_the_others(tmp_path, request):
  from transforms.lake import iceberg
  source, hive, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'hive'), str(tmp_path / 'wh')
  flags = ['--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 30)
  write_day(source, DAY2, 200, 10)
  for day in (DAY1, DAY2):
    iceberg_import(source, day, warehouse, flags)
  day2_files = {f.file_path for f in iceberg.day_files(load(warehouse, flags), DAY2)}
  before = load(warehouse, flags).current_snapshot().snapshot_id
  os.remove(os.path.join(source, f'dt={DAY1}', 'polars.parquet'))   # the source day changed
  write_day(source, DAY1, 1000, 8)   # new rows (and the same four writers' files again)
  report = tmp_path / 'report.json'
  iceberg_import(source, DAY1, warehouse, flags, '--report', str(report))
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
  tbl = load(warehouse, flags)
  assert pyiceberg_rows(tbl) == hive_rows(hive, [DAY1, DAY2])
  snapshot = tbl.current_snapshot()
  assert snapshot.parent_snapshot_id == before
  assert json.loads(report.read_text())['days'][0]['snapshot_id'] == snapshot.snapshot_id
  assert snapshot.summary['eventferry.dt'] == DAY1
  assert {f.file_path for f in iceberg.day_files(tbl, DAY2)} == day2_files
  iceberg_import(source, DAY1, warehouse, flags)   # the same input again: the same rows
  assert pyiceberg_rows(load(warehouse, flags)) == hive_rows(hive, [DAY1, DAY2])


def test_days_committed_at_once_all_land(tmp_path):
  """Eight threads commit eight days at the same moment: each optimistic commit that meets a
  newer snapshot is redone, and every day lands with its own files."""
  from transforms.lake import iceberg
  lake = iceberg.IcebergLake(f'sqlite:///{tmp_path}/catalog.db', str(tmp_path / 'wh'))
  tbl = iceberg.table(lake)
  schema = iceberg.file_schema(tbl)
  days = [f'2023-04-{d:02d}' for d in range(1, 9)]
  paths = {}
  for i, day in enumerate(days):
    rows = _table([_row(day, i * 10 + n) for n in range(3)]).drop_columns(['ts']).append_column(
        'ts', pa.array([_row(day, 0)['ts']] * 3, pa.timestamp('ms', tz='UTC')))
    rows = rows.append_column('environment', pa.array(['production'] * 3)).set_column(
        rows.schema.get_field_index('metric_value'), 'metric_value',
        pa.array([D(n).scaleb(-2) for n in range(3)], pa.decimal128(24, 6)))
    from schemas.events import LAKE_SCHEMA
    rows = rows.select(LAKE_SCHEMA.names).cast(LAKE_SCHEMA)
    folder = os.path.join(iceberg.data_root(tbl, 'r'), f'dt={day}')
    os.makedirs(folder)
    paths[day] = os.path.join(folder, 'part.parquet')
    pq.write_table(iceberg.with_day(rows, day, schema), paths[day])
  barrier, errors = threading.Barrier(len(days)), []

  def commit(day):
    try:
      barrier.wait()
      iceberg.commit_day(lake, lake.table, day, [paths[day]], 'r')
    except Exception as e:  # noqa: BLE001 - reported below
      errors.append(e)
  threads = [threading.Thread(target=commit, args=(d,)) for d in days]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []
  tbl = iceberg.table(lake)
  got = {d: [f.file_path for f in iceberg.day_files(tbl, d)] for d in days}
  assert got == {d: ['file://' + p] for d, p in paths.items()}
  assert len(tbl.snapshots()) == len(days)


def _args(source: str, day: str, warehouse: str, catalog: str, *extra: str) -> list[str]:
  return [sys.executable, '-m', 'pipelines.import_events', '--source', source, '--date', day,
          '--lake', warehouse, '--lake_format', 'iceberg', '--catalog', catalog, *extra]


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
  """The import as a user runs it, to its end."""
  return subprocess.run(_args(*args), cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, **(env or {})})


def _start(*args: str, env=None) -> subprocess.Popen:
  return subprocess.Popen(_args(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})})


def test_two_days_in_parallel_both_land(tmp_path):
  source, hive, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'hive'), str(tmp_path / 'wh')
  catalog = f'sqlite:///{tmp_path}/catalog.db'
  write_day(source, DAY1, 1, 20)
  write_day(source, DAY2, 50, 20)
  procs = [_start(source, day, warehouse, catalog) for day in (DAY1, DAY2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
  assert pyiceberg_rows(load(warehouse, ['--catalog', catalog])) == hive_rows(hive, [DAY1, DAY2])


def test_same_day_twice_one_refuses_with_exit_4(tmp_path):
  from transforms.lake.commit import STOP_AT
  source, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'wh')
  catalog = f'sqlite:///{tmp_path}/catalog.db'
  write_day(source, DAY1, 1, 20)
  first = _start(source, DAY1, warehouse, catalog, env={STOP_AT: 'staged'})
  try:
    deadline = time.monotonic() + 300
    while not _stopped(first.pid):
      assert first.poll() is None and time.monotonic() < deadline, first.communicate()
      time.sleep(0.3)
    second = _cli(source, DAY1, warehouse, catalog)
    assert second.returncode == 4, second.stderr
    assert 'holds' in second.stderr and 'Traceback' not in second.stderr
  finally:
    os.kill(first.pid, signal.SIGCONT)
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err
  assert len(pyiceberg_rows(load(warehouse, ['--catalog', catalog]))) == 20


def _stopped(pid: int) -> bool:
  with open(f'/proc/{pid}/stat') as f:
    return f.read().rsplit(')', 1)[1].split()[0] == 'T'


def test_kill_before_the_commit_leaves_the_previous_snapshot(tmp_path):
  from transforms.lake.commit import KILL_AT
  source, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'wh')
  catalog = f'sqlite:///{tmp_path}/catalog.db'
  flags = ['--catalog', catalog]
  write_day(source, DAY1, 1, 20)
  iceberg_import(source, DAY1, warehouse, flags)
  before = load(warehouse, flags)
  rows_before = pyiceberg_rows(before)
  write_day(source, DAY1, 500, 12)   # the day changed at the source
  killed = _cli(source, DAY1, warehouse, catalog, env={KILL_AT: 'staged'})
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  after = load(warehouse, flags)
  assert after.current_snapshot().snapshot_id == before.current_snapshot().snapshot_id
  assert pyiceberg_rows(after) == rows_before
  dead = killed_run(warehouse)
  rerun = _cli(source, DAY1, warehouse, catalog, '--break_lock', dead)
  assert rerun.returncode == 0, rerun.stderr
  clean = str(tmp_path / 'clean')
  run_cli('pipelines.import_events', '--source', source, '--date', DAY1, '--lake', clean,
          '--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/clean.db')
  assert pyiceberg_rows(load(warehouse, flags)) == pyiceberg_rows(
      load(clean, ['--catalog', f'sqlite:///{tmp_path}/clean.db']))


def killed_run(warehouse: str) -> str:
  from transforms.lake import locks
  lock = locks.lock_path(warehouse, f'dt={DAY1}')
  return json.load(open(lock))['run_id']


# ---- export from the Iceberg lake ---------------------------------------------------------------

def _export(lake: str, dest: str, day: str, fmt: str, *flags: str) -> None:
  from pipelines import export_events
  assert options.main_guard(export_events.run, ['--lake', lake, '--date', day, '--dest', dest,
                                                '--format', fmt, *flags]) == 0


def _files(dest: str, day: str) -> dict[str, bytes]:
  folder = os.path.join(dest, f'dt={day}')
  return {n: open(os.path.join(folder, n), 'rb').read() for n in sorted(os.listdir(folder))
          if not n.startswith('_')}


@pytest.mark.parametrize('fmt', ['parquet', 'jsonl', 'csv'])
def test_export_from_iceberg_writes_what_the_hive_lake_export_writes(tmp_path, fmt):
  source, hive, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'hive'), str(tmp_path / 'wh')
  flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 30)
  write_day(source, DAY2, 300, 5)
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
    iceberg_import(source, day, warehouse, flags[2:])
  _export(hive, str(tmp_path / 'from-hive'), DAY1, fmt)
  _export(warehouse, str(tmp_path / 'from-iceberg'), DAY1, fmt, *flags)
  from_hive, from_iceberg = _files(str(tmp_path / 'from-hive'), DAY1), _files(
      str(tmp_path / 'from-iceberg'), DAY1)
  assert list(from_iceberg) == list(from_hive)
  if fmt == 'parquet':   # the same rows and schema, read by pyarrow itself
    for name in from_hive:
      want, got = (pq.read_table(pa.BufferReader(b[name])) for b in (from_hive, from_iceberg))
      assert got.schema == want.schema and got.to_pylist() == want.to_pylist()
  else:
    assert from_iceberg == from_hive
  manifest = json.load(open(tmp_path / 'from-iceberg' / f'dt={DAY1}' / '_manifest.json'))
  assert manifest['lake_snapshot_id'] == load(warehouse, flags[2:]).current_snapshot().snapshot_id


def test_export_of_a_day_the_iceberg_lake_never_committed_exits_3(tmp_path, capsys):
  from pipelines import export_events
  source, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'wh')
  flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 4)
  iceberg_import(source, DAY1, warehouse, flags[2:])
  code = options.main_guard(export_events.run, ['--lake', warehouse, '--date', DAY2, '--dest',
                                                str(tmp_path / 'out'), *flags])
  err = capsys.readouterr().err
  assert code == 3 and f'has no committed day {DAY2}' in err and 'Traceback' not in err


# ---- flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize('flags,message', [
    (['--lake_format', 'iceberg'], '--catalog is required with --lake_format iceberg'),
    (['--lake_format', 'iceberg', '--catalog', 'mysql://u:pw-SECRET@h/db'], 'mysql://u:***@h/db'),
    (['--lake_format', 'iceberg', '--catalog', 'sqlite:///c.db', '--table', 'events'],
     "--table 'events' must be NAMESPACE.NAME"),
    (['--lake_format', 'iceberg', '--catalog', 'sqlite:///c.db', '--dedupe_lookback_days', '2'],
     '--dedupe_lookback_days does not read an Iceberg lake yet'),
])
def test_wrong_iceberg_flags_exit_2_with_one_line(tmp_path, capsys, flags, message):
  source = str(tmp_path / 'bucket')
  write_day(source, DAY1, 1, 4)
  code = options.main_guard(import_events.run, ['--source', source, '--date', DAY1, '--lake',
                                                str(tmp_path / 'wh'), *flags])
  err = capsys.readouterr().err
  assert code == 2 and message in err and 'SECRET' not in err and 'Traceback' not in err


def test_a_hive_run_never_imports_pyiceberg(tmp_path):
  source = str(tmp_path / 'bucket')
  write_day(source, DAY1, 1, 4)
  script = ('import sys; from pipelines import import_events, export_events, options; '
            f'code = options.main_guard(import_events.run, ["--source", "{source}", "--date", '
            f'"{DAY1}", "--lake", "{tmp_path}/lake"]); '
            'print(code, "pyiceberg" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=True).stdout
  assert out.splitlines()[-1] == '0 False'
