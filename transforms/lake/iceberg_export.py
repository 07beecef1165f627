"""Iceberg on the export side: a customer's Iceberg table as the destination (`export --format
iceberg`), and what a day of an Iceberg lake gained since a snapshot (`--since_last_export`).

The customer's table (their catalog, their warehouse) holds the export schema
(schemas/export.py) plus the day column, partitioned by day, and is created on first use. The
export's files are written straight into the table's data folder, under a folder of the run
(DATA/RUN_ID/dt=D/, as the lake's workers write theirs), so a rerun never overwrites a file a
snapshot lists; each day then becomes ONE snapshot (iceberg.commit_day): an overwrite of the
day's partition, or, when the lake day only gained files, an append of the new rows' files.

pyiceberg is imported only inside iceberg.py's functions.
"""
import datetime
import typing

from schemas.export import EXPORT_SCHEMA
from transforms.export import MAP_FIELDS
from transforms.lake import iceberg

if typing.TYPE_CHECKING:
  from pyiceberg.table import Table

__all__ = ['TableMismatch', 'dest_table', 'commit', 'Change', 'change_since', 'committed_days']


class TableMismatch(ValueError):
  """The destination table exists with other columns than the export's."""


def dest_table(dest: iceberg.IcebergLake) -> 'Table':
  """The customer's table, created with the export schema on first use; TableMismatch when a
  table of that name holds other columns (the lake's own table, say)."""
  # JSON text columns get no min/max in export files (transforms/export_files.py), none in metadata
  tbl = iceberg.table(dest, dest.table, EXPORT_SCHEMA, no_stats=MAP_FIELDS)
  have = [f.name for f in tbl.schema().fields]
  want = EXPORT_SCHEMA.names + [iceberg.DAY]
  if have != want:
    raise TableMismatch(f'--dest_table {dest.table} has the columns {", ".join(have)}, not the '
                        f'export\'s ({", ".join(want)}): name another table with --dest_table')
  return tbl


def commit(dest: iceberg.IcebergLake, dt: str, paths: list[str], run_id: str,
           before_commit: typing.Callable[[], None], append: bool) -> int | None:
  """Day `dt` of the customer's table becomes the files `paths` (with `append`: gains them),
  in one snapshot; -> its id."""
  return iceberg.commit_day(dest, dest.table, dt, paths, run_id, before_commit, append=append)


class Change(typing.NamedTuple):
  """How a lake day's files differ from those of the snapshot last exported."""
  kind: str            # 'same', 'added' (a superset: streaming appends) or 'replaced'
  files: list[str]     # the files to export: the new ones ('added'), else all the day's
  exported: int        # how many files the snapshot last exported held for the day


def change_since(lake: iceberg.IcebergLake, dt: str, snapshot_id: int | None,
                 files: list[str]) -> Change:
  """Day `dt`'s current `files` (store paths) against those the lake's snapshot `snapshot_id`
  listed for it. A snapshot the table no longer has (expired), or none recorded, counts as a
  replaced day: it is exported whole."""
  now = set(files)
  tbl = iceberg.table(lake)
  if snapshot_id is None or tbl.snapshot_by_id(snapshot_id) is None:
    return Change('replaced', sorted(now), 0)
  before = {iceberg.store_path(f.file_path) for f in iceberg.day_files(tbl, dt, snapshot_id)}
  if now == before:
    return Change('same', [], len(before))
  if now > before:
    return Change('added', sorted(now - before), len(before))
  return Change('replaced', sorted(now), len(before))


def committed_days(lake: iceberg.IcebergLake) -> list[datetime.date]:
  """The days a snapshot of the lake's table committed (each commit names its day)."""
  tbl = iceberg.table(lake)
  days = set()
  snapshot = tbl.current_snapshot()
  while snapshot is not None:
    day = snapshot.summary.get(iceberg.SNAPSHOT_DAY) if snapshot.summary is not None else None
    if day:
      days.add(datetime.date.fromisoformat(day))
    parent = snapshot.parent_snapshot_id
    snapshot = tbl.snapshot_by_id(parent) if parent is not None else None
  return sorted(days)

