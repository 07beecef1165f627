"""Lake days -> export files at the destination, committed day by day: the export's PTransforms.

`StageExportFiles` turns each committed lake file of a planned day into export files under the
destination's staging (or, for profile exports, each day's latest profile per user into one file);
`CommitExportDays` commits each planned day into its layout's folder with `commit_partition`,
also a day with no rows (a zero-file manifest); `RecordExport` writes the export history, removes
the staging and releases the locks, as the job's last step. The plan (`ExportPlan`) is made at
launch by pipelines/export_events.py.
"""
import dataclasses
import datetime
import functools
import json
import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from schemas.export import EXPORT_SCHEMA, PROFILE_SCHEMA
from transforms import progress
from transforms.export import Format, latest_profiles, profile_rows, select, to_export, to_profile_export
from transforms.export_files import SLICE_ROWS, ExportFiles, ordered
from transforms.lake import history, iceberg, iceberg_export, locks
from transforms.lake.commit import checkpoint, commit_partition, manifest_for
from transforms.lake.iceberg import DAY, as_lake
from transforms.lake.layout import Layout, day_values
from transforms.lake.names import MANIFEST, STAGING_DIR, SUCCESS
from transforms.stores import fs
from transforms.stores.fs import partition_dir

__all__ = ['PIPELINE', 'ExportPlan', 'StageExportFiles', 'CommitExportDays', 'RecordExport',
           'export_files', 'lake_slices', 'split_rows', 'fence_of', 'record_export',
           'dest_folder', 'target_of', 'snapshot_ids', 'marker', 'delivery']

PIPELINE = 'export'


@dataclasses.dataclass
class ExportPlan:
  run_id: str
  lake: str
  dest: str
  fmt: Format
  events: list[str]
  exclude: list[str]
  environment: str | None
  files: dict[str, list[str]]     # dt -> committed lake files, from the day's manifest
  lake_commits: dict[str, dict]   # dt -> the lake manifest's run_id and committed_at
  max_rows: int | None
  max_bytes: int | None
  kind: str
  state: str
  layout: Layout
  dataset: str
  export_time: str
  ids: dict[str, str]             # request_id, database_id (flags given)
  warnings: list[str] = dataclasses.field(default_factory=list)   # told at plan, in the report
  break_lock: str | None = None   # a dead run whose locks this one takes over
  locks: list[str] = dataclasses.field(default_factory=list)   # released by the job's last step
  # run-scoped layouts (claim_folders): dt -> the minute whose folder the day claimed, and
  # dt -> the folders earlier runs of the day claimed, which the day's commit removes
  export_times: dict[str, str] = dataclasses.field(default_factory=dict)
  replaces: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  flags: dict = dataclasses.field(default_factory=dict)   # the flags that redo a delivery
  delivered_to: str = ''   # dest in one spelling (options.normal_path), as deliveries record it
  # --since_last_export from an Iceberg lake: dt -> how many lake files the day's last export
  # read, for days whose `files` are only those the lake day gained since (added to the export)
  appends: dict[str, int] = dataclasses.field(default_factory=dict)
  # --format iceberg: the customer's table, where this run writes its files (DATA/RUN_ID), and
  # their Arrow schema (the export columns, the day, Iceberg field ids)
  iceberg_dest: iceberg.IcebergLake | None = None
  dest_root: str = ''
  dest_schema: pa.Schema | None = None

  def day_values(self, dt: str) -> dict:
    return day_values(dt, self.dataset, self.ids, self.run_id,
                      self.export_times.get(dt, self.export_time))

  @property
  def staging(self) -> str:
    return fs.join(self.dest, STAGING_DIR, self.run_id)

  @property
  def format_name(self) -> str:
    return 'iceberg' if self.iceberg_dest is not None else self.fmt.name

  def rows_of(self, dt: str) -> typing.Callable[[pa.Table], pa.Table]:
    """Lake rows of day `dt` -> rows of its export files."""
    if self.dest_schema is None:
      return functools.partial(to_export, dt=dt)
    return functools.partial(_iceberg_rows, dt=dt, schema=self.dest_schema)

  def unit(self, dt: str) -> str:
    """The day's commit unit as one path segment: its lock and its staging folder."""
    return self.layout.unit(self.day_values(dt)).replace('/', '__')


