"""`./run.sh maintain` on an Iceberg lake: days imported by the import (from files written by
pyarrow, pandas, Polars and DuckDB), then many small files per day appended by pyiceberg (the
shape streaming panes leave), then expire, compact and orphan removal. Oracles: pyiceberg's scan
(the whole table, sorted, compared as Arrow) and DuckDB's iceberg extension read before and after;
files on disk listed by os.walk. A concurrent append between compaction's plan and its commit
survives; a rerun of the day meanwhile wins; a dry run changes no byte; one run on S3 (moto).
"""
import datetime
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines import maintain
from schemas.events import LAKE_SCHEMA
from tests.conftest import run_cli
from tests.icebergkit import (D, arrow_table, duckdb_rows, iceberg_import, load, row,
                              warehouse_of, write_day)
from transforms.lake import iceberg, iceberg_maintain

pytestmark = pytest.mark.engine

DAY1, DAY2 = '2023-03-01', '2023-03-02'
DAYS_AGO_4 = datetime.datetime.now().timestamp() - 4 * 86400


def pane(tbl, day: str, first: int, count: int) -> None:
  """`count` new rows of `day` appended by pyiceberg: one small file, one snapshot."""
  start = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.timezone.utc)
  rows = arrow_table([row(day, n, metric_value=D(n) / 4, ts=start + datetime.timedelta(seconds=n))
                      for n in range(first, first + count)])
  rows = rows.append_column('environment', pa.array(['pane'] * count))
  tbl.append(iceberg.with_day(rows.select(LAKE_SCHEMA.names).cast(LAKE_SCHEMA), day,
                              iceberg.file_schema(tbl)))


def every_row(tbl) -> pa.Table:
  """The whole table by pyiceberg, in one order."""
  return tbl.scan().to_arrow().sort_by([('insert_id', 'ascending'), ('ts', 'ascending'),
                                        ('event_key', 'ascending')])


def files_on_disk(folder: str) -> dict[str, tuple[int, int]]:
  return {os.path.join(d, n): (os.stat(os.path.join(d, n)).st_size,
                               os.stat(os.path.join(d, n)).st_mtime_ns)
          for d, _, names in os.walk(folder) for n in names}


def lake_with_panes(tmp_path, store_flags=(), where='local', request=None):
  """DAY1 imported, then 6 panes of it; DAY2 imported, then 1 pane."""
  source = str(tmp_path / 'bucket')
  warehouse = str(tmp_path / 'wh') if where == 'local' else warehouse_of(where, tmp_path, request)[0]
  flags = ['--catalog', f'sqlite:///{tmp_path}/catalog.db', *store_flags]
  write_day(source, DAY1, 1, 40)
  write_day(source, DAY2, 100, 20)
  for day in (DAY1, DAY2):
    iceberg_import(source, day, warehouse, flags)
  tbl = load(warehouse, flags)
  for i in range(6):
    pane(tbl, DAY1, 1000 + 10 * i, 10)
  pane(tbl, DAY2, 2000, 5)
  return source, warehouse, flags


def run_maintain(warehouse: str, flags: list[str], *extra: str):
  return run_cli('pipelines.maintain', '--lake', warehouse, *flags, *extra)


