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
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import import_events, options
from tests.conftest import ROOT, run_cli
from tests.icebergkit import (D, arrow_table, catalog_flags, duckdb_rows,
                              hive_import, hive_rows, iceberg_import, load, polars_rows, pyiceberg_rows,
                              row, spark_rows, table_flags, warehouse_of, write_day)

pytestmark = pytest.mark.engine

DAY1, DAY2 = '2023-03-01', '2023-03-02'


@pytest.mark.parametrize('catalog,where', [('sqlite', 'local'), ('postgres', 'local'),
                                           ('sqlite', 's3'), ('postgres', 's3'), ('glue', 's3')])
def test_iceberg_lake_holds_the_hive_lake_rows(tmp_path, request, catalog, where, duckdb_iceberg):
  source, hive = str(tmp_path / 'bucket'), str(tmp_path / 'hive')
  write_day(source, DAY1, 1, 40)
  write_day(source, DAY2, 100, 21)
  warehouse, store_flags, s3 = warehouse_of(where, tmp_path, request)
  flags = [*catalog_flags(catalog, tmp_path, request), *table_flags(tmp_path), *store_flags]
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


def test_backfill_skips_the_days_committed_from_the_same_input(tmp_path):
  """The snapshot that committed a day records what it was made from: a backfill over the range
  again runs nothing, and after one source day changes it runs that day only."""
  source, hive, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'hive'), str(tmp_path / 'wh')
  flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 20)
  write_day(source, DAY2, 100, 12)

  report = tmp_path / 'backfill.json'

  def backfill() -> list[dict]:
    proc = run_cli('pipelines.backfill', 'import', '--source', source, '--lake', warehouse, *flags,
                   '--from_date', DAY1, '--to_date', DAY2, '--report', str(report))
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())['days']
  assert [d['status'] for d in backfill()] == ['published', 'published']
  again = backfill()
  assert [(d['action'], d['status']) for d in again] == [('skip', 'skipped'), ('skip', 'skipped')]
  assert 'complete: run' in again[0]['reason']
  write_day(source, DAY2, 500, 4)   # the day's four files rewritten: another input
  changed = backfill()
  assert [d['action'] for d in changed] == ['skip', 'run']
  assert 'the source changed since run' in changed[1]['reason']
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
  assert pyiceberg_rows(load(warehouse, flags[2:])) == hive_rows(hive, [DAY1, DAY2])


def test_dedupe_lookback_reads_the_days_the_table_holds(tmp_path):
  """--dedupe_lookback_days 1 drops the rows of day 2 whose insert_id day 1 holds in the table;
  the expected rows are day 2's source rows (read by DuckDB) less day 1's ids."""
  import duckdb
  source, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'wh')
  flags = ['--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 20)
  write_day(source, DAY2, 11, 20)   # numbers 11..30: 11..20 are day 1's insert_ids again
  iceberg_import(source, DAY1, warehouse, flags)
  iceberg_import(source, DAY2, warehouse, flags, '--dedupe_lookback_days', '1')
  con = duckdb.connect()
  ids = {d: {r[0] for r in con.execute(
      f"select distinct insert_id from read_parquet('{source}/dt={d}/*.parquet')").fetchall()}
      for d in (DAY1, DAY2)}
  rows = pyiceberg_rows(load(warehouse, flags))
  assert {r[0] for r in rows if r[-1] == DAY2} == ids[DAY2] - ids[DAY1]
  assert {r[0] for r in rows if r[-1] == DAY1} == ids[DAY1]
  assert len(ids[DAY2] & ids[DAY1]) == 10


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
    rows = arrow_table([row(day, i * 10 + n) for n in range(3)]).drop_columns(['ts']).append_column(
        'ts', pa.array([row(day, 0)['ts']] * 3, pa.timestamp('ms', tz='UTC')))
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


def _open_at_once(args) -> str | None:
  """Opens (first use: creates) the table once the other processes are ready too."""
  warehouse, flags, ready = args
  ready.wait()
  try:
    load(warehouse, flags)
    return None
  except Exception as e:
    return f'{type(e).__name__}: {e}'


@pytest.mark.parametrize('catalog', ['sqlite', 'postgres'])
def test_runs_starting_together_on_a_new_catalog_all_open_it(tmp_path, request, catalog):
  """Six processes open a new catalog, namespace and table at the same moment: each gets the one
  table (pyiceberg's SQL catalog checks, then creates, so the others met "already exists")."""
  import multiprocessing
  flags = catalog_flags(catalog, tmp_path, request) + table_flags(tmp_path)
  spawn = multiprocessing.get_context('spawn')
  with spawn.Manager() as manager, spawn.Pool(6) as pool:
    ready = manager.Barrier(6)
    errors = pool.map(_open_at_once, [(str(tmp_path / 'wh'), flags, ready)] * 6)
  assert errors == [None] * 6
  tbl = load(str(tmp_path / 'wh'), flags)
  assert tbl.metadata.location.startswith('file://' + str(tmp_path / 'wh'))


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


# ---- status and reconcile -------------------------------------------------------------------

def test_status_and_reconcile_read_the_tables(tmp_path):
  """status reads each day from the table (rows counted by pyiceberg's own scan), its import
  and its export; reconcile finds every file the table lists, with --deep decodes them, ignores
  an orphan file and names a missing one."""
  from transforms.lake import iceberg
  source, warehouse, dest = str(tmp_path / 'bucket'), str(tmp_path / 'wh'), str(tmp_path / 'out')
  flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 30)
  write_day(source, DAY2, 300, 9)
  iceberg_import(source, DAY1, warehouse, flags[2:])
  out = run_cli('pipelines.import_events', '--source', source, '--date', DAY2, '--lake', warehouse,
                *flags).stdout
  assert 'Lake: eventferry.events/dt=...; rejected rows: eventferry.events_rejected/dt=...;' in out
  _export(warehouse, dest, DAY1, 'parquet', *flags)
  tbl = load(warehouse, flags[2:])
  counts = {d: len(tbl.scan(row_filter=f"dt = '{d}'").to_arrow()) for d in (DAY1, DAY2)}
  doc = json.loads(run_cli('pipelines.status', '--lake', warehouse, *flags, '--dest', dest,
                           '--json').stdout)
  assert [(d['dt'], d['lake']['rows'], d['import']['status']) for d in doc['days']] == [
      (DAY1, counts[DAY1], 'published'), (DAY2, counts[DAY2], 'published')]
  assert doc['days'][0]['exports'][dest]['current'] is True
  assert doc['days'][1]['exports'][dest] is None
  for deep in ([], ['--deep']):
    proc = run_cli('pipelines.reconcile', '--lake', warehouse, *flags, '--dest', dest, *deep)
    assert 'reconciled 3 days' in proc.stdout and 'everything matches' in proc.stdout, proc.stdout
  orphan = os.path.join(iceberg.data_root(tbl, 'killed-run'), f'dt={DAY2}', 'part-x.parquet')
  os.makedirs(os.path.dirname(orphan))
  pq.write_table(pa.table({'a': [1]}), orphan)
  lost = iceberg.day_files(tbl, DAY2)[0]   # as pyiceberg recorded it
  os.remove(iceberg.store_path(lost.file_path))
  proc = run_cli('pipelines.reconcile', '--lake', warehouse, *flags, check=False)
  assert proc.returncode == 1
  assert [line for line in proc.stdout.splitlines() if line.startswith('MISMATCH')] == [
      f'MISMATCH {iceberg.store_path(lost.file_path)}: missing (the manifest lists it: '
      f'{lost.file_size_in_bytes:,} bytes, {lost.record_count:,} rows)']