def _iceberg_rows(lake: pa.Table, dt: str, schema: pa.Schema) -> pa.Table:
  return iceberg.with_day(to_export(lake, dt), dt, schema)


class _PlanFn(beam.DoFn):
  """A DoFn configured by the export plan (plain values, pickled to workers)."""

  def __init__(self, p: ExportPlan):
    self._p = p


def export_files(p: ExportPlan, dt: str, index: int, count: int, split: dict | None = None,
                 schema: pa.Schema = EXPORT_SCHEMA) -> ExportFiles:
  """The staged files of shard `index` of `count` (in chunks when a size limit is set), under
  the layout's names. Files of an Iceberg table go straight into the run's own data folder."""
  values = {**p.day_values(dt), 'count': f'{count:05d}', 'ext': p.fmt.extension, **(split or {})}
  folder = target_of(p, dt) if p.iceberg_dest else fs.join(p.staging, p.unit(dt))

  def place(c: int) -> tuple[str, str]:
    label = f'{index:05d}-{c:03d}' if (p.max_rows or p.max_bytes) else f'{index:05d}'
    name = p.layout.file_path({**values, 'index': label})
    return name, fs.join(folder, name)
  return ExportFiles(p.fmt, p.dest_schema or schema, place, p.max_rows, p.max_bytes)


def lake_slices(lake: pq.ParquetFile, p: ExportPlan):
  """({'hh': .., 'event': ..}, iterator of lake rows) per file the layout makes of one lake file.
  Without {hh}/{event} the rows stream through a batch at a time; with them the file is read
  whole, since each hour or event name is its own file."""
  if not (p.layout.by_hour or p.layout.by_event):
    yield {}, (select(as_lake(pa.Table.from_batches([b])), p.events, p.exclude, p.environment)
               for b in lake.iter_batches(batch_size=SLICE_ROWS))
    return
  rows = select(as_lake(lake.read()), p.events, p.exclude, p.environment)
  for split, part in split_rows(rows, p.layout):
    yield split, (part.slice(i, SLICE_ROWS) for i in range(0, part.num_rows, SLICE_ROWS))


class _ExportFile(_PlanFn):
  """(dt, index, count, lake file) -> (dt, StagedFile) for files with rows to export."""
  rows = Metrics.counter('eventferry.export', 'rows_exported')

  def process(self, element: tuple[str, int, int, str]):
    dt, index, count, path = element
    p = self._p
    with fs.open_read(path) as f:
      for split, slices in lake_slices(pq.ParquetFile(f), p):
        files = export_files(p, dt, index, count, split)
        files.write_all(ordered(p.rows_of(dt), slices))
        for staged in files.close():
          self.rows.inc(staged.rows)
          progress.advance(staged.rows)
          yield dt, staged


class _CommitExportDay(_PlanFn):
  """(dt, {'files': [StagedFile], 'day': [...]}) -> (dt, rows, files, bytes) after the commit."""

  def process(self, element):
    dt, parts = element
    p = self._p
    staged = list(parts['files'])
    target = target_of(p, dt)
    schema = PROFILE_SCHEMA if p.kind == 'profiles' else EXPORT_SCHEMA
    earlier = p.replaces.get(dt, [])
    fence, append = fence_of(p, dt), dt in p.appends
    fs.delete(fs.join(folder, SUCCESS) for folder in earlier)   # unpublished first
    snapshot = {}
    if p.iceberg_dest is not None:   # the table's snapshot first, then the export's manifest
      checkpoint('before_snapshot', target)
      snapshot['snapshot_id'] = iceberg_export.commit(
          p.iceberg_dest, dt, [f.path for f in staged], p.run_id,
          lambda: fence.check('committing the table\'s snapshot', target) if fence else None,
          append)
    # Rows added to a day of files: its folder keeps its files, the manifest lists them all.
    append_via = (fs.join(p.staging, p.unit(dt), MANIFEST)
                  if append and p.iceberg_dest is None else None)
    commit_partition(target, staged, manifest_for(staged, run_id=p.run_id, pipeline=PIPELINE,
                                                  source=partition_dir(p.lake, dt),
                                                  partition=target, schema=schema,
                                                  rows_added=sum(f.rows for f in staged) if append
                                                  else None,
                                                  **snapshot_of(p, dt), **snapshot),
                     p.layout.markers(p.day_values(dt)), fence=fence, append_via=append_via)
    for folder in earlier:   # the day's exports by earlier runs: this one replaces them
      fs.delete_tree(folder)
      history.unclaim(p.state, folder)
    yield dt, sum(f.rows for f in staged), len(staged), sum(f.bytes for f in staged)