def test_compaction_rewrites_the_small_files_of_a_day_and_keeps_every_row(tmp_path, duckdb_iceberg):
  _, warehouse, flags = lake_with_panes(tmp_path)
  tbl = load(warehouse, flags)
  before, before_duck = every_row(tbl), duckdb_rows(duckdb_iceberg, tbl)
  day1 = {f.file_path for f in iceberg.day_files(tbl, DAY1)}
  day2 = {f.file_path for f in iceberg.day_files(tbl, DAY2)}
  assert len(day1) >= 7 and len(day2) < iceberg_maintain.MIN_INPUT_FILES
  proc = run_maintain(warehouse, flags, '--compact', '--target_file_mb', '1',
                      '--expire_older_than', 'off')
  assert f'dt={DAY1}: rewrite {len(day1)} small files' in proc.stdout
  tbl = load(warehouse, flags)
  after_day1 = {f.file_path for f in iceberg.day_files(tbl, DAY1)}
  assert len(after_day1) == 1 and not after_day1 & day1
  assert {f.file_path for f in iceberg.day_files(tbl, DAY2)} == day2   # too few to compact
  assert every_row(tbl).equals(before)                                  # every value, every row
  assert duckdb_rows(duckdb_iceberg, tbl) == before_duck
  snapshot = tbl.current_snapshot()
  assert snapshot.summary[iceberg_maintain.SNAPSHOT_COMPACTED] == DAY1
  assert int(snapshot.summary['deleted-data-files']) == len(day1)
  assert int(snapshot.summary['added-data-files']) == 1
  # The day's commit is still the import's: export does not take compaction for a new commit.
  lake = _lake(warehouse, flags)
  manifest = iceberg.day_manifest(lake, DAY1)
  assert manifest['run_id'] == _import_run_of(tbl, DAY1)
  assert manifest['files'] == sorted(iceberg.store_path(p) for p in after_day1)
  run_id = proc.stdout.split('maintain run ')[1].split(':')[0]
  report = json.loads(open(maintain.report_path(warehouse, run_id)).read())
  assert [(a['table'], a['action'], a['dt'], a['files'], a['files_added'], a['snapshot_id'])
          for a in report['actions']] == [(iceberg.DEFAULT_TABLE, 'compact', DAY1, len(day1), 1,
                                           snapshot.snapshot_id)]
  assert report['dry_run'] is False and report['pipeline'] == 'maintain'
  # Compacted already: a second run finds nothing to do.
  again = run_maintain(warehouse, flags, '--compact', '--target_file_mb', '1', '--expire_older_than', 'off')
  assert 'rewrite' not in again.stdout
  assert load(warehouse, flags).current_snapshot().snapshot_id == snapshot.snapshot_id


def _lake(warehouse: str, flags: list[str]) -> iceberg.IcebergLake:
  from apache_beam.options.pipeline_options import PipelineOptions
  return iceberg.from_options(PipelineOptions(flags), warehouse)


def _import_run_of(tbl, day: str) -> str:
  runs = [s for s in tbl.snapshots() if s.summary[iceberg.SNAPSHOT_DAY] == day]
  return runs[-1].summary[iceberg.SNAPSHOT_RUN]


def test_a_file_appended_between_plan_and_commit_survives(tmp_path, duckdb_iceberg):
  _, warehouse, flags = lake_with_panes(tmp_path)
  lake = _lake(warehouse, flags)
  calls = []

  def another_writer():
    if not calls:
      pane(load(warehouse, flags), DAY1, 5000, 7)
    calls.append(1)

  planned = {f.file_path for f in iceberg.day_files(load(warehouse, flags), DAY1)}
  [action] = iceberg_maintain.compact(lake, lake.table, 10**6, 'run-x', False, another_writer)
  tbl = load(warehouse, flags)
  after = {f.file_path for f in iceberg.day_files(tbl, DAY1)}
  assert len(calls) == 2 and action.snapshot_id == tbl.current_snapshot().snapshot_id
  assert len(after) == 2 and not after & planned   # the compacted file and the late pane
  ids = set(pc.unique(tbl.scan(row_filter=f"dt = '{DAY1}'").to_arrow()['insert_id']).to_pylist())
  assert {row(DAY1, n)['insert_id'] for n in range(5000, 5007)} <= ids
  assert len(ids) == 40 + 60 + 7
  assert tbl.scan(row_filter=f"dt = '{DAY1}'").to_arrow().num_rows == 40 + 60 + 7
  assert {r[-1] for r in duckdb_rows(duckdb_iceberg, tbl)} == {DAY1, DAY2}


