"""The partition commit we own (Beam's file sinks leave stale shards: see FIELD-NOTES.md).

Workers write each shard under a staging prefix with a deterministic name. One commit step per
partition then:
  1. deletes `_SUCCESS`, so readers see the partition as not ready;
  2. renames the staged files into place (same names overwrite the old ones);
  3. deletes every other file the partition held before (stale shards);
  4. writes `_manifest.json` (files, rows, bytes, sha256, schema fingerprint, run id, source);
  5. writes `_SUCCESS`, last.
A reader that trusts `_SUCCESS` never sees a missing, partial or stale file, and a rerun replaces
the partition exactly. A day of a flat export folder (days side by side, `_manifest-YYYYMMDD.json`
and `_SUCCESS-YYYYMMDD`) is committed the same way, except that what it "held before" is what its
manifest lists, never the folder (see flat_owned).
"""
import dataclasses
import hashlib
import datetime
import logging
import os
import signal
import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from schemas.events import LAKE_SCHEMA, REJECTED_SCHEMA, fingerprint
from schemas.reports import DayReport, Manifest, ManifestFile, Status
from transforms.lake import locks
from transforms.stores import fs
from transforms.stores.fs import partition_dir
from transforms.kernels.accounting import DayStats
from transforms.kernels.lineage import per_source_file
from transforms.dedupe import spill, unspill
from transforms.lake.names import MANIFEST, REJECTED_DIR, SUCCESS

__all__ = ['StagedFile', 'shard_name', 'write_parquet', 'stage', 'clear_dead_staging',
           'drop_staging', 'KILL_AT', 'STOP_AT', 'checkpoint', 'commit_partition', 'appended',
           'flat_owned', 'manifest_for',
           'WriteShards', 'SpillRejected', 'WriteRejected', 'CommitSettings', 'CommitDay', 'StageRejected',
           'CommitStagedDays']


@dataclasses.dataclass(frozen=True)
class StagedFile:
  name: str
  path: str
  rows: int
  bytes: int
  sha256: str


def shard_name(shard: int, shards: int, ext: str = 'parquet') -> str:
  return f'part-{shard:05d}-of-{shards:05d}.{ext}'


def write_parquet(table: pa.Table, path: str, name: str) -> StagedFile:
  """zstd: as fast to write as snappy here and 40% smaller. Min/max statistics only for scalar
  columns: on map columns they cost write time and prune nothing."""
  sink = pa.BufferOutputStream()
  scalar = [f.name for f in table.schema if not pa.types.is_nested(f.type)]
  pq.write_table(table, sink, compression='zstd', write_statistics=scalar)
  return stage(memoryview(sink.getvalue()), path, name, table.num_rows)


def stage(data: bytes | memoryview, path: str, name: str, rows: int) -> StagedFile:
  """Writes a file's bytes to its staging path and records what the manifest needs (the upload
  counts the bytes and their sha256)."""
  with fs.open_write(path) as f:
    f.write(data)
  return StagedFile(name, path, rows, f.bytes, f.sha256)


def clear_dead_staging(staging: str, run_id: str, units: set[str]) -> None:
  """Deletes what other runs staged for `units` under `staging` (STAGING/RUN_ID/.../UNIT/...,
  e.g. a truncated file of a run stopped mid-write). The caller holds the units' locks, so no
  live run writes there: whoever staged it died or was stopped before its cleanup."""
  dead = set()
  for path in fs.list_files(staging):
    run, *inner = path[len(staging.rstrip('/')) + 1:].split('/')
    if run != run_id and units & set(inner[:-1]):
      fs.delete([path])
      dead.add(fs.join(staging, run))
  for folder in sorted(dead):
    if not fs.list_files(folder):
      fs.delete_tree(folder, prune_parent=True)


def drop_staging(staging: str) -> None:
  """Deletes a failed or stopped run's own staging (STAGING/RUN_ID). A failure to delete is
  logged, not raised, so it never hides why the run ended; the next run of the day clears it."""
  try:
    fs.delete_tree(staging, prune_parent=True)
  except Exception as e:  # noqa: BLE001 - the run's own error is the one to raise
    logging.getLogger('eventferry').warning('could not remove %s: %s', staging, e)


