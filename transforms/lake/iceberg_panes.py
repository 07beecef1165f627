"""Ingest's commits into the Iceberg lake (`--lake_format iceberg`; docs/iceberg.md).

Ingest's workers write each pane's Parquet files straight into the tables' data folders (under
their run's folder, with the day column and the tables' field ids); then ONE step per day
(transforms/ingest.py: CommitDays) adds them to the table as ONE snapshot:
  - streaming: a snapshot per pane of the day; the one that makes the day complete (every
    shard's on-time pane is in) says so in its summary (`eventferry.complete=true`), even when
    it adds no files; earlier panes say `false`; late panes, `true` again (a complete day stays
    complete);
  - batch: one snapshot of all the run's files of the day, complete; with --replace_days an
    overwrite that also removes the files the day held.
The files are added by their paths (no stream is re-read), and a commit adds only the files the
day does not list yet: a retried step commits nothing twice. A commit that meets a newer snapshot
(another day's commit) is redone from that snapshot, as iceberg.commit_day does.
"""
import dataclasses
import datetime
import logging
import threading
import time
import typing

import pyarrow as pa

from transforms.lake import iceberg
from transforms.stores import fs

__all__ = ['KINDS', 'PaneTables', 'tables', 'Committed', 'held_paths', 'commit_files']

KINDS = ('lake', 'rejected')   # the events table and the dead letters' table
SNAPSHOT_SHARD = 'eventferry.shard'   # streaming: the shard and pane a snapshot added
SNAPSHOT_PANE = 'eventferry.pane'


@dataclasses.dataclass(frozen=True)
class PaneTables:
  """Where ingest writes and commits on an Iceberg lake: plain values, so DoFns can carry them."""
  lake: iceberg.IcebergLake
  roots: dict[str, str]            # kind -> this run's data folder of the table
  schemas: dict[str, pa.Schema]    # kind -> the table's file schema (day column, field ids)

  def name(self, kind: str) -> str:
    return self.lake.table if kind == 'lake' else self.lake.rejected_table

  def directory(self, kind: str, dt: str) -> str:
    """The run's folder of day `dt` in the table's data folder."""
    return fs.partition_dir(self.roots[kind], dt)

  def file_rows(self, kind: str, rows: pa.Table, dt: str) -> pa.Table:
    return iceberg.with_day(rows, dt, self.schemas[kind])


def tables(lake: iceberg.IcebergLake, run_id: str) -> PaneTables:
  """Both tables (created on first use, before any worker writes), as run `run_id` writes them."""
  loaded = {kind: iceberg.table(lake, name) for kind, name in
            (('lake', lake.table), ('rejected', lake.rejected_table))}
  return PaneTables(lake, {k: iceberg.data_root(t, run_id) for k, t in loaded.items()},
                    {k: iceberg.file_schema(t) for k, t in loaded.items()})


@dataclasses.dataclass(frozen=True)
class Committed:
  """The day in the table after a commit (or as it was, when there was nothing to commit)."""
  snapshot_id: int | None   # the day's latest snapshot (None: no snapshot names the day)
  files: int
  bytes: int
  rows_replaced: int = 0    # --replace_days: rows of the files the overwrite removed


class DayListing:
  """The files a table's current snapshot lists for a day, kept per (table, day) in the worker
  and brought up to date from the snapshots committed since: only the manifests those snapshots
  added are read (their ADDED and DELETED entries of the day), where a scan plan reads every
  manifest the day has, one per pane. When the snapshot it knew is gone (expired, or the table
  rolled back), the day is listed afresh."""
  MAX_WALK = 1000   # snapshots to walk back before a fresh listing is cheaper
  MAX_DAYS = 64     # (table, day) listings kept, the least recently used dropped

  def __init__(self):
    self._known: dict[tuple[str, str], tuple[int, dict[str, typing.Any]]] = {}
    self._lock = threading.Lock()

  def files(self, tbl, dt: str) -> list:
    current = tbl.current_snapshot()
    if current is None:
      return []
    key = (tbl.location(), dt)
    with self._lock:
      known = self._known.get(key)
    files = self._since(tbl, dt, current, known) if known else None
    if files is None:
      files = {f.file_path: f for f in iceberg.day_files(tbl, dt, current.snapshot_id)}
    with self._lock:
      self._known.pop(key, None)
      self._known[key] = (current.snapshot_id, files)   # the most recent last
      while len(self._known) > self.MAX_DAYS:   # a streaming job's old days are not written again
        del self._known[next(iter(self._known))]
    return sorted(files.values(), key=lambda f: f.file_path)

  def _since(self, tbl, dt: str, current, known) -> dict | None:
    """The day's files at `current` from those at the known snapshot; None: no path back to it."""
    from pyiceberg.manifest import ManifestContent, ManifestEntryStatus
    known_id, known_files = known
    chain, snapshot = [], current
    while snapshot.snapshot_id != known_id:
      chain.append(snapshot)
      if snapshot.parent_snapshot_id is None or len(chain) > self.MAX_WALK:
        return None
      snapshot = tbl.snapshot_by_id(snapshot.parent_snapshot_id)
      if snapshot is None:
        return None
    day = (datetime.date.fromisoformat(dt) - datetime.date(1970, 1, 1)).days
    files, spec = dict(known_files), tbl.spec().spec_id
    for snapshot in reversed(chain):   # oldest first
      for manifest in snapshot.manifests(tbl.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
          continue
        if manifest.content != ManifestContent.DATA or manifest.partition_spec_id != spec:
          return None   # row-level deletes or another partitioning: the scan plan knows them
        for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=False):
          if entry.snapshot_id != snapshot.snapshot_id or entry.data_file.partition[0] != day:
            continue
          if entry.status == ManifestEntryStatus.ADDED:
            files[entry.data_file.file_path] = entry.data_file
          elif entry.status == ManifestEntryStatus.DELETED:
            files.pop(entry.data_file.file_path, None)
    return files