def test_a_rerun_of_the_day_between_plan_and_commit_wins(tmp_path):
  source, warehouse, flags = lake_with_panes(tmp_path)
  lake = _lake(warehouse, flags)

  def rerun():
    iceberg_import(source, DAY1, warehouse, flags)

  [action] = iceberg_maintain.compact(lake, lake.table, 10**6, 'run-y', False, rerun)
  assert action.files_added == 0 and 'changed meanwhile' in action.message
  tbl = load(warehouse, flags)
  assert tbl.scan(row_filter=f"dt = '{DAY1}'").to_arrow().num_rows == 40   # the rerun's rows
  assert tbl.current_snapshot().summary[iceberg.SNAPSHOT_DAY] == DAY1
  assert not [p for p in files_on_disk(warehouse) if 'compact-run-y' in p]   # its files removed


def test_expire_keeps_what_it_must_and_deletes_what_it_may(tmp_path, duckdb_iceberg):
  source, warehouse, flags = lake_with_panes(tmp_path)
  tbl = load(warehouse, flags)
  first_day1 = {iceberg.store_path(f.file_path) for f in iceberg.day_files(tbl, DAY1)}
  os.remove(os.path.join(source, f'dt={DAY1}', 'polars.parquet'))   # the source day changed
  first_day2 = {iceberg.store_path(f.file_path) for f in iceberg.day_files(tbl, DAY2)}
  os.remove(os.path.join(source, f'dt={DAY2}', 'polars.parquet'))
  for day in (DAY1, DAY2):   # reruns replace both days (and their panes)
    iceberg_import(source, day, warehouse, flags)
  pane(load(warehouse, flags), DAY2, 3000, 3)
  tbl = load(warehouse, flags)
  before, before_duck = every_row(tbl), duckdb_rows(duckdb_iceberg, tbl)
  live = {iceberg.store_path(t.file.file_path) for t in tbl.scan().plan_files()}
  snapshots = {s.snapshot_id for s in tbl.snapshots()}
  day1_commit = max((s for s in tbl.snapshots() if s.summary[iceberg.SNAPSHOT_DAY] == DAY1),
                    key=lambda s: s.sequence_number)
  day2_commit = max((s for s in tbl.snapshots() if s.summary[iceberg.SNAPSHOT_DAY] == DAY2),
                    key=lambda s: s.sequence_number)
  on_disk_before = files_on_disk(warehouse)
  dry = run_maintain(warehouse, flags, '--expire_older_than', '0s', '--retain_last', '1', '--dry_run')
  proc = run_maintain(warehouse, flags, '--expire_older_than', '0s', '--retain_last', '1')
  deleted = on_disk_before.keys() - files_on_disk(warehouse).keys()
  line = (f'{iceberg.DEFAULT_TABLE}: expire 11 snapshots, delete {len(deleted)} files '
          f'({sum(on_disk_before[p][0] for p in deleted):,} bytes) only they listed')
  assert line in proc.stdout.splitlines()
  assert line.replace('expire', 'would expire').replace('delete', 'would delete') in dry.stdout
  tbl = load(warehouse, flags)
  assert [s.snapshot_id for s in tbl.snapshots()] == [tbl.current_snapshot().snapshot_id]
  assert len(snapshots) == 12
  on_disk = set(files_on_disk(warehouse))
  assert live <= on_disk                       # every file a reader needs is there
  assert first_day1 and not first_day1 & on_disk   # the replaced imports' files are gone
  assert first_day2 and not first_day2 & on_disk
  assert every_row(tbl).equals(before)
  assert duckdb_rows(duckdb_iceberg, tbl) == before_duck
  # Export still finds who committed each day and when, though those snapshots are gone.
  for day, commit in ((DAY1, day1_commit), (DAY2, day2_commit)):
    manifest = iceberg.day_manifest(_lake(warehouse, flags), day)
    assert manifest['run_id'] == commit.summary[iceberg.SNAPSHOT_RUN]
    # the day's record holds the committing client's clock, read just before its snapshot
    at = datetime.datetime.fromtimestamp(commit.timestamp_ms / 1000, datetime.timezone.utc)
    assert abs(datetime.datetime.fromisoformat(manifest['committed_at']) - at) < datetime.timedelta(seconds=30)
    assert manifest['rows'] == tbl.scan(row_filter=f"dt = '{day}'").to_arrow().num_rows
  assert iceberg.day_manifest(_lake(warehouse, flags), '2023-03-03') is None


