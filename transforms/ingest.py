"""Streaming ingest: raw chunks -> validated rows per server day -> the lake, pane by pane.

Rows are keyed by their server day (transforms/kernels/days.py: calendar days in a zone, DST-aware), and a
stateful DoFn per day plays the role of a window with triggers, because one element here is a batch
of many rows and Beam assigns windows per element:
  - early panes: every --flush_interval of processing time (or at --flush_rows buffered rows) the
    buffered rows are written as new files in the day's folder;
  - on time: when the watermark passes the end of the day, the rest is written, then the manifest,
    then _SUCCESS;
  - late: rows that arrive later, but within --allowed_lateness of the end of their day, are
    written as further files at the next flush and the manifest is rewritten with a new version;
  - too late: a row that arrives more than --allowed_lateness after the end of its server day is
    rejected with reason too_late (decided from its arrival time, so the decision is replayable)
    and lands in the day's dead-letter partition. Nothing is dropped.
File names are part-RUN-PANE-FILE: a retried bundle rewrites its own files, and a restarted
pipeline (new RUN) never overwrites an earlier run's files; manifests merge with what is there.

De-duplication: within a flush the earliest ts wins (as in the batch import); across flushes the
first written wins. The horizon is the day plus --allowed_lateness; the state holds 16 bytes per
distinct insert_id of each open day and is dropped when the day closes.
"""
import dataclasses
import datetime
import typing
import zoneinfo

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.events import LAKE_SCHEMA, REJECTED_SCHEMA
from schemas.reasons import Reason
from schemas.reports import DayReport, Manifest, ManifestFile, Status
from transforms import dedupe, validate
from transforms.kernels import raw
from transforms.lake import commit, forget, locks, names
from transforms.stores import fs
from transforms.kernels.accounting import DayStats
from transforms.kernels.days import day_bounds, server_days

__all__ = ['DayPart', 'DayState', 'LAKE_EMPTY', 'SplitDays', 'WriteSettings', 'WriteDays',
           'IngestEvents']


@dataclasses.dataclass
class DayPart:
  valid: pa.RecordBatch      # LAKE_SCHEMA plus lineage
  rejected: pa.RecordBatch   # REJECTED_SCHEMA
  stats: DayStats


@dataclasses.dataclass
class DayState:
  pane: int = 0
  pending_rows: int = 0
  flush_armed: bool = False
  committed: bool = False    # manifest and _SUCCESS written (on time)
  closed: bool = False       # past --allowed_lateness: seen ids dropped
  opened: bool = False       # batch: the day's lock taken and what it holds read (_open)
  dead_letters: frozenset = frozenset()   # batch: (source_file, source_row) the day holds
  rows_replaced: int = 0     # batch with replace: rows of earlier runs the commit removed
  stats: DayStats = dataclasses.field(default_factory=DayStats)
  unlisted: dict = dataclasses.field(default_factory=lambda: {'lake': [], 'rejected': []})


def _stats_of_rejected(rejected: pa.RecordBatch) -> DayStats:
  stats = DayStats(rows_in=rejected.num_rows, rows_rejected=rejected.num_rows)
  stats.rejected.update(rejected.column('reason').to_pylist())
  return stats


LAKE_EMPTY = pa.RecordBatch.from_pylist([], schema=pa.schema(
    list(LAKE_SCHEMA) + [pa.field(validate.SOURCE_FILE, pa.string()),
                         pa.field(validate.SOURCE_ROW, pa.int64())]))