LISTING = DayListing()


def held_paths(tables_: PaneTables, kind: str, dt: str) -> list[str]:
  """Store paths of the files the table's current snapshot lists for day `dt`."""
  tbl = iceberg.table(tables_.lake, tables_.name(kind))
  return sorted(iceberg.store_path(f.file_path) for f in iceberg.day_files(tbl, dt))


def commit_files(tables_: PaneTables, kind: str, dt: str, paths: list[str], run_id: str, *,
                 complete: bool, replace: bool = False, labels: dict[str, str] | None = None,
                 before_commit: typing.Callable[[], None] = lambda: None) -> Committed:
  """Adds `paths` (store paths) to day `dt` of the table of `kind` as ONE snapshot: an append, or
  with `replace` an overwrite that also removes the day's other files. Files the day lists
  already are not added again; nothing is committed when nothing is new, unless the day must
  become complete (a snapshot of no files that says so). A day that holds no files and gets none
  is not made. `before_commit` runs before each attempt (the lock's fence)."""
  from pyiceberg.exceptions import CommitFailedException, ValidationException
  from pyiceberg.io.pyarrow import parquet_file_to_data_file
  tbl = iceberg.table(tables_.lake, tables_.name(kind))
  uris = sorted(iceberg.file_uri(p) for p in paths)
  data_files: dict[str, typing.Any] = {}
  for attempt in range(iceberg.COMMIT_ATTEMPTS):
    old = LISTING.files(tbl, dt)
    listed = {f.file_path for f in old}
    new = [u for u in uris if u not in listed]
    removed = [f for f in old if f.file_path not in set(uris)] if replace and uris else []
    kept = [f for f in old if f not in removed]
    if new or removed:
      marked = complete or _complete(tbl, dt)
    else:   # only a mark to add, if the day holds files and is not marked complete yet
      marked = complete
      if not (complete and old and not _complete(tbl, dt)):   # a retried step, or nothing to do
        snapshot = iceberg.day_snapshot(tbl, dt)
        return Committed(snapshot.snapshot_id if snapshot else None, len(old),
                         sum(f.file_size_in_bytes for f in old))
    before_commit()
    for u in new:
      if u not in data_files:
        data_files[u] = parquet_file_to_data_file(tbl.io, tbl.metadata, u)
    summary = {iceberg.SNAPSHOT_DAY: dt, iceberg.SNAPSHOT_RUN: run_id,
               iceberg.SNAPSHOT_COMPLETE: 'true' if marked else 'false', **(labels or {})}
    try:
      with tbl.transaction() as tx:
        iceberg.record_day(tx, dt, run_id, {'pipeline': 'ingest', 'complete': marked})
        update = tx.update_snapshot(snapshot_properties=summary)
        with (update.overwrite() if removed else update.fast_append()) as change:
          for f in removed:
            change.delete_data_file(f)
          for u in new:
            change.append_data_file(data_files[u])
      current = tbl.current_snapshot()
      assert current is not None
      files = kept + [data_files[u] for u in new]
      return Committed(current.snapshot_id, len(files), sum(f.file_size_in_bytes for f in files),
                       sum(f.record_count for f in removed))
    except (CommitFailedException, ValidationException) as e:   # another day meanwhile
      logging.getLogger('eventferry').info('dt=%s: %s; committing again (%d)', dt, e, attempt + 1)
      time.sleep(0.05 * (attempt + 1))
      tbl = iceberg.table(tables_.lake, tables_.name(kind))
  raise RuntimeError(f'dt={dt}: {iceberg.COMMIT_ATTEMPTS} commits to {tables_.name(kind)} met a '
                     'newer snapshot each time; rerun the day')


def _complete(tbl, dt: str) -> bool:
  """Whether the day's record says the day is complete (an import's, which says nothing,
  replaced the whole day: complete)."""
  record = iceberg.day_record(tbl, dt)
  return record is not None and record.get('complete', True) is not False