KILL_AT = 'EVENTFERRY_KILL_AT'   # tests only: 'STAGE[:PATH_SUFFIX]' SIGKILLs this process there
STOP_AT = 'EVENTFERRY_STOP_AT'   # tests only: the same, SIGSTOP once (a stalled worker; SIGCONT)


def checkpoint(stage: str, target: str) -> None:
  """Where a crash test (KILL_AT / STOP_AT) stops this process: at `stage`, for `target`."""
  for variable, sig in ((KILL_AT, signal.SIGKILL), (STOP_AT, signal.SIGSTOP)):
    name, _, where = os.environ.get(variable, '').partition(':')
    if name == stage and target.endswith(where):
      if sig == signal.SIGSTOP:
        del os.environ[variable]
      os.kill(os.getpid(), sig)


def commit_partition(target: str, staged: list[StagedFile], manifest: Manifest,
                     markers: tuple[str, str] = (MANIFEST, SUCCESS),
                     fence: locks.Fence | None = None, append_via: str | None = None,
                     kept: typing.Collection[str] = ()) -> Manifest:
  """Commits `staged` as the partition `target` (a folder the partition owns), or with `markers`
  other than the default as one day of a flat folder that days share (see flat_owned). With
  `fence`, each step that changes the partition first checks that the run still holds its lock
  (LockedError if not: the run was taken over, and the newer run owns the partition). `kept`:
  names of files the partition holds that stay as they are (forget rewrites only some files).

  With `append_via` (a staging path for the new manifest) `staged` is added to the partition
  instead (see appended): it stays published, nothing is deleted, and the manifest is replaced by
  a rename, so a reader sees the old one or the new one. Staged files already in place (an
  ingest's early panes) are not moved. -> the manifest written."""
  manifest_name, success_name = markers
  flat = markers != (MANIFEST, SUCCESS)
  success = fs.join(target, success_name)
  manifest_path = fs.join(target, manifest_name)

  def step(name: str) -> None:
    if fence:
      fence.check(name, target)

  checkpoint('staged', target)
  before: list[str] = []   # what the partition held: what is not staged now goes
  if append_via:
    manifest = appended(manifest_path, manifest)
  else:
    step(f'deleting {success_name}')
    fs.delete([success])
    if flat:
      step(f'rewriting {manifest_name}')
      before = flat_owned(target, manifest_name, manifest)
    else:
      before = fs.list_files(target)
  finals = [fs.join(target, f.name) for f in staged]
  for source, final in zip([f.path for f in staged], finals):
    if source != final:
      step(f'promoting {final}')
      fs.rename([source], [final])
      checkpoint('promoting', target)
  keep = set(finals) | {manifest_path} | {fs.join(target, n) for n in kept}
  stale = [p for p in before if p not in keep]
  if stale:
    step(f'deleting {len(stale)} stale files')
    fs.delete(stale)
  data = manifest.model_dump_json(indent=2).encode()
  if append_via:
    fs.write_bytes(append_via, data)
  step(f'writing {manifest_name}')
  if append_via:
    fs.rename([append_via], [manifest_path])
  else:
    fs.write_bytes(manifest_path, data)
  checkpoint('before_success', target)
  if not (append_via and fs.exists(success)):
    step(f'writing {success_name}')
    fs.write_bytes(success, b'')
  return manifest


def appended(path: str, manifest: Manifest) -> Manifest:
  """`manifest` added to the one at `path`, if any: the files of both (a new file of the same
  name replaces the listed one), version + 1, and the earlier inputs kept, so an imported day an
  ingest adds to still names its source and a backfill, which skips a day whose source did not
  change, does not replace the day (and the rows added to it)."""
  if not fs.exists(path):
    return manifest
  old = Manifest.model_validate_json(fs.read_bytes(path))
  files = {f.name: f for f in old.files} | {f.name: f for f in manifest.files}
  ordered = sorted(files.values(), key=lambda f: f.name)
  return manifest.model_copy(update={
      'version': old.version + 1, 'files': ordered, 'rows': sum(f.rows for f in ordered),
      'bytes': sum(f.bytes for f in ordered), 'source': old.source,
      'source_files': old.source_files, 'source_fingerprint': old.source_fingerprint})