class SplitDays(beam.DoFn):
  """RawChunk -> (dt, DayPart) for each server day its rows fall on."""

  forgotten = Metrics.counter('eventferry.ingest', 'forgotten')

  def __init__(self, zone: str, environment: str, allowed_lateness_ms: int,
               forgotten: forget.Forgotten | None = None):
    self._zone_key = zone
    self._environment = environment
    self._lateness = allowed_lateness_ms
    self._forgotten = forgotten

  def setup(self):
    self._zone = zoneinfo.ZoneInfo(self._zone_key)

  def process(self, chunk: raw.RawChunk) -> typing.Iterator[tuple[str, DayPart]]:
    batch, unreadable, when = raw.parse_chunk(chunk)
    server = np.asarray(batch.column(raw.SERVER_MS))
    days, index = server_days(server, self._zone)
    for k, dt in enumerate(days):
      rows = batch if len(days) == 1 else batch.filter(pa.array(index == k))
      yield dt, self._part(dt, rows)
    # their server day where their time is readable, else the day they arrived
    r_days, r_index = server_days(when, self._zone)
    for k, dt in enumerate(r_days):
      part = unreadable.filter(pa.array(r_index == k))
      yield dt, DayPart(LAKE_EMPTY, part, _stats_of_rejected(part))

  def _part(self, dt: str, rows: pa.RecordBatch) -> DayPart:
    arrival = np.asarray(rows.column(raw.ARRIVAL_MS))
    too_late = (arrival >= 0) & (arrival > day_bounds(dt, self._zone)[1] + self._lateness)
    late = validate.explain(rows, np.flatnonzero(too_late), [Reason.TOO_LATE] * int(too_late.sum()))
    if too_late.any():
      rows = rows.filter(pa.array(~too_late))
    env = rows.column('environment')
    env = pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(env), 0), False), env,
                     self._environment)
    result = validate.validate_batch(rows, env, datetime.date.fromisoformat(dt))
    rejected = pa.Table.from_batches([late, result.rejected]).combine_chunks().to_batches()
    stats = result.stats.add(_stats_of_rejected(late))
    valid = result.valid
    if self._forgotten and valid.num_rows:   # users a forget request erased stay out
      salt, requests = self._forgotten
      drop = forget.hashed_identifier_rows(valid.column('identifiers'), salt, requests)
      stats.rows_forgotten = pc.sum(drop).as_py() or 0
      if stats.rows_forgotten:
        valid = valid.filter(pc.invert(drop))
        self.forgotten.inc(stats.rows_forgotten)
    return DayPart(valid, rejected[0] if rejected else late, stats)


@dataclasses.dataclass(frozen=True)
class WriteSettings:
  lake: str
  zone: str
  run_id: str
  allowed_lateness_ms: int
  flush_interval_s: float | None   # None: batch, no early panes
  flush_rows: int
  max_rows_per_file: int
  batch: bool = False     # batch ingest: locks each day and adds to what it holds (_open)
  replace: bool = False   # batch: a day this run writes rows to is replaced (--replace_days)
  break_lock: str | None = None   # batch: a dead run whose day locks this one takes over
  forgotten: 'forget.Forgotten | None' = None   # users to drop: forget.forgotten_users(lake)


def _millis(ms: int) -> Timestamp:
  return Timestamp(micros=ms * 1000)