def snapshot_of(p: ExportPlan, dt: str) -> dict:
  """An Iceberg lake's snapshot the day was read from, for the export manifest."""
  snapshot = p.lake_commits.get(dt, {}).get('lake_snapshot_id')
  return {'lake_snapshot_id': snapshot} if snapshot is not None else {}


def fence_of(p: ExportPlan, dt: str) -> locks.Fence | None:
  """The lock the day's commit must still hold (lock_days took it), if this run took one."""
  path = locks.lock_path(p.state, p.layout.unit(p.day_values(dt)))
  return locks.Fence(path, p.run_id) if path in p.locks else None


def split_rows(table, layout: Layout):
  """({'hh': .., 'event': ..}, rows) per hour and/or event name the file template names."""
  if table.num_rows == 0:
    return
  keys = {}
  if layout.by_hour:
    keys['hh'] = pc.utf8_lpad(pc.cast(pc.hour(table['ts']), pa.string()), 2, '0')
  if layout.by_event:
    keys['event'] = table['event_key']
  if not keys:
    yield {}, table
    return
  combos = pa.table(keys).group_by(list(keys)).aggregate([]).sort_by(
      [(k, 'ascending') for k in keys]).to_pylist()
  for combo in combos:
    mask = None
    for k, v in combo.items():
      m = pc.equal(keys[k], v)
      mask = m if mask is None else pc.and_(mask, m)
    yield combo, table.filter(mask)


class _LatestProfiles(_PlanFn):
  """(dt, lake file) -> (dt, that file's latest profile per user)."""

  def process(self, element: tuple[str, str]):
    dt, path = element
    with fs.open_read(path) as f:
      lake = pq.ParquetFile(f)
      columns = ['ts', 'environment', 'event_key', 'identifiers', 'insert_id', 'user_properties']
      day = [DAY] if DAY in lake.schema_arrow.names else []   # an Iceberg lake's file
      lake = as_lake(lake.read(columns=columns + day))
    yield dt, latest_profiles(profile_rows(select(lake, [], [], self._p.environment)))


class _WriteProfiles(_PlanFn):
  """(dt, [partial profiles]) -> (dt, StagedFile) for the merged, latest profiles."""

  def process(self, element):
    dt, partials = element
    p = self._p
    files = export_files(p, dt, 0, 1, schema=PROFILE_SCHEMA)
    files.write(to_profile_export(latest_profiles(pa.concat_tables(list(partials))), dt))
    for staged in files.close():
      yield dt, staged


class StageExportFiles(beam.PTransform):
  """The plan's lake files -> (dt, StagedFile) per export file staged under p.staging."""

  def __init__(self, p: ExportPlan):
    super().__init__()
    self._p = p

  def expand(self, pbegin):
    p = self._p
    # Files added to a day's export are numbered after those the last export read.
    work = [(dt, p.appends.get(dt, 0) + i, p.appends.get(dt, 0) + len(files), path)
            for dt, files in p.files.items() for i, path in enumerate(files)]
    spread = (pbegin
              | 'PlanFiles' >> beam.Create(work)
              | 'SpreadFiles' >> beam.Reshuffle())
    if p.kind == 'profiles':
      return (spread
              | 'DayAndFile' >> beam.Map(lambda work: (work[0], work[3]))
              | 'ReadProfiles' >> beam.ParDo(_LatestProfiles(p))
              | 'GatherProfiles' >> beam.GroupByKey()
              | 'WriteProfiles' >> beam.ParDo(_WriteProfiles(p)))
    return spread | 'ExportFile' >> beam.ParDo(_ExportFile(p))


