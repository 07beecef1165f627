"""Iceberg test kit: days written by real writers (pyarrow, pandas, Polars, DuckDB), readers
that are not the project's code (pyiceberg, Polars, DuckDB's iceberg extension in a venv of its
own, Spark 4.1.1 with Iceberg's runtime jar), and the catalogs and warehouses the tests run on.
The session fixtures duckdb_iceberg, spark_iceberg and postgres (tests/conftest.py) wrap it.
"""
import datetime
import decimal
import json
import os
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import import_events, options
from tests import servers, tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTC = datetime.timezone.utc
D = decimal.Decimal
MAP = pa.map_(pa.string(), pa.string())
PG_USER, PG_PASSWORD = 'ferry', 'pg-SECRET-3a91c0e2'


# ---- a day written by real writers -------------------------------------------------------------

def row(day: str, n: int, **over) -> dict:
  start = datetime.datetime.fromisoformat(day).replace(tzinfo=UTC)
  row = {'ts': start + datetime.timedelta(seconds=n, microseconds=123_456),
         'event_key': f'Event {n}', 'identifiers': {'Id': f'user-{n}', 'Device_ID': f'D-{n}'},
         'insert_id': f'00000000-0000-4000-8000-{n:012x}', 'metric_value': (D(n) / 7).quantize(D('1e-10')),
         'user_properties': {'Grade': 'GOLD'} if n % 3 else {},
         'event_properties': {'n': str(n), 'nothing': None},
         'platform_properties': {'OSName': 'Android', 'AppVersion': '6.9.0'}}
  row.update(over)
  return row


def arrow_table(rows: list[dict]) -> pa.Table:
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
    rows = [row(day, n) for n in numbers]
    if i:
      rows.append(row(day, quarters[i - 1][0], event_key='duplicate',
                       ts=row(day, quarters[i - 1][0])['ts'] + datetime.timedelta(hours=1)))
    tables.append(arrow_table(rows))
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




def duckdb_iceberg_python() -> str:
  """The python of a venv with DuckDB 1.5.5 and its iceberg extension (made once, under .tools/)."""
  python = os.path.join(DUCKDB_ICEBERG, 'bin', 'python')
  with tools.building():
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




def spark_iceberg_venv() -> tuple[str, str]:
  """(python, jar): pyspark 4.1.1 in a venv of its own under .tools/ and Iceberg's Spark 4.1
  runtime from Maven Central (pyspark 4.3.0, the project's, fails with every Iceberg runtime
  published: docs/iceberg.md)."""
  import shutil
  python = os.path.join(SPARK_VENV, 'bin', 'python')
  jars = os.path.join(ROOT, '.tools', 'jars')
  jar = os.path.join(jars, 'iceberg-spark-runtime-4.1_2.13-1.12.0.jar')
  if shutil.which('java') is None or shutil.which('mvn') is None:
    pytest.skip('Spark needs Java (17) and mvn on PATH')
  with tools.building():
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


def catalog_flags(kind: str, tmp_path, request) -> list[str]:
  """The flags of a catalog: SQLite in the test's folder, the session's PostgreSQL (each test
  its own namespace: _names), or Glue in the session's moto."""
  if kind == 'sqlite':
    return ['--catalog', f'sqlite:///{tmp_path}/catalog.db']
  if kind == 'glue':
    return ['--catalog', 'glue', '--catalog_endpoint', request.getfixturevalue('s3_store').server.endpoint]
  return ['--catalog', request.getfixturevalue('postgres')]


def table_flags(tmp_path) -> list[str]:
  ns = 'ns_' + os.path.basename(str(tmp_path)).replace('-', '_').lower()
  return ['--table', f'{ns}.events']


def warehouse_of(where: str, tmp_path, request) -> tuple[str, list[str], list[str] | None]:
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