def flat_owned(target: str, manifest_name: str, manifest: Manifest) -> list[str]:
  """The files a day of a flat folder owns: those its manifest lists. Before anything is
  promoted, the manifest is rewritten to list them together with the new files (the day is not
  published meanwhile: its `_SUCCESS-...` is gone), so a run that dies mid-commit leaves no file
  the next run does not know to remove; files of other days are never touched."""
  path = fs.join(target, manifest_name)
  earlier = (Manifest.model_validate_json(fs.read_bytes(path)).files
             if fs.exists(path) else [])
  new = {f.name for f in manifest.files}
  pending = manifest.model_copy(update={'files': [f for f in earlier if f.name not in new]
                                        + manifest.files})
  fs.write_bytes(path, pending.model_dump_json(indent=2).encode())
  return [fs.join(target, f.name) for f in earlier]


def manifest_for(staged: list[StagedFile], *, run_id: str, pipeline: str, source: str,
                 partition: str, schema: pa.Schema, **inputs) -> Manifest:
  """`inputs`: source_files and source_fingerprint, when the partition was made from a source day."""
  files = sorted(staged, key=lambda f: f.name)
  return Manifest(**inputs, run_id=run_id, pipeline=pipeline, source=source, partition=partition,
                  committed_at=datetime.datetime.now(datetime.timezone.utc),
                  schema_fingerprint=fingerprint(schema), rows=sum(f.rows for f in files),
                  bytes=sum(f.bytes for f in files),
                  files=[ManifestFile(name=f.name, rows=f.rows, bytes=f.bytes, sha256=f.sha256)
                         for f in files])


class WriteShards(beam.DoFn):
  """((dt, shard), table) -> (dt, StagedFile) under STAGING/dt=DT/; stats tagged 'stats'."""
  files = Metrics.counter('eventferry.write', 'files')
  rows = Metrics.counter('eventferry.write', 'rows_written')

  def __init__(self, staging: str, shards: dict[str, int], schema: pa.Schema | None = None):
    self._staging = staging
    self._shards = shards
    self._schema = schema   # an Iceberg lake's file schema: the day column and field ids

  def process(self, element):  # ((dt, shard), pa.Table)
    (dt, shard), table = element
    if self._schema is not None:
      from transforms.lake import iceberg
      table = iceberg.with_day(table, dt, self._schema)
    name = shard_name(shard, self._shards[dt])
    staged = write_parquet(table, fs.join(partition_dir(self._staging, dt), name), name)
    self.files.inc()
    self.rows.inc(staged.rows)
    yield beam.pvalue.TaggedOutput('stats', (dt, DayStats(rows_written=staged.rows)))
    yield dt, staged


class SpillRejected(beam.DoFn):
  """(dt, rejected batch) -> (dt, (source file, first row, spill path)). Like the dedupe shards,
  rejected rows travel as files: only paths and sort keys cross the GroupByKey, so a day's
  rejects are never held in memory at once."""

  def __init__(self, root: str):
    self._root = root

  def process(self, element: tuple[str, pa.RecordBatch]):
    dt, batch = element
    key = (batch.column('source_file')[0].as_py(), batch.column('source_row')[0].as_py())
    name = hashlib.sha1(f'{key[0]}:{key[1]}'.encode()).hexdigest()[:20] + '.arrows'
    path = fs.join(partition_dir(self._root, dt), name)
    spill(batch, path)
    yield dt, (*key, path)


