"""Upkeep of the Iceberg lake's tables (`./run.sh maintain`, docs/iceberg.md: Maintenance).

- expire: snapshots older than a retention leave the table's metadata, keeping the newest few
  and the current one; the files only expired snapshots listed are deleted. Export reads the run
  and time of a day's commit from its record (iceberg.day_record); for a day committed before
  records were kept, the expiring commit writes the record from its snapshot, so no snapshot is
  kept for them.
- compact: a day's small files (streaming panes, appends) rewritten into files of about a target
  size, as ONE overwrite snapshot that removes exactly those files and adds the new ones. No
  day lock: the commit is optimistic and redone on a newer snapshot only while every file it
  removes is still the day's, so a file another run added meanwhile stays, and a rerun that
  replaced the day wins (the compaction is dropped). A lock would make maintain wait for, or
  stop, a running import or ingest.
- orphans: files under the table's folder that no snapshot and no metadata file names, older
  than an age (a running writer's files are not yet named by any snapshot: the age protects them).

Every step can be a dry run: it reports what it would do and changes nothing.
pyiceberg is imported only inside functions (a Hive run never loads it).
"""
import dataclasses
import datetime
import json
import logging
import time
import typing
import uuid

from transforms.lake import iceberg
from transforms.lake.commit import shard_name, write_parquet
from transforms.stores import fs

if typing.TYPE_CHECKING:
  from pyiceberg.table import Table

__all__ = ['SNAPSHOT_COMPACTED', 'SNAPSHOT_MAINTAIN_RUN', 'SMALL_FRACTION', 'MIN_INPUT_FILES',
           'Contended', 'Action', 'existing', 'expire', 'compact', 'remove_orphans', 'referenced']

SNAPSHOT_COMPACTED = 'eventferry.compacted'   # snapshot summary: the day a compaction rewrote
SNAPSHOT_MAINTAIN_RUN = 'eventferry.maintain_run_id'
SMALL_FRACTION = 0.75   # a file under 3/4 of the target size is small
MIN_INPUT_FILES = 5     # a day is compacted from this many small files on (Iceberg's own default)
LOG = logging.getLogger('eventferry')


class Contended(RuntimeError):
  """Every attempt of a commit met a newer snapshot (a busy table): run maintain again."""


@dataclasses.dataclass
class Action:
  """One line of the report: what a step did (or would do) to a table."""
  table: str
  action: str              # expire | compact | orphans
  files: int = 0           # files deleted (expire, orphans) or rewritten (compact)
  bytes: int = 0
  snapshots: int = 0       # snapshots expired
  dt: str | None = None    # compact: the day
  files_added: int = 0     # compact: the new files
  rows: int = 0            # compact: rows rewritten
  snapshot_id: int | None = None
  message: str = ''

  def line(self, dry_run: bool) -> str:
    verb = 'would ' if dry_run else ''
    if self.action == 'expire':
      text = (f'{verb}expire {self.snapshots} snapshots, {verb}delete {self.files} files '
              f'({self.bytes:,} bytes) only they listed')
    elif self.action == 'compact':
      text = (f'dt={self.dt}: {verb}rewrite {self.files} small files ({self.bytes:,} bytes, '
              f'{self.rows:,} rows) into {self.files_added}')
    else:
      text = f'{verb}remove {self.files} orphan files ({self.bytes:,} bytes)'
    if self.snapshot_id is not None:
      text += f', snapshot {self.snapshot_id}'
    return f'{self.table}: {text}' + (f'; {self.message}' if self.message else '')


def existing(lake: iceberg.IcebergLake, names: list[str]) -> list[str]:
  """Those of the tables `names` the catalog holds (iceberg.table would create the others)."""
  from pyiceberg.exceptions import NoSuchTableError
  catalog, found = iceberg.catalog(lake), []
  for name in names:
    try:
      catalog.load_table(name)
      found.append(name)
    except NoSuchTableError:
      pass
  return found


def _live_files(tbl: 'Table', snapshot, cache: dict) -> set[str]:
  """Every file `snapshot` needs: its manifest list, manifests and live data/delete files."""
  files = {snapshot.manifest_list}
  for manifest in snapshot.manifests(tbl.io):
    files.add(manifest.manifest_path)
    if manifest.manifest_path not in cache:
      cache[manifest.manifest_path] = {e.data_file.file_path
                                       for e in manifest.fetch_manifest_entry(tbl.io)}
    files |= cache[manifest.manifest_path]
  return files


def _sizes(tbl: 'Table', paths: set[str]) -> int:
  """The bytes of `paths` as the store lists them (one listing: manifest lists carry no size)."""
  listed = fs.list_files(iceberg.store_path(tbl.location().rstrip('/')))
  return sum(listed.get(iceberg.store_path(p), 0) for p in paths)


