"""Export into a customer's Iceberg table (--format iceberg), and --since_last_export and profiles
from an Iceberg lake. Days written by real writers (icebergkit.write_day) are imported into a Hive
and an Iceberg lake; the oracle is the same days exported with --format parquet, read by DuckDB's
read_parquet. The customer's table is read by pyiceberg, DuckDB's iceberg extension (its own
venv, fixture duckdb_iceberg) and Spark 4.1.1 with Iceberg's runtime (fixture spark_iceberg), and
must hold exactly the Parquet export's rows. Catalogs: SQLite on local disk, Glue (moto) with an
S3 (moto) warehouse.
"""
import decimal
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import duckdb
import pyarrow as pa
import pytest

from tests.conftest import ROOT, run_cli
from tests.icebergkit import hive_import, iceberg_import, load, write_day

pytestmark = pytest.mark.engine

DAY1, DAY2 = '2023-03-01', '2023-03-02'
# The export's columns as every reader prints them: decimals and maps as exact text.
COLUMNS = ('cast(server_dt as varchar), epoch_ms(ts), environment, event_key, identifiers, '
           'insert_id, cast(metric_value as varchar), hackle_properties, user_properties, '
           'event_properties')
DUCKDB_READER = r'''
import duckdb, importlib, json, os, sys
con = duckdb.connect()
for ext in ('avro', 'httpfs', 'iceberg'):
  folder = os.path.dirname(importlib.import_module(f'duckdb_extension_{ext}').__file__)
  con.execute(f"LOAD '{folder}/extensions/v{duckdb.__version__}/{ext}.duckdb_extension'")
metadata, columns, s3 = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if s3:
  key, secret, endpoint = s3
  con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{key}', SECRET '{secret}', ENDPOINT '{endpoint}', "
              "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')")
rows = con.execute(f"select {columns}, cast(dt as varchar) from iceberg_scan('{metadata}')").fetchall()
print(json.dumps(rows))
'''
SPARK_READER = r'''
import json, sys
from pyspark.sql import SparkSession
jar, metadata = sys.argv[1:]
spark = (SparkSession.builder.master('local[1]').config('spark.jars', jar)
         .config('spark.ui.enabled', 'false').config('spark.driver.host', '127.0.0.1')
         .config('spark.driver.bindAddress', '127.0.0.1')
         .config('spark.sql.session.timeZone', 'UTC').getOrCreate())
spark.read.format('iceberg').load(metadata).createOrReplaceTempView('t')
rows = spark.sql('select cast(server_dt as string), unix_millis(ts), environment, event_key, '
                 'identifiers, insert_id, cast(metric_value as string), hackle_properties, '
                 'user_properties, event_properties, cast(dt as string) from t').collect()
print(json.dumps([list(r) for r in rows]))
'''


def _normal(rows) -> list[tuple]:
  """Rows as comparable tuples (decimal text as numbers: readers print scales differently)."""
  return sorted(tuple(r[:6]) + (decimal.Decimal(r[6]),) + tuple(r[7:]) for r in rows)


def parquet_rows(dest: str, days: list[str]) -> list[tuple]:
  """The oracle: the --format parquet export's days, read by DuckDB's read_parquet."""
  con = duckdb.connect()
  rows = []
  for day in days:
    rows += con.execute(f"select {COLUMNS}, cast(server_dt as varchar) from "
                        f"read_parquet('{dest}/dt={day}/*.parquet')").fetchall()
  return _normal(rows)


def pyiceberg_rows(tbl) -> list[tuple]:
  con = duckdb.connect()
  con.register('t', tbl.scan().to_arrow())
  return _normal(con.execute(f'select {COLUMNS}, cast(dt as varchar) from t').fetchall())


def duckdb_rows(python: str, tbl, s3: list[str] | None = None) -> list[tuple]:
  out = subprocess.run([python, '-c', DUCKDB_READER, tbl.metadata_location, COLUMNS,
                        json.dumps(s3 or [])], check=True, capture_output=True, text=True,
                       timeout=300).stdout
  return _normal(json.loads(out))


def spark_rows(spark: tuple[str, str], tbl) -> list[tuple]:
  python, jar = spark
  out = subprocess.run([python, '-c', SPARK_READER, jar, tbl.metadata_location], check=True,
                       capture_output=True, text=True, timeout=600).stdout
  return _normal(json.loads(out.splitlines()[-1]))