class WriteRejected(beam.DoFn):
  """(dt, [(source file, first row, spill path)]) -> (dt, StagedFile): one file per day, ordered
  by file and row, written a row group at a time. Each spill holds rows of one read batch (a
  contiguous row range of one file, in row order), so ordering spills by their first row orders
  the rows."""
  ROW_GROUP = 65_536

  def __init__(self, staging: str):
    self._staging = staging

  def process(self, element: tuple[str, typing.Iterable[tuple[str, int, str]]]):
    dt, spills = element
    spills = sorted(spills)
    sink, pending = pa.BufferOutputStream(), []
    scalar = [f.name for f in REJECTED_SCHEMA]
    with pq.ParquetWriter(sink, REJECTED_SCHEMA, compression='zstd',
                          write_statistics=scalar) as writer:
      pieces = (piece for _, _, path in spills
                for piece in per_source_file(unspill(path), 'source_file'))
      for piece in pieces:   # cut per file: row groups end where they did with a batch per file
        pending.append(piece)
        if sum(t.num_rows for t in pending) >= self.ROW_GROUP:
          writer.write_table(pa.concat_tables(pending).cast(REJECTED_SCHEMA))
          pending = []
      if pending:
        writer.write_table(pa.concat_tables(pending).cast(REJECTED_SCHEMA))
    rows = pq.ParquetFile(pa.BufferReader(sink.getvalue())).metadata.num_rows
    name = shard_name(0, 1)
    path = fs.join(partition_dir(fs.join(self._staging, REJECTED_DIR), dt), name)
    staged = stage(memoryview(sink.getvalue()), path, name, rows)
    fs.delete(p for _, _, p in spills)
    yield dt, staged


@dataclasses.dataclass(frozen=True)
class CommitSettings:
  lake: str
  staging: str
  run_id: str
  pipeline: str
  source: str
  shards: dict[str, int]
  max_rejected_ratio: float
  inputs: dict[str, dict] = dataclasses.field(default_factory=dict)  # dt -> manifest_for inputs
  fenced: bool = False   # the run holds each day's lock (lock_path(lake, 'dt=D')): fence commits
  iceberg: typing.Any = None   # an iceberg.IcebergLake: commit each day as a snapshot of its tables