class WriteDays(beam.DoFn):
  """(dt, DayPart) keyed by day -> a DayReport per pane written: 'open' for early panes,
  'published' (or 'failed' accounting) once the day is committed."""
  PENDING = BagStateSpec('pending', PickleCoder())
  DAY = ReadModifyWriteStateSpec('day', PickleCoder())
  SEEN = ReadModifyWriteStateSpec('seen', PickleCoder())   # apart: it grows; written per pane only
  ON_TIME = TimerSpec('on_time', TimeDomain.WATERMARK)
  CLOSE = TimerSpec('close', TimeDomain.WATERMARK)
  FLUSH = TimerSpec('flush', TimeDomain.REAL_TIME)
  files = Metrics.counter('eventferry.ingest', 'files')
  written = Metrics.counter('eventferry.ingest', 'rows_written')

  def __init__(self, settings: WriteSettings):
    self._s = settings

  def setup(self):
    self._zone = zoneinfo.ZoneInfo(self._s.zone)

  def process(self, element, pending=beam.DoFn.StateParam(PENDING),
              day_state=beam.DoFn.StateParam(DAY), seen=beam.DoFn.StateParam(SEEN),
              on_time=beam.DoFn.TimerParam(ON_TIME),
              close=beam.DoFn.TimerParam(CLOSE), flush=beam.DoFn.TimerParam(FLUSH)):
    dt, part = element
    day = day_state.read() or DayState()
    if day.pane == 0 and not day.pending_rows:
      end = day_bounds(dt, self._zone)[1]
      on_time.set(_millis(end - 1))
      close.set(_millis(end - 1 + self._s.allowed_lateness_ms))
    pending.add(part)
    day.stats.add(part.stats)
    day.pending_rows += part.valid.num_rows + part.rejected.num_rows
    if day.closed or day.pending_rows >= self._s.flush_rows:   # too-late rows: write at once
      yield from self._flush(dt, day, pending, seen)
    elif self._s.flush_interval_s and not day.flush_armed:
      flush.set(Timestamp.now() + Duration(seconds=self._s.flush_interval_s))
      day.flush_armed = True
    day_state.write(day)

  @on_timer(FLUSH)
  def on_flush(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
               day_state=beam.DoFn.StateParam(DAY), seen=beam.DoFn.StateParam(SEEN)):
    day = day_state.read() or DayState()
    day.flush_armed = False
    yield from self._flush(key, day, pending, seen)
    day_state.write(day)

  @on_timer(ON_TIME)
  def on_time(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
              day_state=beam.DoFn.StateParam(DAY), seen=beam.DoFn.StateParam(SEEN)):
    day = day_state.read() or DayState()
    first, day.committed = not day.committed, True
    yield from self._flush(key, day, pending, seen, force=first)
    day_state.write(day)

  @on_timer(CLOSE)
  def on_close(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
               day_state=beam.DoFn.StateParam(DAY), seen=beam.DoFn.StateParam(SEEN)):
    day = day_state.read() or DayState()
    first, day.committed = not day.committed, True   # batch: both timers fire at the end
    yield from self._flush(key, day, pending, seen, force=first)
    day.closed = True
    seen.clear()
    day_state.write(day)

  def _flush(self, dt: str, day: DayState, pending, seen, force: bool = False):
    """Writes the buffered rows as pane `day.pane`; once the day is committed, also the manifests
    (merged with what the partitions list) and _SUCCESS."""
    parts = list(pending.read())
    pending.clear()
    day.pending_rows = 0
    if not parts and not force:
      return
    s = self._s
    if s.batch and not day.opened:
      self._open(dt, day, seen)
    table, _ = dedupe.dedupe([p.valid for p in parts])
    known = seen.read()
    table, known = dedupe.drop_seen(table, np.zeros(0, 'S16') if known is None else known)
    seen.write(known)
    day.stats.rows_duplicate += sum(p.valid.num_rows for p in parts) - table.num_rows
    day.stats.rows_written += table.num_rows
    self.written.inc(table.num_rows)
    rejected = pa.Table.from_batches([p.rejected for p in parts], schema=REJECTED_SCHEMA)
    if day.dead_letters:   # a rerun: dead letters the day holds already are not written twice
      rejected = rejected.filter(pa.array([
          key not in day.dead_letters for key in zip(rejected['source_file'].to_pylist(),
                                                     rejected['source_row'].to_pylist())], pa.bool_()))
    lake_dir = fs.partition_dir(s.lake, dt)
    rejected_dir = fs.partition_dir(fs.join(s.lake, names.REJECTED_DIR), dt)
    day.unlisted['lake'] += self._write(table, lake_dir, 'lake', day.pane)
    day.unlisted['rejected'] += self._write(rejected, rejected_dir, 'rejected', day.pane)
    day.pane += 1
    if not day.committed:   # an early pane: files in place, not yet in a manifest, no _SUCCESS
      yield self._report(dt, day, 'open', lake_dir, rejected_dir)
      return
    replacing = s.replace and bool(day.unlisted['lake'])   # dead letters alone replace nothing
    manifest = self._commit(lake_dir, 'lake', day.unlisted['lake'], LAKE_SCHEMA, replacing, day)
    self._commit(rejected_dir, 'rejected', day.unlisted['rejected'], REJECTED_SCHEMA,
                 replacing)
    day.unlisted = {'lake': [], 'rejected': []}
    if s.batch:
      locks.release([locks.lock_path(s.lake, f'dt={dt}')], s.run_id)
    status: Status = 'published' if manifest is not None else 'rejected_only'
    yield self._report(dt, day, status, lake_dir, rejected_dir, manifest)

  def _staging(self, directory: str, kind: str) -> str:
    return fs.join(self._s.lake, names.STAGING_DIR, names.ingest_run(self._s.run_id), kind,
                        directory.rstrip('/').rsplit('/', 1)[-1])

  def _write(self, table: pa.Table, directory: str, kind: str, pane: int
             ) -> list[commit.StagedFile]:
    """Writes pane `pane` of a partition as files of at most --max_rows_per_file rows, staged
    and then renamed into place, so a listed file is always whole."""
    staged = []
    for i, start in enumerate(range(0, table.num_rows, self._s.max_rows_per_file)):
      name = f'part-{self._s.run_id}-{pane:05d}-{i:03d}.parquet'
      path = fs.join(self._staging(directory, kind), name)
      staged.append(commit.write_parquet(table.slice(start, self._s.max_rows_per_file), path, name))
    if staged:
      self._fence(f'promoting pane {pane}', directory)
    fs.rename([f.path for f in staged], [fs.join(directory, f.name) for f in staged])
    self.files.inc(len(staged))
    return staged

  def _commit(self, directory: str, kind: str, new: list[commit.StagedFile], schema: pa.Schema,
              replace: bool, day: DayState | None = None) -> Manifest | None:
    """Rewrites the manifest as the files it listed plus `new`, version + 1; then _SUCCESS.
    With `replace`, the manifest lists `new` only and every other file goes (their rows counted
    in `day.rows_replaced`), unpublished meanwhile as in the import's partition commit. With
    nothing new, a partition that does not exist is not made (a day of dead letters only has no
    lake day), and a batch run leaves it as it was."""
    path = fs.join(directory, names.MANIFEST)
    success = fs.join(directory, names.SUCCESS)
    old = Manifest.model_validate_json(fs.read_bytes(path)) if fs.exists(path) else None
    if not new and (old is None or (self._s.batch and not replace)):
      return old
    if replace:
      keep = {fs.join(directory, f.name) for f in new} | {path}
      self._fence(f'deleting {names.SUCCESS}', directory)
      fs.delete([success])
      stale = [p for p in fs.list_files(directory) if p not in keep]
      if stale:
        self._fence(f'deleting {len(stale)} stale files', directory)
        fs.delete(stale)
      if day is not None and old is not None:
        day.rows_replaced += sum(f.rows for f in old.files if f.name not in {n.name for n in new})
    files = {f.name: f for f in (old.files if old and not replace else [])}
    files.update({f.name: ManifestFile(name=f.name, rows=f.rows, bytes=f.bytes, sha256=f.sha256)
                  for f in new})
    # Added to: the import's inputs stay, so a backfill, which skips a day whose source did not
    # change, does not replace the day (and the rows added to it).
    inputs = ({k: getattr(old, k) for k in ('source', 'source_files', 'source_fingerprint')}
              if old and not replace else {'source': 'raw events'})
    manifest = commit.manifest_for([], run_id=self._s.run_id, pipeline='ingest',
                                   partition=directory, schema=schema, **inputs)
    manifest = manifest.model_copy(update={
        'version': old.version + 1 if old else 1, 'files': sorted(files.values(), key=lambda f: f.name),
        'rows': sum(f.rows for f in files.values()), 'bytes': sum(f.bytes for f in files.values())})
    staged = fs.join(self._staging(directory, kind), names.MANIFEST)
    fs.write_bytes(staged, manifest.model_dump_json(indent=2).encode())
    self._fence(f'writing {names.MANIFEST}', directory)
    fs.rename([staged], [path])   # readers see the old manifest or the new one, never half
    if not fs.exists(success):
      self._fence(f'writing {names.SUCCESS}', directory)
      fs.write_bytes(success, b'')
    return manifest

  def _open(self, dt: str, day: DayState, seen) -> None:
    """Batch, before the day's first file: takes the day's lock; unless replacing, the insert_ids
    the day holds count as seen and its dead letters as written, so a row it holds already is a
    duplicate and a rerun of the same input adds nothing. Panes continue after this run's files
    the day lists, so a reused --run_id never overwrites a listed file."""
    self._lock(dt)
    day.opened = True
    prefix = f'part-{self._s.run_id}-'
    listed = {kind: self._listed(d) for kind, d in (
        ('lake', fs.partition_dir(self._s.lake, dt)),
        ('rejected', fs.partition_dir(fs.join(self._s.lake, names.REJECTED_DIR), dt)))}
    panes = [path.rsplit('/', 1)[-1][len(prefix):].split('-')[0] for names in listed.values()
             for path in names if path.rsplit('/', 1)[-1].startswith(prefix)]
    day.pane = 1 + max((int(p) for p in panes if p.isdigit()), default=-1)
    if self._s.replace:
      return
    ids = [t['insert_id'] for t in self._read(listed['lake'], ['insert_id'])]
    seen.write(np.unique(np.concatenate([dedupe.uuid_keys(i.combine_chunks()) for i in ids]))
               if ids else np.zeros(0, 'S16'))
    day.dead_letters = frozenset(
        (f, r) for t in self._read(listed['rejected'], ['source_file', 'source_row'])
        for f, r in zip(t['source_file'].to_pylist(), t['source_row'].to_pylist()))

  @staticmethod
  def _listed(directory: str) -> list[str]:
    """Paths of the files the partition's manifest lists (none without one)."""
    path = fs.join(directory, names.MANIFEST)
    if not fs.exists(path):
      return []
    return [fs.join(directory, f.name)
            for f in Manifest.model_validate_json(fs.read_bytes(path)).files]

  @staticmethod
  def _read(paths: list[str], columns: list[str]) -> list[pa.Table]:
    return [pq.read_table(pa.BufferReader(fs.read_bytes(p)), columns=columns) for p in paths]

  def _fence(self, step: str, directory: str) -> None:
    """Batch: the day's lock must still be this run's before `step` changes `directory` (see
    locks.Fence); streaming jobs take no locks."""
    if self._s.batch:
      dt = directory.rstrip('/').rsplit('dt=', 1)[-1]
      locks.Fence(locks.lock_path(self._s.lake, f'dt={dt}'), self._s.run_id).check(step, directory)

  def _lock(self, dt: str) -> None:
    """Batch: the day's lock, as the import takes it, so an import and an ingest of one day never
    mix; a retried bundle of this run takes its own lock back. Streaming jobs own their days."""
    partition = f'dt={dt}'
    locks.acquire(self._s.lake, partition, self._s.run_id, f'run writing {partition} of this lake',
                  break_lock=(self._s.run_id, self._s.break_lock))

  def _report(self, dt: str, day: DayState, status: Status, lake_dir: str, rejected_dir: str,
              lake: Manifest | None = None) -> DayReport:
    st = day.stats
    error = st.balance_error() if status in ('published', 'rejected_only') else None
    report = DayReport(
        dt=dt, status='failed' if error else status, message=error or '',
        rows_in=st.rows_in, rows_written=st.rows_written, rows_rejected=st.rows_rejected,
        rows_duplicate=st.rows_duplicate, rows_replaced=day.rows_replaced,
        rows_forgotten=st.rows_forgotten,
        rejected_by_reason=dict(sorted(st.rejected.items())),
        flags={k: v for k, v in sorted(st.flags.items()) if v},
        files=len(lake.files) if lake else 0 if status == 'published' else day.pane,
        bytes=lake.bytes if lake else 0,
        partition='' if status == 'rejected_only' else lake_dir, rejected_partition=rejected_dir)
    fs.write_bytes(fs.join(self._s.lake, names.RUNS_DIR, names.ingest_run(self._s.run_id),
                                     f'dt={dt}.json'), report.model_dump_json(indent=2).encode())
    return report


class IngestEvents(beam.PTransform):
  """RawChunks -> the lake, day by day; outputs a DayReport at each commit of a day."""

  def __init__(self, settings: WriteSettings, environment: str):
    super().__init__()
    self._s = settings
    self._environment = environment

  def expand(self, chunks):
    return (chunks
            | 'SplitDays' >> beam.ParDo(SplitDays(self._s.zone, self._environment,
                                                  self._s.allowed_lateness_ms, self._s.forgotten))
            | 'WriteDays' >> beam.ParDo(WriteDays(self._s)))


beam.coders.registry.register_coder(DayPart, PickleCoder)