# ---- flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize('flags,message', [
    (['--lake_format', 'iceberg'], '--catalog is required with --lake_format iceberg'),
    (['--lake_format', 'iceberg', '--catalog', 'mysql://u:pw-SECRET@h/db'], 'mysql://u:***@h/db'),
    (['--lake_format', 'iceberg', '--catalog', 'sqlite:///c.db', '--table', 'events'],
     "--table 'events' must be NAMESPACE.NAME"),
])
def test_wrong_iceberg_flags_exit_2_with_one_line(tmp_path, capsys, flags, message):
  source = str(tmp_path / 'bucket')
  write_day(source, DAY1, 1, 4)
  code = options.main_guard(import_events.run, ['--source', source, '--date', DAY1, '--lake',
                                                str(tmp_path / 'wh'), *flags])
  err = capsys.readouterr().err
  assert code == 2 and message in err and 'SECRET' not in err and 'Traceback' not in err


@pytest.mark.parametrize('catalog,shown', [
    ('postgresql://ferry:pw-SECRET-77@127.0.0.1:1/ferry', 'postgresql://ferry:***@127.0.0.1:1/ferry'),
    ('http://127.0.0.1:1/catalog', 'http://127.0.0.1:1/catalog')])
def test_an_unreachable_catalog_is_one_line_and_exit_5_in_every_command(tmp_path, catalog, shown):
  source, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'wh')
  write_day(source, DAY1, 1, 5)
  (tmp_path / 'raw.jsonl').write_text('{}\n')
  lake = ['--lake', warehouse, '--lake_format', 'iceberg', '--catalog', catalog]
  commands = {'import_events': ['--source', source, '--date', DAY1],
              'export_events': ['--date', DAY1, '--dest', str(tmp_path / 'out')],
              'ingest': ['--input', str(tmp_path / 'raw.jsonl')],
              'status': [], 'reconcile': [], 'forget': ['--user_id', 'user-1'],
              'backfill': ['import', '--source', source, '--from_date', DAY1, '--to_date', DAY1]}
  for command, flags in commands.items():
    args = [flags[0], *lake, *flags[1:]] if command == 'backfill' else [*lake, *flags]
    proc = run_cli(f'pipelines.{command}', *args, check=False)
    assert proc.returncode == 5, (command, proc.stderr)
    assert f'--catalog {shown} could not be read' in proc.stderr, (command, proc.stderr)
    assert 'Traceback' not in proc.stderr and 'pw-SECRET-77' not in proc.stderr + proc.stdout
    assert not os.path.exists(tmp_path / 'out'), command


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