class CommitDay(beam.DoFn):
  """(dt, {'lake': [StagedFile], 'rejected': [StagedFile], 'stats': [DayStats]}) -> DayReport.

  Checks the accounting and the quality gate; publishes the lake partition only when both hold.
  The rejected partition is always published, so the customer can inspect it."""
  published = Metrics.counter('eventferry.commit', 'days_published')
  refused = Metrics.counter('eventferry.commit', 'days_refused')

  def __init__(self, settings: CommitSettings):
    self._s = settings

  def process(self, element) -> typing.Iterator[DayReport]:
    dt, parts = element
    s = self._s
    stats = DayStats()
    for partial in parts['stats']:
      stats.add(partial)
    staged = list(parts['lake'])
    rejected_files = list(parts['rejected'])
    target = partition_dir(s.lake, dt)
    rejected_target = partition_dir(fs.join(s.lake, REJECTED_DIR), dt)
    fence = locks.Fence(locks.lock_path(s.lake, f'dt={dt}'), s.run_id) if s.fenced else None
    if s.iceberg:
      from transforms.lake import iceberg_day as day
      target = day.target(s.iceberg, s.iceberg.table, dt)
      rejected_target = day.target(s.iceberg, s.iceberg.rejected_table, dt)
      checkpoint('staged', target)
      fenced = (lambda: fence.check('committing', target)) if fence else (lambda: None)
      day.commit_rejected(s.iceberg, dt, rejected_files, s.run_id, fenced)
    else:
      commit_partition(rejected_target, rejected_files, manifest_for(
          rejected_files, run_id=s.run_id, pipeline=s.pipeline, source=s.source,
          partition=rejected_target, schema=REJECTED_SCHEMA), fence=fence)
    snapshot = None

    status: Status
    status, message = 'published', ''
    ratio = stats.rows_rejected / stats.rows_in if stats.rows_in else 0.0
    error = stats.balance_error()
    if error:
      status, message = 'failed', error
    elif ratio > s.max_rejected_ratio:
      status = 'refused'
      message = (f'{stats.rows_rejected} of {stats.rows_in} rows rejected ({ratio:.2%}) > '
                 f'--max_rejected_ratio {s.max_rejected_ratio:.2%}; the day was not published. '
                 f'Inspect {rejected_target}, fix the source and rerun, or raise the ratio.')
    if status == 'published' and s.iceberg:
      made_of = s.inputs.get(dt, {})
      inputs = {'source': s.source, 'schema_fingerprint': fingerprint(LAKE_SCHEMA), 'pipeline': s.pipeline,
                'source_fingerprint': made_of.get('source_fingerprint'),
                'source_files': str(len(made_of['source_files'])) if 'source_files' in made_of else None}
      snapshot = day.commit_lake(s.iceberg, dt, staged, s.run_id, fenced, inputs)
      staged = [f for f in staged if f.rows]
      self.published.inc()
    elif status == 'published':
      staged = staged + self._empty_shards(dt, staged)
      commit_partition(target, staged, manifest_for(
          staged, run_id=s.run_id, pipeline=s.pipeline, source=s.source, partition=target,
          schema=LAKE_SCHEMA, **s.inputs.get(dt, {})), fence=fence)
      self.published.inc()
    else:
      fs.delete(f.path for f in staged)
      self.refused.inc()
      # On Dataflow the job still succeeds: this line (and the counter) is what alerts see.
      logging.getLogger('eventferry').error('dt=%s %s: %s', dt, status, message)
    yield DayReport(
        dt=dt, status=status, message=message, rows_in=stats.rows_in,
        rows_written=stats.rows_written,
        rows_rejected=stats.rows_rejected, rows_duplicate=stats.rows_duplicate,
        rejected_by_reason=dict(sorted(stats.rejected.items())),
        flags={k: v for k, v in sorted(stats.flags.items()) if v},
        files=len(staged) if status == 'published' else 0,
        bytes=sum(f.bytes for f in staged) if status == 'published' else 0,
        partition=target, rejected_partition=rejected_target, snapshot_id=snapshot)

  def _empty_shards(self, dt: str, staged: list[StagedFile]) -> list[StagedFile]:
    """Empty files for shards that received no rows, so a day always has all N parts."""
    n = self._s.shards[dt]
    have = {f.name for f in staged}
    out = []
    for shard in range(n):
      name = shard_name(shard, n)
      if name not in have:
        path = fs.join(partition_dir(self._s.staging, dt), name)
        out.append(write_parquet(LAKE_SCHEMA.empty_table(), path, name))
    return out


class StageRejected(beam.PTransform):
  """(dt, rejected batch) -> (dt, StagedFile): one staged file of rejected rows per day, in
  source order (spilled under `spill_root`, written under `staging`)."""

  def __init__(self, spill_root: str, staging: str):
    super().__init__()
    self._spill_root = spill_root
    self._staging = staging

  def expand(self, rejected):
    return (rejected
            | 'SpillRejected' >> beam.ParDo(SpillRejected(self._spill_root))
            | 'GroupRejected' >> beam.GroupByKey()
            | 'WriteRejected' >> beam.ParDo(WriteRejected(self._staging)))


class CommitStagedDays(beam.PTransform):
  """{'lake': (dt, StagedFile), 'rejected': (dt, StagedFile), 'stats': [(dt, DayStats), ...]}
  -> DayReport per day of `days`: each day's counts merged, then its commit (CommitDay). Every
  planned day gets a report, also one whose rows were all rejected or dropped."""

  def __init__(self, settings: CommitSettings, days: list[str]):
    super().__init__()
    self._settings = settings
    self._days = days

  def expand(self, parts):
    from transforms.kernels import accounting
    planned = parts['lake'].pipeline | 'PlannedDays' >> beam.Create([(dt, DayStats()) for dt in self._days])
    stats = ((*parts['stats'], planned)
             | 'AllStats' >> beam.Flatten()
             | 'StatsPerDay' >> beam.CombinePerKey(accounting.merged))
    return ({'lake': parts['lake'], 'rejected': parts['rejected'], 'stats': stats}
            | 'JoinDay' >> beam.CoGroupByKey()
            | 'CommitDay' >> beam.ParDo(CommitDay(self._settings)))
