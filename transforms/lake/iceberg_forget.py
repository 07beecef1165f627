"""Forgetting users in an Iceberg lake: pipelines/forget.py's lake stage when the lake is an
Iceberg table (transforms/lake/iceberg.py).

A day's files that hold an id are rewritten without those rows and the day is committed as one
overwrite snapshot (its other files stay listed as they are). Iceberg keeps every earlier
snapshot, and each still lists the old files, so time travel would give the rows back: `purge`
then expires every snapshot but the current one with maintain's expire (which deletes the files
only expired snapshots listed: the replaced ones, those of earlier imports of the day, their
manifests) and deletes the day's data files no snapshot ever listed. The day's lock is held
throughout, so no writer of the day has files in flight. Reading the table as of a time before
the request ends with it.
"""
import datetime
import typing

import pyarrow as pa
import pyarrow.compute as pc

from transforms.lake import iceberg, iceberg_maintain
from transforms.lake.commit import write_parquet
from transforms.lake.ledger import relative
from transforms.stores import fs

__all__ = ['Matcher', 'scan', 'rewrite', 'rows_forgotten', 'purge']

Matcher = typing.Callable[[pa.ChunkedArray], pa.Array]   # a column -> a mask of rows to forget


def _root(lake: iceberg.IcebergLake) -> str:
  return iceberg.store_path(lake.warehouse)


def scan(lake: iceberg.IcebergLake, name: str, dt: str, column: str, matches: Matcher) -> dict[str, int]:
  """{file (relative to the warehouse): rows to remove} of the day's files that hold an id."""
  found = {}
  for f in iceberg.day_files(iceberg.table(lake, name), dt):
    path = iceberg.store_path(f.file_path)
    n = pc.sum(matches(fs.read_parquet(path, [column])[column])).as_py() or 0
    if n:
      found[relative(_root(lake), path)] = n
  return found


def rewrite(lake: iceberg.IcebergLake, name: str, dt: str, column: str, matches: Matcher,
            run_id: str, before_commit: typing.Callable[[], None]) -> int:
  """Commits day `dt` of table `name` without the rows `matches` finds; -> the rows removed
  (0 when none is left: a rerun after the commit). The day's record keeps what the day was made
  from, and its rows_forgotten grows."""
  tbl = iceberg.table(lake, name)
  schema = iceberg.file_schema(tbl)
  folder = fs.partition_dir(iceberg.data_root(tbl, run_id), dt)
  kept, removed = [], 0
  for i, f in enumerate(iceberg.day_files(tbl, dt)):
    path = iceberg.store_path(f.file_path)
    rows = fs.read_parquet(path)
    mask = matches(rows[column])
    n = pc.sum(mask).as_py() or 0
    if not n:
      kept.append(path)
      continue
    removed += n
    if n < rows.num_rows:
      file_name = f'forget-{i:05d}.parquet'
      kept.append(write_parquet(rows.filter(pc.invert(mask)).cast(schema), fs.join(folder, file_name),
                                file_name).path)
  if not removed:
    return 0
  day = iceberg.day_manifest(lake, dt, name, tbl)
  record = dict(day['record']) if day else {}
  record.update(pipeline='forget', rows_forgotten=int(record.get('rows_forgotten', 0)) + removed)
  iceberg.commit_day(lake, name, dt, kept, run_id, before_commit, record)
  return removed


def rows_forgotten(lake: iceberg.IcebergLake, name: str, dt: str) -> int:
  day = iceberg.day_manifest(lake, dt, name)
  return int(day['rows_forgotten']) if day else 0


def purge(lake: iceberg.IcebergLake, name: str, dt: str) -> int:
  """Expires every snapshot of table `name` but the current one, deleting the files only they
  listed (iceberg_maintain.expire: never a file of another writer's commit in flight), then
  deletes day `dt`'s data files that no snapshot lists (a killed run's, which may hold the rows
  too). -> files deleted. Run under the day's lock (a writer of the day would have unlisted
  files in flight)."""
  now = datetime.datetime.now(datetime.timezone.utc)
  expired = iceberg_maintain.expire(lake, name, now, retain_last=1, dry_run=False)
  tbl = iceberg.table(lake, name)
  listed = {iceberg.store_path(f.file_path) for f in iceberg.day_files(tbl, dt)}
  data = iceberg.store_path(f'{tbl.location().rstrip("/")}/data')
  stale = [p for p in fs.list_files(data) if f'/{iceberg.DAY}={dt}/' in p and p not in listed]
  fs.delete(stale)
  return expired.files + len(stale)