def test_orphans_go_only_past_their_age(tmp_path, duckdb_iceberg):
  _, warehouse, flags = lake_with_panes(tmp_path)
  tbl = load(warehouse, flags)
  before = duckdb_rows(duckdb_iceberg, tbl)
  some = iceberg.store_path(iceberg.day_files(tbl, DAY1)[0].file_path)
  data = os.path.dirname(iceberg.data_root(tbl, 'x'))
  old, fresh = (os.path.join(data, run, f'dt={DAY1}', 'part-00000-of-00001.parquet')
                for run in ('killed-old', 'killed-now'))
  for path in (old, fresh):
    os.makedirs(os.path.dirname(path))
    with open(some, 'rb') as src, open(path, 'wb') as dst:
      dst.write(src.read())
  for path in files_on_disk(warehouse):   # every file old: only the metadata keeps them
    if path != fresh:
      os.utime(path, (DAYS_AGO_4, DAYS_AGO_4))
  referenced = files_on_disk(warehouse).keys() - {old, fresh}
  proc = run_maintain(warehouse, flags, '--expire_older_than', 'off', '--remove_orphans')
  assert f'{iceberg.DEFAULT_TABLE}: remove 1 orphan files ({os.path.getsize(some):,} bytes)' \
      in proc.stdout
  left = set(files_on_disk(warehouse))
  assert fresh in left and old not in left
  assert referenced <= left
  assert duckdb_rows(duckdb_iceberg, load(warehouse, flags)) == before


def test_dry_run_changes_nothing(tmp_path):
  _, warehouse, flags = lake_with_panes(tmp_path)
  orphan = os.path.join(iceberg.store_path(load(warehouse, flags).location()), 'data', 'stray.parquet')
  with open(orphan, 'wb') as f:
    f.write(b'x' * 10)
  for path in files_on_disk(warehouse):
    os.utime(path, (DAYS_AGO_4, DAYS_AGO_4))
  before = files_on_disk(warehouse)
  catalog_db = os.stat(tmp_path / 'catalog.db').st_mtime_ns
  proc = run_maintain(warehouse, flags, '--dry_run', '--compact', '--target_file_mb', '1',
                      '--expire_older_than', '0s', '--retain_last', '1', '--remove_orphans')
  assert 'would expire' in proc.stdout and f'dt={DAY1}: would rewrite' in proc.stdout
  assert 'would remove 1 orphan files (10 bytes)' in proc.stdout
  assert 'dry run: nothing was changed' in proc.stdout
  assert files_on_disk(warehouse) == before
  assert os.stat(tmp_path / 'catalog.db').st_mtime_ns == catalog_db


def test_a_wrong_flag_or_table_is_one_line_and_exit_2(tmp_path):
  flags = ['--lake', str(tmp_path / 'wh'), '--catalog', f'sqlite:///{tmp_path}/catalog.db']
  for extra, words in [([], '--table eventferry.events is not in --catalog'),
                       (['--expire_older_than', 'weekly'], '--expire_older_than'),
                       (['--retain_last', '0'], '--retain_last 0'),
                       (['--catalog', 'mysql://x'], 'is not a catalog')]:
    proc = run_cli('pipelines.maintain', *flags, *extra, check=False)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and 'Traceback' not in proc.stderr
  unreachable = run_cli('pipelines.maintain', '--lake', str(tmp_path / 'wh'), '--catalog',
                        'postgresql://ferry:pw-SECRET-77@127.0.0.1:1/ferry', check=False)
  assert unreachable.returncode == 5 and 'Traceback' not in unreachable.stderr
  assert 'postgresql://ferry:***@127.0.0.1:1/ferry could not be read' in unreachable.stderr
  assert 'pw-SECRET-77' not in unreachable.stderr + unreachable.stdout