def export(lake: str, dest: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
  return run_cli('pipelines.export_events', '--lake', lake, '--dest', dest, *flags, check=check)


def dest_flags(tmp_path, name: str = 'cust') -> list[str]:
  return ['--format', 'iceberg', '--dest_catalog', f'sqlite:///{tmp_path}/{name}.db']


def customer_table(dest: str, flags: list[str]):
  """The customer's table, through pyiceberg (the flags as the export got them)."""
  from apache_beam.options.pipeline_options import PipelineOptions
  from transforms.lake import iceberg
  f = dict(zip(flags[::2], flags[1::2]))
  return iceberg.table(iceberg.at(PipelineOptions(flags), dest, f['--dest_catalog'],
                                  f.get('--dest_table', iceberg.DEFAULT_TABLE),
                                  f.get('--dest_catalog_endpoint')))


def day_paths(tbl, day: str) -> set[str]:
  from transforms.lake import iceberg
  return {f.file_path for f in iceberg.day_files(tbl, day)}


def report_of(out: str) -> dict:
  path = out.strip().splitlines()[-1].split('Report: ')[1]
  return json.load(open(path))


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Two days written by real writers, imported into a Hive lake and an Iceberg lake, once for
  the module (four imports)."""
  root = tmp_path_factory.mktemp('lakes')
  source, hive, warehouse = str(root / 'bucket'), str(root / 'hive'), str(root / 'wh')
  flags = ['--catalog', f'sqlite:///{root}/lake.db']
  write_day(source, DAY1, 1, 40)
  write_day(source, DAY2, 100, 21)
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
    iceberg_import(source, day, warehouse, flags)
  return {'source': source, 'hive': hive, 'warehouse': warehouse, 'flags': flags}


@pytest.fixture
def lakes(built, tmp_path):
  """The module's days: the customer's bucket and the Hive lake copied for the test (it may
  change them), the Iceberg lake shared (its metadata holds its own paths, so it cannot be
  copied): tests that change the Iceberg lake take `own_iceberg` too. An export records its
  delivery in the lake it reads, under its own destination, which no other test exports to."""
  source, hive = str(tmp_path / 'bucket'), str(tmp_path / 'hive')
  shutil.copytree(built['source'], source)
  shutil.copytree(built['hive'], hive)
  return {'source': source, 'hive': hive, 'warehouse': built['warehouse'], 'flags': built['flags'],
          'iceberg': ['--lake_format', 'iceberg', *built['flags']]}


@pytest.fixture
def own_iceberg(lakes, tmp_path):
  """`lakes` with an Iceberg lake of the test's own, imported from its copy of the bucket."""
  warehouse, flags = str(tmp_path / 'wh'), ['--catalog', f'sqlite:///{tmp_path}/lake.db']
  for day in (DAY1, DAY2):
    iceberg_import(lakes['source'], day, warehouse, flags)
  return {**lakes, 'warehouse': warehouse, 'flags': flags,
          'iceberg': ['--lake_format', 'iceberg', *flags]}


@pytest.mark.parametrize('lake', ['hive', 'iceberg'])
def test_the_customer_table_holds_the_parquet_export_rows(tmp_path, lakes, lake, duckdb_iceberg):
  src = [lakes['hive']] if lake == 'hive' else [lakes['warehouse'], *lakes['iceberg']]
  oracle, dest = str(tmp_path / 'parquet'), str(tmp_path / 'cust')
  export(src[0], oracle, '--from_date', DAY1, '--to_date', DAY2, *src[1:])
  want = parquet_rows(oracle, [DAY1, DAY2])
  assert len(want) == 61
  out = export(src[0], dest, '--from_date', DAY1, '--to_date', DAY2, *src[1:], *dest_flags(tmp_path))
  tbl = customer_table(dest, dest_flags(tmp_path))
  assert pyiceberg_rows(tbl) == want
  assert duckdb_rows(duckdb_iceberg, tbl) == want
  assert [f.name for f in tbl.schema().fields] == [
      'server_dt', 'ts', 'environment', 'event_key', 'identifiers', 'insert_id', 'metric_value',
      'hackle_properties', 'user_properties', 'event_properties', 'dt']
  assert {str(p['partition']['dt']) for p in tbl.inspect.partitions().to_pylist()} == {DAY1, DAY2}
  # one snapshot per day, named in the report, the day's export manifest and the history
  snapshots = {s.summary['eventferry.dt']: s.snapshot_id for s in tbl.snapshots()}
  assert len(tbl.snapshots()) == 2
  report = report_of(out.stdout)
  assert report['format'] == 'iceberg/zstd'
  assert {d['dt']: d['snapshot_id'] for d in report['days']} == snapshots
  history = json.load(open(os.path.join(dest, '_eventferry', 'export_history.json')))
  for day in (DAY1, DAY2):
    manifest = json.load(open(os.path.join(history[day]['dest'], '_manifest.json')))
    assert manifest['snapshot_id'] == history[day]['snapshot_id'] == snapshots[day]
    assert history[day]['dest_table'] == 'eventferry.events'


def test_glue_catalog_and_s3_warehouse(tmp_path, lakes, request, duckdb_iceberg):
  from tests import servers
  store = request.getfixturevalue('s3_store')
  dest = store.url(os.path.basename(str(tmp_path)), 'cust')
  ns = 'ns_' + os.path.basename(str(tmp_path)).replace('-', '_').lower()
  flags = ['--format', 'iceberg', '--dest_catalog', 'glue', '--dest_catalog_endpoint',
           store.server.endpoint, '--dest_table', f'{ns}.events', *store.flags]
  oracle = str(tmp_path / 'parquet')
  export(lakes['hive'], oracle, '--date', DAY1)
  out = export(lakes['hive'], dest, '--date', DAY1, *flags)
  assert servers.MOTO_SECRET not in out.stdout + out.stderr
  tbl = customer_table(dest, flags)
  want = parquet_rows(oracle, [DAY1])
  assert pyiceberg_rows(tbl) == want
  s3 = [servers.MOTO_KEY, servers.MOTO_SECRET, store.server.endpoint.split('//')[1]]
  assert duckdb_rows(duckdb_iceberg, tbl, s3) == want
  assert tbl.metadata_location.startswith(dest)


@pytest.mark.spark
def test_spark_reads_the_parquet_export_rows(tmp_path, lakes, spark_iceberg):
  oracle, dest = str(tmp_path / 'parquet'), str(tmp_path / 'cust')
  export(lakes['hive'], oracle, '--from_date', DAY1, '--to_date', DAY2)
  export(lakes['hive'], dest, '--from_date', DAY1, '--to_date', DAY2, *dest_flags(tmp_path))
  assert spark_rows(spark_iceberg, customer_table(dest, dest_flags(tmp_path))) == parquet_rows(
      oracle, [DAY1, DAY2])


def test_rerun_replaces_the_day_and_leaves_the_others(tmp_path, lakes):
  dest, flags = str(tmp_path / 'cust'), dest_flags(tmp_path)
  export(lakes['hive'], dest, '--from_date', DAY1, '--to_date', DAY2, *flags)
  tbl = customer_table(dest, flags)
  day2, before = day_paths(tbl, DAY2), tbl.current_snapshot().snapshot_id
  os.remove(os.path.join(lakes['source'], f'dt={DAY1}', 'polars.parquet'))   # the day changed
  write_day(lakes['source'], DAY1, 1000, 8)
  hive_import(lakes['source'], DAY1, lakes['hive'])
  export(lakes['hive'], dest, '--date', DAY1, *flags)
  oracle = str(tmp_path / 'parquet')
  export(lakes['hive'], oracle, '--from_date', DAY1, '--to_date', DAY2)
  tbl = customer_table(dest, flags)
  assert pyiceberg_rows(tbl) == parquet_rows(oracle, [DAY1, DAY2])
  assert tbl.current_snapshot().parent_snapshot_id == before
  assert day_paths(tbl, DAY2) == day2
  export(lakes['hive'], dest, '--date', DAY1, *flags)   # the same day again: the same rows
  assert pyiceberg_rows(customer_table(dest, flags)) == parquet_rows(oracle, [DAY1, DAY2])


def test_filters_apply(tmp_path, lakes):
  dest, oracle = str(tmp_path / 'cust'), str(tmp_path / 'parquet')
  chosen = ['--events', 'Event 1,Event 6,duplicate,Event 31', '--environment', 'production']
  export(lakes['warehouse'], oracle, '--date', DAY1, *lakes['iceberg'], *chosen)
  export(lakes['warehouse'], dest, '--date', DAY1, *lakes['iceberg'], *chosen, *dest_flags(tmp_path))
  want = parquet_rows(oracle, [DAY1])
  assert 0 < len(want) < 40
  assert pyiceberg_rows(customer_table(dest, dest_flags(tmp_path))) == want


def test_status_and_reconcile_read_the_destination(tmp_path, lakes):
  dest = str(tmp_path / 'cust')
  export(lakes['hive'], dest, '--from_date', DAY1, '--to_date', DAY2, *dest_flags(tmp_path))
  for deep in ([], ['--deep']):
    out = run_cli('pipelines.reconcile', '--lake', lakes['hive'], '--dest', dest, *deep)
    assert 'MISMATCH' not in out.stdout and '0 mismatches' not in out.stdout, out.stdout
    assert 'everything matches its manifest' in out.stdout
  out = run_cli('pipelines.status', '--lake', lakes['hive'], '--dest', dest)
  assert 'Traceback' not in out.stderr


def test_forget_delivers_the_day_again_into_the_table(tmp_path, lakes):
  dest, flags = str(tmp_path / 'cust'), dest_flags(tmp_path)
  export(lakes['hive'], dest, '--from_date', DAY1, '--to_date', DAY2, *flags)
  day2 = day_paths(customer_table(dest, flags), DAY2)
  run_cli('pipelines.forget', '--lake', lakes['hive'], '--user_id', 'user-5')
  oracle = str(tmp_path / 'parquet')   # the lake after forget, exported afresh
  export(lakes['hive'], oracle, '--from_date', DAY1, '--to_date', DAY2)
  want = parquet_rows(oracle, [DAY1, DAY2])
  assert len(want) == 60 and not any('user-5"' in r[4] for r in want)
  tbl = customer_table(dest, flags)
  assert pyiceberg_rows(tbl) == want
  assert day_paths(tbl, DAY2) == day2


def test_two_exports_of_a_day_at_once_and_a_killed_one(tmp_path, lakes):
  """A second export of a day the first still holds refuses with exit 4; an export killed just
  before its snapshot leaves the table as it was, and its rerun (--break_lock) lands the day."""
  from transforms.lake import locks
  from transforms.lake.commit import KILL_AT, STOP_AT
  dest, flags = str(tmp_path / 'cust'), dest_flags(tmp_path)
  args = [sys.executable, '-m', 'pipelines.export_events', '--lake', lakes['hive'], '--dest', dest,
          '--date', DAY1, *flags]
  first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, STOP_AT: 'before_snapshot'})
  try:
    lock = locks.lock_path(dest, f'dt={DAY1}')
    while not _stopped(first.pid):
      assert first.poll() is None, first.communicate()
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 4 and 'Traceback' not in second.stderr, second.stderr
    assert os.path.exists(lock)
  finally:
    os.kill(first.pid, signal.SIGCONT)
  assert first.wait(timeout=600) == 0
  tbl = customer_table(dest, flags)
  snapshot = tbl.current_snapshot().snapshot_id
  killed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, KILL_AT: 'before_snapshot'})
  assert killed.returncode == -signal.SIGKILL
  assert customer_table(dest, flags).current_snapshot().snapshot_id == snapshot
  dead = json.load(open(locks.lock_path(dest, f'dt={DAY1}')))['run_id']
  export(lakes['hive'], dest, '--date', DAY1, *flags, '--break_lock', dead)
  oracle = str(tmp_path / 'parquet')
  export(lakes['hive'], oracle, '--date', DAY1)
  tbl = customer_table(dest, flags)
  assert pyiceberg_rows(tbl) == parquet_rows(oracle, [DAY1])
  assert tbl.current_snapshot().parent_snapshot_id == snapshot