class CommitExportDays(beam.PTransform):
  """(dt, StagedFile) -> (dt, rows, files, bytes) per planned day, once the day is committed;
  a planned day without staged files is committed empty."""

  def __init__(self, p: ExportPlan):
    super().__init__()
    self._p = p

  def expand(self, staged):
    days = staged.pipeline | 'PlannedDays' >> beam.Create([(dt, None) for dt in self._p.files])
    return ({'files': staged, 'day': days}
            | 'JoinDay' >> beam.CoGroupByKey()
            | 'Commit' >> beam.ParDo(_CommitExportDay(self._p)))


class RecordExport(beam.PTransform):
  """The committed days -> the export history, staging removed, locks released (record_export)."""

  def __init__(self, p: ExportPlan):
    super().__init__()
    self._p = p

  def expand(self, committed):
    return (committed
            | 'CollectDays' >> beam.combiners.ToList()
            | 'Record' >> beam.Map(record_export, self._p))


def record_export(committed: list, p: ExportPlan) -> None:
  """The job's last step: the export history, staging cleanup, the locks (inside the job, so that
  a job launched from a Flex Template does its own bookkeeping)."""
  exported_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
  # format and whether rows were left out: reconcile compares a day's rows with its lake day's
  whole = p.kind == 'events' and not (p.events or p.exclude or p.environment)
  table = {'dest_table': p.iceberg_dest.table} if p.iceberg_dest else {}
  history.record(p.state, {dt: {**commit, 'export_run_id': p.run_id, 'exported_at': exported_at,
                                'dest': target_of(p, dt), 'success': marker(p, dt, 1),
                                'format': p.fmt.name, 'whole_day': whole, **table,
                                **snapshot_ids(p, dt)}
                           for dt, commit in p.lake_commits.items()})
  for dt in p.lake_commits:
    history.record_delivery(p.lake, delivery(p, dt, exported_at))
  fs.delete_tree(p.staging, prune_parent=True)
  locks.release(p.locks, p.run_id)


def delivery(p: ExportPlan, dt: str, exported_at: str) -> dict:
  """What the lake records of the day's delivery: where (no credentials), which files, from
  which lake days, and the flags that deliver it again (pipelines/forget.py)."""
  manifest = json.loads(fs.read_bytes(marker(p, dt, 0)))
  read = {path.rsplit('/dt=', 1)[-1].split('/')[0] for path in p.files[dt]}
  return {'dt': dt, 'dest': fs.redact(p.delivered_to), 'unit': p.layout.unit(p.day_values(dt)),
          'target': fs.redact(dest_folder(p.delivered_to, p.layout, p.day_values(dt))),
          'files': [f['name'] for f in manifest['files']], 'rows': manifest['rows'],
          'run_id': p.run_id, 'exported_at': exported_at, 'lake_days': sorted(read | {dt}),
          'export_time': p.export_times.get(dt, p.export_time), 'flags': p.flags}


def dest_folder(dest: str, layout: Layout, values: dict) -> str:
  """The folder under `dest` that the layout's partition template renders for `values`."""
  folder = layout.partition_path(values)
  return fs.join(dest, folder) if folder else dest


def target_of(p: ExportPlan, dt: str) -> str:
  """The day's folder: the layout's, or in an Iceberg table this run's data folder of the day."""
  if p.iceberg_dest is not None:
    return partition_dir(p.dest_root, dt)
  return dest_folder(p.dest, p.layout, p.day_values(dt))


def snapshot_ids(p: ExportPlan, dt: str) -> dict:
  """The customer table's snapshot of the day (--format iceberg), as its manifest records it,
  and the rows the export added to the day (when it did not replace it)."""
  manifest = json.loads(fs.read_bytes(marker(p, dt, 0)))
  return {k: manifest[k] for k in ('snapshot_id', 'rows_added') if manifest.get(k) is not None}


def marker(p: ExportPlan, dt: str, which: int) -> str:
  """The day's manifest (0) or _SUCCESS (1) path."""
  return fs.join(target_of(p, dt), p.layout.markers(p.day_values(dt))[which])