@pytest.mark.servers
def test_maintain_on_an_s3_warehouse(tmp_path, request, duckdb_iceberg):
  store = request.getfixturevalue('s3_store')
  _, warehouse, flags = lake_with_panes(tmp_path, store.flags, 's3', request)
  s3 = warehouse_of('s3', tmp_path, request)[2]
  tbl = load(warehouse, flags)
  before, before_duck = every_row(tbl), duckdb_rows(duckdb_iceberg, tbl, s3)
  small = {f.file_path for f in iceberg.day_files(tbl, DAY1)}
  from transforms.stores import fs
  stray = f'{iceberg.store_path(tbl.location())}/data/killed/dt={DAY1}/part-00000-of-00001.parquet'
  fs.write_bytes(stray, b'y' * 7)
  proc = run_maintain(warehouse, flags, '--compact', '--target_file_mb', '1',
                      '--expire_older_than', '0s', '--retain_last', '1',
                      '--remove_orphans', '--orphan_older_than', '0s')
  assert f'dt={DAY1}: rewrite {len(small)} small files' in proc.stdout
  assert 'remove 1 orphan files (7 bytes)' in proc.stdout
  tbl = load(warehouse, flags)
  assert len(iceberg.day_files(tbl, DAY1)) == 1
  assert every_row(tbl).equals(before)
  assert duckdb_rows(duckdb_iceberg, tbl, s3) == before_duck
  left = fs.list_files(iceberg.store_path(tbl.location()))
  assert not small & set(left) and stray not in left   # replaced, expired, deleted
  fresh = stray.replace('killed', 'running')
  fs.write_bytes(fresh, b'z' * 3)   # a writer's file not yet committed: the default age keeps it
  again = run_maintain(warehouse, flags, '--expire_older_than', 'off', '--remove_orphans')
  assert 'remove 0 orphan files' in again.stdout and fs.exists(fresh)
  assert fs.exists(maintain.report_path(warehouse, proc.stdout.split('maintain run ')[1].split(':')[0]))