def test_two_days_exported_at_once_both_land(tmp_path, lakes):
  dest, flags = str(tmp_path / 'cust'), dest_flags(tmp_path)
  procs = [subprocess.Popen([sys.executable, '-m', 'pipelines.export_events', '--lake',
                             lakes['hive'], '--dest', dest, '--date', day, *flags], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for day in (DAY1, DAY2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  oracle = str(tmp_path / 'parquet')
  export(lakes['hive'], oracle, '--from_date', DAY1, '--to_date', DAY2)
  assert pyiceberg_rows(customer_table(dest, flags)) == parquet_rows(oracle, [DAY1, DAY2])


def test_a_spec_file_names_the_table(tmp_path, lakes):
  spec = tmp_path / 'acme.yaml'
  dest = str(tmp_path / 'cust')
  spec.write_text(f"lake: {lakes['hive']}\ndest: {dest}\nformat: iceberg\n"
                  f"dest_catalog: sqlite:///{tmp_path}/spec.db\ndest_table: acme.events\n")
  export(lakes['hive'], dest, '--spec', str(spec), '--date', DAY1)
  oracle = str(tmp_path / 'parquet')
  export(lakes['hive'], oracle, '--date', DAY1)
  tbl = customer_table(dest, ['--dest_catalog', f'sqlite:///{tmp_path}/spec.db', '--dest_table',
                              'acme.events'])
  assert pyiceberg_rows(tbl) == parquet_rows(oracle, [DAY1])


def _stopped(pid: int) -> bool:
  with open(f'/proc/{pid}/stat') as f:
    return f.read().rsplit(')', 1)[1].split()[0] == 'T'


# ---- --since_last_export from an Iceberg lake --------------------------------------------------

def stream_into(lakes: dict, day: str, count: int) -> None:
  """Rows appended to the lake's day as a streaming writer adds them: pyiceberg's own append
  (its own file), rows like the day's first ones with new insert_ids."""
  tbl = load(lakes['warehouse'], lakes['flags'])
  rows = tbl.scan(row_filter=f"dt = '{day}'", limit=count).to_arrow().slice(0, count)
  ids = pa.array([str(uuid.UUID(int=n + 2**122, version=4)) for n in range(count)])
  rows = rows.set_column(rows.schema.get_field_index('insert_id'), 'insert_id', ids)
  rows = rows.set_column(rows.schema.get_field_index('event_key'), 'event_key',
                         pa.array(['streamed'] * count))
  tbl.append(rows.cast(tbl.schema().as_arrow()))


@pytest.mark.parametrize('fmt', ['parquet', 'iceberg'])
def test_since_last_export_adds_the_rows_a_streaming_day_gained(tmp_path, own_iceberg, fmt):
  lakes = own_iceberg
  dest = str(tmp_path / 'out')
  flags = dest_flags(tmp_path) if fmt == 'iceberg' else []
  first = export(lakes['warehouse'], dest, '--since_last_export', *lakes['iceberg'], *flags)
  assert [d['dt'] for d in report_of(first.stdout)['days']] == [DAY1, DAY2]
  again = export(lakes['warehouse'], dest, '--since_last_export', *lakes['iceberg'], *flags)
  assert 'nothing to export' in again.stdout
  before = day_paths(customer_table(dest, flags), DAY1) if flags else set(os.listdir(
      os.path.join(dest, f'dt={DAY1}')))
  stream_into(lakes, DAY1, 5)
  added = export(lakes['warehouse'], dest, '--since_last_export', *lakes['iceberg'], *flags)
  days = report_of(added.stdout)['days']
  assert [(d['dt'], d['rows'], d['appended']) for d in days] == [(DAY1, 5, True)]
  oracle = str(tmp_path / 'parquet')   # the whole lake, exported afresh
  export(lakes['warehouse'], oracle, '--from_date', DAY1, '--to_date', DAY2, *lakes['iceberg'])
  want = parquet_rows(oracle, [DAY1, DAY2])
  assert len(want) == 66
  if fmt == 'iceberg':
    tbl = customer_table(dest, flags)
    assert pyiceberg_rows(tbl) == want
    assert day_paths(tbl, DAY1) > before   # the earlier files stay; one append snapshot
    assert tbl.current_snapshot().summary.operation.value == 'append'
  else:
    assert parquet_rows(dest, [DAY1, DAY2]) == want
    folder = os.path.join(dest, f'dt={DAY1}')
    assert set(os.listdir(folder)) > before
    manifest = json.load(open(os.path.join(folder, '_manifest.json')))
    assert manifest['rows'] == 45 and manifest['rows_added'] == 5
    assert sorted(f['name'] for f in manifest['files']) == sorted(
        n for n in os.listdir(folder) if not n.startswith('_'))
  assert 'nothing to export' in export(lakes['warehouse'], dest, '--since_last_export',
                                       *lakes['iceberg'], *flags).stdout


@pytest.mark.parametrize('fmt', ['parquet', 'iceberg'])
def test_since_last_export_exports_a_replaced_day_whole(tmp_path, own_iceberg, fmt):
  lakes = own_iceberg
  dest = str(tmp_path / 'out')
  flags = dest_flags(tmp_path) if fmt == 'iceberg' else []
  export(lakes['warehouse'], dest, '--since_last_export', *lakes['iceberg'], *flags)
  os.remove(os.path.join(lakes['source'], f'dt={DAY1}', 'pandas.parquet'))   # a rerun of the day
  iceberg_import(lakes['source'], DAY1, lakes['warehouse'], lakes['flags'])
  again = export(lakes['warehouse'], dest, '--since_last_export', '--date', DAY1,
                 *lakes['iceberg'], *flags)
  days = report_of(again.stdout)['days']
  oracle = str(tmp_path / 'parquet')
  export(lakes['warehouse'], oracle, '--from_date', DAY1, '--to_date', DAY2, *lakes['iceberg'])
  want = parquet_rows(oracle, [DAY1, DAY2])
  assert [(d['dt'], d['appended']) for d in days] == [(DAY1, False)]
  assert days[0]['rows'] == len(parquet_rows(oracle, [DAY1])) < 40
  got = (pyiceberg_rows(customer_table(dest, flags)) if flags else parquet_rows(dest, [DAY1, DAY2]))
  assert got == want


# ---- profiles from an Iceberg lake -------------------------------------------------------------

def test_profiles_from_the_iceberg_lake_are_the_hive_lakes(tmp_path, lakes):
  flags = ['--kind', 'profiles', '--date', DAY2]
  export(lakes['hive'], str(tmp_path / 'from-hive'), *flags)
  export(lakes['warehouse'], str(tmp_path / 'from-iceberg'), *flags, *lakes['iceberg'])
  con = duckdb.connect()
  got, want = (con.execute(f"select * from read_parquet('{tmp_path}/{name}/dt={DAY2}/*.parquet') "
                           'order by user_key').fetchall() for name in ('from-iceberg', 'from-hive'))
  assert got == want and len(want) == 61   # every user of both days (one event each)


# ---- flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize('flags,message', [
    (['--format', 'iceberg'], '--format iceberg needs --dest_catalog'),
    (['--dest_catalog', 'sqlite:///c.db'], '--dest_catalog is the catalog of --format iceberg'),
    (['--format', 'iceberg', '--dest_catalog', 'mysql://u:pw-SECRET@h/db'], 'mysql://u:***@h/db'),
    (['--format', 'iceberg', '--dest_catalog', 'sqlite:///c.db', '--dest_table', 'events'],
     "--dest_table 'events' must be NAMESPACE.NAME"),
    (['--format', 'iceberg', '--dest_catalog', 'sqlite:///c.db', '--compression', 'gzip'],
     '--compression cannot apply to --format iceberg'),
    (['--format', 'iceberg', '--dest_catalog', 'sqlite:///c.db', '--layout', 'adobe',
      '--partition_template', 'x/dt={dt}'], '--partition_template, --layout cannot apply'),
    (['--format', 'iceberg', '--dest_catalog', 'sqlite:///c.db', '--kind', 'profiles'],
     '--kind cannot apply to --format iceberg'),
])
def test_wrong_flags_exit_2_with_one_line(tmp_path, lakes, flags, message):
  out = export(lakes['hive'], str(tmp_path / 'out'), '--date', DAY1, *flags, check=False)
  assert out.returncode == 2, out.stderr
  assert message in out.stderr and 'SECRET' not in out.stderr and 'Traceback' not in out.stderr


def test_the_lake_table_is_never_a_destination(tmp_path, lakes):
  catalog = lakes['flags'][1]
  same = export(lakes['warehouse'], str(tmp_path / 'out'), '--date', DAY1, *lakes['iceberg'],
                '--format', 'iceberg', '--dest_catalog', catalog, check=False)
  assert same.returncode == 2 and "is the lake's own table" in same.stderr, same.stderr
  other = export(lakes['warehouse'], lakes['warehouse'] + '-x', '--date', DAY1, *lakes['iceberg'],
                 '--format', 'iceberg', '--dest_catalog', catalog, '--dest_table',
                 'eventferry.events_rejected', check=False)
  assert other.returncode == 2 and 'not the export\'s' in other.stderr, other.stderr
  assert 'Traceback' not in same.stderr + other.stderr