def _kept(tbl: 'Table', older_than: datetime.datetime, retain_last: int) -> set[int]:
  """The snapshots expire keeps: the current one, the newest `retain_last`, every one not older
  than `older_than`, and branch and tag heads."""
  snapshots = sorted(tbl.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
  keep = {s.snapshot_id for s in snapshots[-retain_last:]} if retain_last else set()
  keep |= {ref.snapshot_id for ref in tbl.metadata.refs.values()}
  cutoff = older_than.timestamp() * 1000
  keep |= {s.snapshot_id for s in snapshots if s.timestamp_ms >= cutoff}
  return keep


def _commits_expired(tbl: 'Table', keep: set[int]) -> dict[str, str]:
  """The day records (iceberg.DAY_RECORD) of days committed before records were kept, whose
  commit expire removes: what the snapshot says, kept in the table's properties."""
  newest = {}
  for s in sorted(tbl.snapshots(), key=lambda s: (s.sequence_number or 0, s.timestamp_ms)):
    day = iceberg.snapshot_day(s)
    if day is not None:
      newest[day] = s.snapshot_id
  return {iceberg.DAY_RECORD + day: json.dumps(iceberg.day_record(tbl, day), sort_keys=True)
          for day, sid in newest.items()
          if sid not in keep and iceberg.DAY_RECORD + day not in tbl.properties}


def expire(lake: iceberg.IcebergLake, name: str, older_than: datetime.datetime, retain_last: int,
           dry_run: bool) -> Action:
  """Expires the snapshots of table `name` older than `older_than` (see _kept), then deletes the
  files only they listed. Another commit meanwhile: redone on the newer table."""
  from pyiceberg.exceptions import CommitFailedException
  from pyiceberg.table.update.snapshot import ExpireSnapshots
  for attempt in range(iceberg.COMMIT_ATTEMPTS):
    tbl = iceberg.table(lake, name)
    keep = _kept(tbl, older_than, retain_last)
    gone = [s for s in tbl.snapshots() if s.snapshot_id not in keep]
    cache: dict = {}
    kept_files = set().union(*(_live_files(tbl, s, cache) for s in tbl.snapshots()
                               if s.snapshot_id in keep))
    old_files = set().union(*(_live_files(tbl, s, cache) for s in gone)) - kept_files
    action = Action(name, 'expire', len(old_files), _sizes(tbl, old_files), len(gone))
    if dry_run or not gone:
      return action
    try:
      with tbl.transaction() as tx:   # the records and the expiry: one commit
        records = _commits_expired(tbl, keep)
        if records:
          tx.set_properties(records)
        ExpireSnapshots(tx).by_ids([s.snapshot_id for s in gone]).commit()
    except CommitFailedException as e:
      LOG.info('%s: %s; expiring again (%d)', name, e, attempt + 1)
      time.sleep(0.05 * (attempt + 1))
      continue
    # Files dropped by expired snapshots only: no snapshot written later can name them again.
    fs.delete(iceberg.store_path(p) for p in sorted(old_files))
    return action
  raise Contended(f'{name}: {iceberg.COMMIT_ATTEMPTS} expiries met a newer snapshot each '
                     'time; run maintain again')


def _days(tbl: 'Table') -> dict[str, list]:
  """The current snapshot's data files by day; days with delete files are left out (their rows
  are not the files' rows: the lake writes none, a rewrite here would have to apply them)."""
  days: dict[str, list] = {}
  with_deletes = set()
  if tbl.current_snapshot() is None:
    return days
  for task in tbl.scan().plan_files():
    dt = (datetime.date(1970, 1, 1) + datetime.timedelta(days=task.file.partition[0])).isoformat()
    days.setdefault(dt, []).append(task.file)
    if task.delete_files:
      with_deletes.add(dt)
  return {dt: sorted(files, key=lambda f: f.file_path) for dt, files in days.items()
          if dt not in with_deletes}


def _bins(files: list, target: int) -> list[list]:
  """Small files in path order, packed into groups of about `target` bytes; a group of one file
  is left as it is (rewriting it gains nothing)."""
  bins: list[list] = [[]]
  for f in files:
    if bins[-1] and sum(x.file_size_in_bytes for x in bins[-1]) + f.file_size_in_bytes > target:
      bins.append([])
    bins[-1].append(f)
  return [b for b in bins if len(b) > 1]


def compact(lake: iceberg.IcebergLake, name: str, target: int, run_id: str, dry_run: bool,
            before_commit: typing.Callable[[], None] = lambda: None) -> list[Action]:
  """Rewrites the small files of each day of table `name` that has MIN_INPUT_FILES of them into
  files of about `target` bytes, one snapshot per day. Rows and their values stay as they are
  (the same schema and field ids; rows in the order of the files, by path). `before_commit`
  runs before each commit attempt (tests: another writer's commit meanwhile)."""
  tbl = iceberg.table(lake, name)
  actions = []
  for dt, files in _days(tbl).items():
    small = [f for f in files if f.file_size_in_bytes < target * SMALL_FRACTION]
    bins = _bins(small, target)
    inputs = [f for b in bins for f in b]
    if len(small) < MIN_INPUT_FILES or not bins:
      continue
    action = Action(name, 'compact', len(inputs), sum(f.file_size_in_bytes for f in inputs),
                    dt=dt, files_added=len(bins), rows=sum(f.record_count for f in inputs))
    if not dry_run:
      _compact_day(lake, tbl, name, dt, bins, run_id, action, before_commit)
    actions.append(action)
  return actions


def _compact_day(lake, tbl, name: str, dt: str, bins: list[list], run_id: str, action: Action,
                 before_commit) -> None:
  from pyiceberg.exceptions import CommitFailedException, ValidationException
  from pyiceberg.io.pyarrow import parquet_file_to_data_file
  from pyiceberg.expressions import AlwaysTrue
  from pyiceberg.io.pyarrow import ArrowScan
  from pyiceberg.table import FileScanTask
  schema = iceberg.file_schema(tbl)
  root = fs.partition_dir(iceberg.data_root(tbl, f'compact-{run_id}'), dt)
  # pyiceberg's reader maps the files' columns by field id onto the table's schema, as readers do.
  scan = ArrowScan(tbl.metadata, tbl.io, tbl.schema(), AlwaysTrue())
  written = []
  for i, group in enumerate(bins):
    rows = scan.to_table([FileScanTask(f) for f in group]).cast(schema)
    # A unique name per attempt of the command: a rerun never overwrites a file a snapshot lists.
    file_name = f'{uuid.uuid4().hex[:8]}-{shard_name(i, len(bins))}'
    written.append(write_parquet(rows, fs.join(root, file_name), file_name).path)
  new = [parquet_file_to_data_file(tbl.io, tbl.metadata, iceberg.file_uri(p)) for p in written]
  planned = {f.file_path for b in bins for f in b}
  for attempt in range(iceberg.COMMIT_ATTEMPTS):
    current = {f.file_path: f for f in iceberg.day_files(tbl, dt)}
    if not planned <= current.keys():   # the day was replaced or rewritten meanwhile
      fs.delete(written)
      action.files_added, action.message = 0, 'the day changed meanwhile: left as it is'
      return
    before_commit()
    try:
      with tbl.transaction() as tx:
        with tx.update_snapshot(snapshot_properties={SNAPSHOT_COMPACTED: dt,
                                                     SNAPSHOT_MAINTAIN_RUN: run_id}
                                ).overwrite() as overwrite:
          for path in sorted(planned):
            overwrite.delete_data_file(current[path])
          for f in new:
            overwrite.append_data_file(f)
      snapshot = tbl.current_snapshot()
      action.snapshot_id = snapshot.snapshot_id if snapshot else None
      return
    except (CommitFailedException, ValidationException) as e:   # another commit meanwhile
      LOG.info('%s dt=%s: %s; compacting again (%d)', name, dt, e, attempt + 1)
      time.sleep(0.05 * (attempt + 1))
      tbl = iceberg.table(lake, name)
  fs.delete(written)
  raise Contended(f'{name} dt={dt}: {iceberg.COMMIT_ATTEMPTS} compactions met a newer '
                     'snapshot each time; run maintain again')


def referenced(tbl: 'Table') -> set[str]:
  """Every file the table's metadata names: metadata files (current and logged), statistics,
  and for every snapshot its manifest list, manifests and every file they list (deleted
  entries too: a file is an orphan only when nothing names it)."""
  meta = tbl.metadata
  files = {tbl.metadata_location} | {e.metadata_file for e in meta.metadata_log}
  files |= {s.statistics_path for s in meta.statistics}
  files |= {s.statistics_path for s in meta.partition_statistics}
  seen = set()
  for snapshot in tbl.snapshots():
    files.add(snapshot.manifest_list)
    for manifest in snapshot.manifests(tbl.io):
      if manifest.manifest_path in seen:
        continue
      seen.add(manifest.manifest_path)
      files.add(manifest.manifest_path)
      files |= {e.data_file.file_path
                for e in manifest.fetch_manifest_entry(tbl.io, discard_deleted=False)}
  return {iceberg.store_path(f) for f in files}


def remove_orphans(lake: iceberg.IcebergLake, name: str, older_than: datetime.datetime,
                   dry_run: bool) -> Action:
  """Deletes the files under table `name`'s folder that nothing names and that were last
  written before `older_than` (a store that tells no time keeps its files)."""
  tbl = iceberg.table(lake, name)
  # Listed before the metadata is read: a file committed in between is named, never taken.
  folder = iceberg.store_path(tbl.location().rstrip('/'))
  found = fs.list_dated(folder)
  names = referenced(iceberg.table(lake, name))
  cutoff = older_than.timestamp()
  orphans = {p: size for p, (size, mtime) in found.items()
             if p.startswith(folder + '/') and p not in names and mtime and mtime < cutoff}
  if orphans and not dry_run:
    fs.delete(sorted(orphans))
  return Action(name, 'orphans', len(orphans), sum(orphans.values()))