@pytest.mark.servers
def test_a_gcs_warehouse_imports_reads_back_and_is_maintained(tmp_path, request):
  """pyiceberg's pyarrow file IO against gcp-storage-emulator (docs/iceberg.md: GCS)."""
  from pyarrow import fs as pafs
  import pyarrow.parquet as pq
  from tests.icebergkit import hive_import, hive_rows
  store = request.getfixturevalue('gcs_store')
  source, hive = str(tmp_path / 'bucket'), str(tmp_path / 'hive')
  warehouse = store.url(os.path.basename(str(tmp_path)), 'warehouse')
  flags = ['--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 40)
  hive_import(source, DAY1, hive)
  iceberg_import(source, DAY1, warehouse, flags)
  tbl = load(warehouse, flags)
  for i in range(5):
    pane(tbl, DAY1, 1000 + 10 * i, 10)
  tbl = load(warehouse, flags)
  assert tbl.location().startswith('gs://ferry/')
  before = every_row(tbl)
  assert before.num_rows == 90
  # The data files as another reader finds them: pyarrow's own GCS client, anonymous.
  gcs = pafs.GcsFileSystem(anonymous=True, scheme='http',
                           endpoint_override=store.env['STORAGE_EMULATOR_HOST'].split('//')[1])
  imported = [f.file_path for f in iceberg.day_files(tbl, DAY1) if '/data/dt=' not in f.file_path]
  direct = pa.concat_tables(pq.read_table(p.removeprefix('gs://'), filesystem=gcs) for p in imported)
  assert direct.num_rows == 40
  assert set(direct['insert_id'].to_pylist()) == {r[0] for r in hive_rows(hive, [DAY1])}
  proc = run_maintain(warehouse, flags, '--compact', '--target_file_mb', '1',
                      '--expire_older_than', '0s', '--retain_last', '1')
  assert f'dt={DAY1}: rewrite 6 small files' in proc.stdout
  tbl = load(warehouse, flags)
  assert len(iceberg.day_files(tbl, DAY1)) == 1 and len(tbl.snapshots()) == 1
  assert every_row(tbl).equals(before)


def _export_lines(warehouse: str, flags: list[str], dest: str) -> list[str]:
  from pipelines import export_events, options
  assert options.main_guard(export_events.run, [
      '--lake', warehouse, '--lake_format', 'iceberg', *flags, '--date', DAY1, '--dest', dest,
      '--format', 'jsonl']) == 0
  folder = os.path.join(dest, f'dt={DAY1}')
  return sorted(line for n in os.listdir(folder) if not n.startswith('_')
                for line in open(os.path.join(folder, n)).read().splitlines())


def test_an_export_after_maintain_writes_the_same_rows(tmp_path):
  _, warehouse, flags = lake_with_panes(tmp_path)
  before = _export_lines(warehouse, flags, str(tmp_path / 'before'))
  run_maintain(warehouse, flags, '--compact', '--target_file_mb', '1', '--expire_older_than', '0s',
               '--retain_last', '1', '--remove_orphans', '--orphan_older_than', '0s')
  assert len(load(warehouse, flags).snapshots()) == 1
  after = _export_lines(warehouse, flags, str(tmp_path / 'after'))
  assert after == before and len(before) == 40 + 60


def test_a_compaction_stopped_before_its_commit_then_run_again(tmp_path, duckdb_iceberg):
  _, warehouse, flags = lake_with_panes(tmp_path)
  lake = _lake(warehouse, flags)
  tbl = load(warehouse, flags)
  before, before_duck, snapshot = every_row(tbl), duckdb_rows(duckdb_iceberg, tbl), tbl.current_snapshot()

  def killed():
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    iceberg_maintain.compact(lake, lake.table, 10**6, 'run-killed', False, killed)
  tbl = load(warehouse, flags)
  assert tbl.current_snapshot().snapshot_id == snapshot.snapshot_id   # nothing committed
  left = [p for p in files_on_disk(warehouse) if 'compact-run-killed' in p]
  assert left   # its files, named by no snapshot: orphans
  run_maintain(warehouse, flags, '--compact', '--target_file_mb', '1', '--expire_older_than', 'off')
  tbl = load(warehouse, flags)
  assert len(iceberg.day_files(tbl, DAY1)) == 1
  assert every_row(tbl).equals(before) and duckdb_rows(duckdb_iceberg, tbl) == before_duck
  for path in left:
    os.utime(path, (DAYS_AGO_4, DAYS_AGO_4))
  proc = run_maintain(warehouse, flags, '--expire_older_than', 'off', '--remove_orphans')
  assert f'remove {len(left)} orphan files' in proc.stdout
  assert not [p for p in files_on_disk(warehouse) if 'compact-run-killed' in p]
  assert every_row(load(warehouse, flags)).equals(before)


def test_two_maintain_runs_at_once(tmp_path):
  import threading
  _, warehouse, flags = lake_with_panes(tmp_path)
  lake = _lake(warehouse, flags)
  before = every_row(load(warehouse, flags))
  results, both_planned = {}, threading.Barrier(2)

  def one(name):
    results[name] = iceberg_maintain.compact(lake, lake.table, 10**6, name, False,
                                             lambda: both_planned.wait(30) if name not in results else None)

  threads = [threading.Thread(target=one, args=(n,)) for n in ('run-a', 'run-b')]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  [a], [b] = results['run-a'], results['run-b']
  assert sorted([a.files_added, b.files_added]) == [0, 1]   # one compacted, the other saw it
  tbl = load(warehouse, flags)
  assert len(iceberg.day_files(tbl, DAY1)) == 1
  assert every_row(tbl).equals(before)
  loser = 'run-a' if a.files_added == 0 else 'run-b'
  assert not [p for p in files_on_disk(warehouse) if f'compact-{loser}' in p]
