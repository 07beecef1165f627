"""Streaming ingest: raw chunks -> validated rows per server day -> the lake, pane by pane.

Rows are keyed by their server day (transforms/kernels/days.py: calendar days in a zone, DST-aware) and
shard of insert_id (--day_shards; transforms/kernels/shards.py), so a day's work spreads over workers. A
stateful DoFn per (day, shard) key plays the role of a window with triggers, because one element
here is a batch of many rows and Beam assigns windows per element; a stateful DoFn per day
(CommitDays) commits what the day's shards wrote:
  - early panes: every --flush_interval of processing time (or at --flush_rows rows a key
    buffers) the buffered rows are written as new files in the day's folder;
  - on time: when the watermark passes the end of the day, each shard writes the rest and says
    so; once every shard did (and every pane it sent is in), the manifest, then _SUCCESS;
  - late: rows that arrive later, but within --allowed_lateness of the end of their day, are
    written as further files at the next flush and the manifest is rewritten with a new version;
  - too late: a row that arrives more than --allowed_lateness after the end of its server day is
    rejected with reason too_late (decided from its arrival time, so the decision is replayable)
    and lands in the day's dead-letter partition. Nothing is dropped.
File names are part-RUN-PANE-FILE[-SHARD]: a retried bundle rewrites its own files, and a
restarted pipeline (new RUN) never overwrites an earlier run's files; manifests merge with what is
there (commit.commit_partition's append mode). On an Iceberg lake (WriteSettings.iceberg) the
files go into the tables' data folders and each commit is a snapshot of the day instead
(transforms/lake/iceberg_panes.py: a pane each, the on-time one marked complete).

De-duplication: within a flush the earliest ts wins (as in the batch import); across flushes the
first written wins; every copy of an insert_id meets in one shard. The horizon is the day plus
--allowed_lateness; each key holds 16 bytes per distinct insert_id it wrote, as state whose writes
follow the pane (transforms/kernels/seen.py), dropped when the day closes.
"""
import collections
import dataclasses
import datetime
import functools
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

from schemas.events import LAKE_SCHEMA, REJECTED_SCHEMA, SOURCE_FILE, SOURCE_ROW
from schemas.reasons import Reason
from schemas.reports import DayReport, Manifest, Status
from transforms import dedupe, validate
from transforms.kernels import raw, seen, shards
from transforms.lake import commit, forget, iceberg_day, iceberg_panes, locks, names
from transforms.stores import fs
from transforms.kernels.accounting import DayStats
from transforms.kernels.days import day_bounds, server_days

__all__ = ['DayPart', 'DayState', 'Pane', 'DayCommit', 'LAKE_EMPTY', 'SplitDays', 'WriteSettings',
           'WriteDays', 'CommitDays', 'IngestEvents']


@dataclasses.dataclass
class DayPart:
  valid: pa.RecordBatch      # LAKE_SCHEMA plus lineage
  rejected: pa.RecordBatch   # REJECTED_SCHEMA
  stats: DayStats


@dataclasses.dataclass
class DayState:
  """What one (day, shard) key keeps besides its buffered rows and seen ids."""
  pane: int = 0              # the next pane's number (in its file names)
  sent: int = 0              # panes sent to the day's commit
  pending_rows: int = 0
  armed: bool = False        # the day's timers are set
  flush_armed: bool = False
  on_time: bool = False      # this shard's on-time pane is sent: the day may commit
  closed: bool = False       # past --allowed_lateness: seen ids dropped
  opened: bool = False       # batch: the day's lock taken and what it holds read (_open)
  dead_letters: frozenset = frozenset()   # batch: (source_file, source_row) the shard holds


@dataclasses.dataclass
class Pane:
  """What one (day, shard) key wrote in one pane, for the day's commit (CommitDays)."""
  shard: int
  lake: list[commit.StagedFile]
  rejected: list[commit.StagedFile]
  stats: DayStats            # of the rows this pane took: in = written + rejected + duplicate
  early: bool                # written before the shard was on time: an 'open' report
  on_time: int = 0           # the shard's on-time pane: how many panes it sent, this one included
  index: int = 0             # the pane's number (in its file names)


@dataclasses.dataclass
class DayCommit:
  """What the commit of one day keeps."""
  committed: bool = False    # manifest and _SUCCESS written (on time)
  panes: int = 0
  received: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  expected: dict = dataclasses.field(default_factory=dict)   # shard -> panes, once on time
  rows_replaced: int = 0     # batch with replace: rows of earlier runs the commit removed
  stats: DayStats = dataclasses.field(default_factory=DayStats)
  unlisted: dict = dataclasses.field(default_factory=lambda: {'lake': [], 'rejected': []})


def _stats_of_rejected(rejected: pa.RecordBatch) -> DayStats:
  stats = DayStats(rows_in=rejected.num_rows, rows_rejected=rejected.num_rows)
  stats.rejected.update(rejected.column('reason').to_pylist())
  return stats


LAKE_EMPTY = pa.RecordBatch.from_pylist([], schema=pa.schema(
    list(LAKE_SCHEMA) + [pa.field(SOURCE_FILE, pa.string()), pa.field(SOURCE_ROW, pa.int64())]))


REJECTED_EMPTY = pa.RecordBatch.from_pylist([], schema=REJECTED_SCHEMA)
# Malformed rows have no event time and are filed under their arrival day, which runs over other
# days' files share: a batch run with only dead letters for a day another run holds waits for it
# instead of refusing, since both only add to that day.
DEAD_LETTER_WAIT = 600   # seconds


class SplitDays(beam.DoFn):
  """RawChunk -> ((dt, shard), DayPart) for each server day its rows fall on and each shard of
  insert_id (dead letters: of source row) they fall in. The first time a bundle meets a day, every
  other shard of it gets an empty part, so all of a day's keys exist, send an on-time pane and the
  day commits once all of them did (CommitDays)."""

  forgotten = Metrics.counter('eventferry.ingest', 'forgotten')

  def __init__(self, zone: str, environment: str, allowed_lateness_ms: int, shards: int = 1,
               lake: str | None = None):
    self._zone_key = zone
    self._environment = environment
    self._lateness = allowed_lateness_ms
    self._shards = shards
    self._lake = lake

  def setup(self):
    self._zone = zoneinfo.ZoneInfo(self._zone_key)
    # the users forget requests erased, read by each worker as it starts (not by the launcher,
    # which may not reach the lake when it hands a job over), so a restarted stream sees new ones
    self._forgotten = forget.forgotten_users(self._lake) if self._lake else None

  def start_bundle(self):
    self._announced: set[str] = set()   # per bundle: a retried bundle announces again

  def process(self, chunk: raw.RawChunk) -> typing.Iterator[tuple[tuple[str, int], DayPart]]:
    batch, keep, payloads, unreadable, when = raw.parse_rows(chunk)
    server = np.asarray(batch.column(raw.SERVER_MS))
    days, index = server_days(server if keep is None else server[keep], self._zone)
    if len(days) == 1:   # the usual case: the rows the parser rejected are validation's `skip`
      yield from self._by_shard(days[0], self._part(days[0], batch, payloads,
                                                    None if keep is None else ~keep))
    elif days:
      if keep is not None:   # -1: the rows the parser rejected, in no day's filter
        index, of_kept = np.full(len(keep), -1), index
        index[keep] = of_kept
      for k, dt in enumerate(days):
        rows = np.flatnonzero(index == k)
        yield from self._by_shard(dt, self._part(dt, batch.take(pa.array(rows)),
                                                 [payloads[i] for i in rows]))
    # their server day where their time is readable, else the day they arrived
    r_days, r_index = server_days(when, self._zone)
    for k, dt in enumerate(r_days):
      part = unreadable.filter(pa.array(r_index == k))
      yield from self._by_shard(dt, DayPart(LAKE_EMPTY, part, _stats_of_rejected(part)))

  def _by_shard(self, dt: str, part: DayPart) -> typing.Iterator[tuple[tuple[str, int], DayPart]]:
    """The part's pieces, each with the counts of its own rows (the flags, which no balance
    checks, go with the first), so every pane a shard writes balances on its own."""
    pieces = {0: part}
    if self._shards > 1:
      valid = dict(shards.split_by_shard(part.valid, self._shards))
      of_row = shards.row_shard(part.rejected, self._shards)
      pieces = {}
      for shard in sorted(set(valid) | set(np.unique(of_row).tolist())):
        rejected = part.rejected.filter(pa.array(of_row == shard))
        stats = _stats_of_rejected(rejected)
        stats.rows_in += valid[shard].num_rows if shard in valid else 0
        pieces[shard] = DayPart(valid.get(shard, LAKE_EMPTY), rejected, stats)
      if pieces:   # the rows forget dropped are in no piece: the first counts them
        first = next(iter(pieces.values())).stats
        first.flags.update(part.stats.flags)
        first.rows_forgotten = part.stats.rows_forgotten
        first.rows_in += part.stats.rows_forgotten
    if dt not in self._announced:
      self._announced.add(dt)
      for shard in range(self._shards):
        if shard not in pieces:
          yield (dt, shard), DayPart(LAKE_EMPTY, REJECTED_EMPTY, DayStats())
    for shard, piece in pieces.items():
      yield (dt, shard), piece

  def _part(self, dt: str, rows: pa.RecordBatch, payloads: list[bytes],
            skip: np.ndarray | None = None) -> DayPart:
    """The day's part of `rows` (with their `payloads`), less the rows `skip` marks (rejected
    already, elsewhere)."""
    arrival = np.asarray(rows.column(raw.ARRIVAL_MS))
    too_late = (arrival >= 0) & (arrival > day_bounds(dt, self._zone)[1] + self._lateness)
    if skip is not None:
      too_late &= ~skip
    late = validate.explain(rows, np.flatnonzero(too_late), [Reason.TOO_LATE] * int(too_late.sum()),
                            payloads)
    if too_late.any():   # left in, as validation's `skip`, so that the one filter is of the valid rows
      skip = too_late if skip is None else skip | too_late
    env = rows.column('environment')
    env = pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(env), 0), False), env,
                     self._environment)
    result = validate.validate_batch(rows, env, datetime.date.fromisoformat(dt), skip, payloads)
    rejected = pa.Table.from_batches([late, result.rejected]).combine_chunks().to_batches()
    stats = result.stats.add(_stats_of_rejected(late))
    valid = result.valid
    requests = forget.in_force(self._forgotten, dt)
    if requests and valid.num_rows:   # users a forget request erased stay out
      drop = forget.hashed_identifier_rows(valid.column('identifiers'), *requests)
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
  shards: int = 1         # keys per day (--day_shards): a day's work spreads over that many
  iceberg: iceberg_panes.PaneTables | None = None   # --lake_format iceberg: the tables


def _millis(ms: int) -> Timestamp:
  return Timestamp(micros=ms * 1000)


def _staging(s: WriteSettings, directory: str, kind: str) -> str:
  return fs.join(s.lake, names.STAGING_DIR, names.ingest_run(s.run_id), kind,
                      directory.rstrip('/').rsplit('/', 1)[-1])


def _fence(s: WriteSettings, directory: str) -> locks.Fence | None:
  """Batch: the day's lock, which must still be this run's before a step changes `directory`
  (see locks.Fence); streaming jobs take no locks."""
  if not s.batch:
    return None
  dt = directory.rstrip('/').rsplit('dt=', 1)[-1]
  return locks.Fence(locks.lock_path(s.lake, f'dt={dt}'), s.run_id)


def _check_fence(fence: locks.Fence | None, target: str) -> None:
  if fence is not None:
    fence.check('committing', target)


def _directory(s: WriteSettings, kind: str, dt: str) -> str:
  """Where the panes of day `dt` land: the Hive lake's partition (lake or dead letters), or
  the run's folder of the day in the Iceberg table's data folder."""
  if s.iceberg is not None:
    return s.iceberg.directory(kind, dt)
  return fs.partition_dir(s.lake if kind == 'lake' else fs.join(s.lake, names.REJECTED_DIR), dt)


class WriteDays(beam.DoFn):
  """((dt, shard), DayPart) -> (dt, Pane) for each pane the key writes: its buffered rows,
  de-duplicated against what the key wrote before, as files in the day's folders (promoted, not
  yet listed). Early panes at --flush_interval or at --flush_rows rows the key buffers (so a
  worker buffers at most that many per key it holds); the on-time pane when the watermark
  passes the end of the day; late ones up to the close."""
  PENDING = BagStateSpec('pending', PickleCoder())
  DAY = ReadModifyWriteStateSpec('day', PickleCoder())
  SEEN = ReadModifyWriteStateSpec('seen', PickleCoder())   # transforms/kernels/seen.py: compacted ids
  FRESH = BagStateSpec('seen_fresh', PickleCoder())        # and the ids of each pane since
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
              day_state=beam.DoFn.StateParam(DAY), base=beam.DoFn.StateParam(SEEN),
              fresh=beam.DoFn.StateParam(FRESH), on_time=beam.DoFn.TimerParam(ON_TIME),
              close=beam.DoFn.TimerParam(CLOSE), flush=beam.DoFn.TimerParam(FLUSH)):
    key, part = element
    day = day_state.read() or DayState()
    rows = part.valid.num_rows + part.rejected.num_rows
    arming = not day.armed
    if arming:
      end = day_bounds(key[0], self._zone)[1]
      on_time.set(_millis(end - 1))
      close.set(_millis(end - 1 + self._s.allowed_lateness_ms))
      day.armed = True
    if rows:   # else the day's announcement to this shard (SplitDays): the timers are all it needs
      pending.add(part)
      day.pending_rows += rows
      if day.closed or day.pending_rows >= self._s.flush_rows:   # too-late rows: write at once
        yield from self._flush(key, day, pending, base, fresh)
      elif self._s.flush_interval_s and not day.flush_armed:
        flush.set(Timestamp.now() + Duration(seconds=self._s.flush_interval_s))
        day.flush_armed = True
    if rows or arming:
      day_state.write(day)

  @on_timer(FLUSH)
  def on_flush(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
               day_state=beam.DoFn.StateParam(DAY), base=beam.DoFn.StateParam(SEEN),
               fresh=beam.DoFn.StateParam(FRESH)):
    day = day_state.read() or DayState()
    day.flush_armed = False
    yield from self._flush(key, day, pending, base, fresh)
    day_state.write(day)

  @on_timer(ON_TIME)
  def on_time(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
              day_state=beam.DoFn.StateParam(DAY), base=beam.DoFn.StateParam(SEEN),
              fresh=beam.DoFn.StateParam(FRESH)):
    day = day_state.read() or DayState()
    yield from self._flush(key, day, pending, base, fresh, on_time=not day.on_time)
    day_state.write(day)

  @on_timer(CLOSE)
  def on_close(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
               day_state=beam.DoFn.StateParam(DAY), base=beam.DoFn.StateParam(SEEN),
               fresh=beam.DoFn.StateParam(FRESH)):
    day = day_state.read() or DayState()   # batch: both timers fire at the end
    yield from self._flush(key, day, pending, base, fresh, on_time=not day.on_time)
    day.closed = True
    seen.clear(base, fresh)
    day_state.write(day)

  def _flush(self, key: tuple[str, int], day: DayState, pending, base, fresh,
             on_time: bool = False) -> typing.Iterator[tuple[str, Pane]]:
    """Writes the buffered rows as pane `day.pane`; the shard's on-time pane is sent even when
    empty, as the day's commit waits for one from every shard."""
    parts = list(pending.read())
    pending.clear()
    day.pending_rows = 0
    if not parts and not on_time:
      return
    dt, shard = key
    s = self._s
    if s.batch and not day.opened and parts:
      self._open(dt, shard, day, base, fresh, dead_letters_only=not any(p.valid.num_rows for p in parts))
    stats = DayStats()
    for p in parts:
      stats.add(p.stats)
    table, _ = dedupe.dedupe([p.valid for p in parts],
                             unseen=functools.partial(seen.keep_unseen, base=base, fresh=fresh))
    stats.rows_duplicate += sum(p.valid.num_rows for p in parts) - table.num_rows
    stats.rows_written += table.num_rows
    self.written.inc(table.num_rows)
    rejected = pa.Table.from_batches([p.rejected for p in parts], schema=REJECTED_SCHEMA)
    if day.dead_letters:   # a rerun: dead letters the day holds already are not written twice
      rejected = rejected.filter(pa.array([
          key not in day.dead_letters for key in zip(rejected['source_file'].to_pylist(),
                                                     rejected['source_row'].to_pylist())], pa.bool_()))
    pane = Pane(shard, self._write(table, dt, 'lake', day.pane, shard),
                self._write(rejected, dt, 'rejected', day.pane, shard), stats,
                early=not (day.on_time or on_time), index=day.pane)
    day.pane += 1
    day.sent += 1
    if on_time:
      day.on_time, pane.on_time = True, day.sent
    yield dt, pane

  def _write(self, table: pa.Table, dt: str, kind: str, pane: int, shard: int = 0
             ) -> list[commit.StagedFile]:
    """Writes pane `pane` of a partition as files of at most --max_rows_per_file rows, staged
    and then renamed into place, so a listed file is always whole. Names: part-RUN-PANE-FILE,
    and -SHARD after them when a day has more than one. An Iceberg table's files are written in
    place (with the day column and the table's field ids): no snapshot lists them yet."""
    staged = []
    suffix = f'-{shard:04d}' if self._s.shards > 1 else ''
    directory, tables = _directory(self._s, kind, dt), self._s.iceberg
    for i, start in enumerate(range(0, table.num_rows, self._s.max_rows_per_file)):
      name = f'part-{self._s.run_id}-{pane:05d}-{i:03d}{suffix}.parquet'
      rows = table.slice(start, self._s.max_rows_per_file)
      if tables is not None:
        staged.append(commit.write_parquet(tables.file_rows(kind, rows, dt),
                                           fs.join(directory, name), name))
      else:
        staged.append(commit.write_parquet(rows, fs.join(_staging(self._s, directory, kind), name),
                                           name))
    if tables is not None:
      self.files.inc(len(staged))
      return staged
    fence = _fence(self._s, directory)
    if staged and fence:
      fence.check(f'promoting pane {pane}', directory)
    final = [fs.join(directory, f.name) for f in staged]
    fs.rename([f.path for f in staged], final)
    self.files.inc(len(staged))
    return [dataclasses.replace(f, path=p) for f, p in zip(staged, final)]

  def _open(self, dt: str, shard: int, day: DayState, base, fresh, dead_letters_only: bool) -> None:
    """Batch, before the shard's first file: takes the day's lock; unless replacing, the
    insert_ids of this shard the day holds count as seen and its dead letters as written, so a
    row it holds already is a duplicate and a rerun of the same input adds nothing. Panes
    continue after this run's files the day lists, so a reused --run_id never overwrites a
    listed file."""
    self._lock(dt, wait=DEAD_LETTER_WAIT if dead_letters_only else 0)
    day.opened = True
    prefix = f'part-{self._s.run_id}-'
    listed = {kind: self._listed(kind, dt) for kind in ('lake', 'rejected')}
    panes = [path.rsplit('/', 1)[-1][len(prefix):].split('-')[0] for names in listed.values()
             for path in names if path.rsplit('/', 1)[-1].startswith(prefix)]
    day.pane = 1 + max((int(p) for p in panes if p.isdigit()), default=-1)
    if self._s.replace:
      return
    ids = [t['insert_id'].combine_chunks() for t in self._read(listed['lake'], ['insert_id'])]
    ids = [i.filter(pa.array(shards.shard_of(i, self._s.shards) == shard)) for i in ids if len(i)]
    seen.replace(base, fresh, np.unique(np.concatenate([seen.uuid_keys(i) for i in ids]))
                 if ids else seen.EMPTY)
    held = [t.filter(pa.array(shards.row_shard(t, self._s.shards) == shard))
            for t in self._read(listed['rejected'], ['source_file', 'source_row']) if t.num_rows]
    day.dead_letters = frozenset(
        (f, r) for t in held
        for f, r in zip(t['source_file'].to_pylist(), t['source_row'].to_pylist()))

  def _listed(self, kind: str, dt: str) -> list[str]:
    """Paths of the files the partition's manifest lists (none without one), or the Iceberg
    table's current snapshot lists for the day."""
    if self._s.iceberg is not None:
      return iceberg_panes.held_paths(self._s.iceberg, kind, dt)
    directory = _directory(self._s, kind, dt)
    path = fs.join(directory, names.MANIFEST)
    if not fs.exists(path):
      return []
    return [fs.join(directory, f.name)
            for f in Manifest.model_validate_json(fs.read_bytes(path)).files]

  @staticmethod
  def _read(paths: list[str], columns: list[str]) -> list[pa.Table]:
    return [pq.read_table(pa.BufferReader(fs.read_bytes(p)), columns=columns) for p in paths]

  def _lock(self, dt: str, wait: float) -> None:
    """Batch: the day's lock, as the import takes it, so an import and an ingest of one day never
    mix. Every shard of the day takes it: the first one makes it, the others (and a retried
    bundle) find it this run's. Streaming jobs own their days. `wait`: seconds to wait for
    another run to finish the day."""
    partition = f'dt={dt}'
    try:
      locks.acquire(self._s.lake, partition, self._s.run_id,
                    f'run writing {partition} of this lake', break_lock=self._s.break_lock,
                    wait=wait)
    except locks.LockedError as held:
      try:
        locks.Fence(locks.lock_path(self._s.lake, partition), self._s.run_id).check('', '')
      except locks.LockedError:
        raise held from None


class CommitDays(beam.DoFn):
  """(dt, Pane) keyed by day -> a DayReport: 'open' for an early pane; once every shard of the
  day sent its on-time pane and every pane it sent before that is in, the commit (the manifests,
  then _SUCCESS: 'published', or 'failed' accounting); after that, one commit per pane. On an
  Iceberg lake, a snapshot per pane instead (_to_tables)."""
  DAY = ReadModifyWriteStateSpec('day_commit', PickleCoder())

  def __init__(self, settings: WriteSettings):
    self._s = settings

  def process(self, element, day_state=beam.DoFn.StateParam(DAY)) -> typing.Iterator[DayReport]:
    dt, pane = element
    day = day_state.read() or DayCommit()
    day.panes += 1
    day.received[pane.shard] += 1
    if pane.on_time:
      day.expected[pane.shard] = pane.on_time
    day.stats.add(pane.stats)
    day.unlisted['lake'] += pane.lake
    day.unlisted['rejected'] += pane.rejected
    lake_dir, rejected_dir = _directory(self._s, 'lake', dt), _directory(self._s, 'rejected', dt)
    if self._s.iceberg is not None:
      yield from self._to_tables(dt, day, pane)
    elif day.committed and not (pane.lake or pane.rejected or pane.stats.rows_in):
      pass   # an empty on-time pane of a shard that met the day late: nothing to add
    elif day.committed or self._on_time(day):
      yield self._commit_day(dt, day, lake_dir, rejected_dir)
    elif pane.early:
      yield self._report(dt, day, 'open', lake_dir, rejected_dir)
    day_state.write(day)

  def _on_time(self, day: DayCommit) -> bool:
    return len(day.expected) == self._s.shards and all(
        day.received[shard] >= panes for shard, panes in day.expected.items())

  def _to_tables(self, dt: str, day: DayCommit, pane: Pane) -> typing.Iterator[DayReport]:
    """The Iceberg lake (transforms/lake/iceberg_panes.py): streaming, each pane with files
    becomes one snapshot of the day in each table it wrote to, and the pane that makes the day
    on time marks it complete (a snapshot even when it adds nothing); batch, the run's files of
    the day become one snapshot once the day is on time, as the Hive lake publishes them."""
    s, tables = self._s, self._s.iceberg
    assert tables is not None
    completes = not day.committed and self._on_time(day)
    complete = day.committed or completes
    targets = {k: iceberg_day.target(tables.lake, tables.name(k), dt) for k in iceberg_panes.KINDS}
    if s.batch and not complete:
      if pane.early:
        yield self._report(dt, day, 'open', targets['lake'], targets['rejected'])
    elif completes or pane.lake or pane.rejected or (day.committed and pane.stats.rows_in):
      fence = _fence(s, _directory(s, 'lake', dt))
      labels = {} if s.batch else {iceberg_panes.SNAPSHOT_SHARD: str(pane.shard),
                                   iceberg_panes.SNAPSHOT_PANE: str(pane.index)}
      replacing = s.replace and bool(day.unlisted['lake'])   # dead letters alone replace nothing
      commit.checkpoint('staged', targets['lake'])
      done = {}
      for kind in ('rejected', 'lake'):   # dead letters first, as the import commits them
        done[kind] = iceberg_panes.commit_files(
            tables, kind, dt, [f.path for f in day.unlisted[kind]], s.run_id, complete=complete,
            replace=replacing, labels=labels, before_commit=functools.partial(
                _check_fence, fence, targets[kind]))
        commit.checkpoint(f'{kind}_committed', targets['lake'])
      day.rows_replaced += done['lake'].rows_replaced
      day.unlisted = {'lake': [], 'rejected': []}
      day.committed = complete
      if s.batch:
        locks.release([locks.lock_path(s.lake, f'dt={dt}')], s.run_id)
      status: Status = 'open' if not complete else 'published' if done['lake'].files \
          else 'rejected_only'
      yield self._report(dt, day, status, targets['lake'], targets['rejected'],
                         files=done['lake'].files, size=done['lake'].bytes,
                         snapshot_id=done['lake'].snapshot_id)

  def _commit_day(self, dt: str, day: DayCommit, lake_dir: str, rejected_dir: str) -> DayReport:
    """Commits the files the day's panes wrote since the last commit."""
    s = self._s
    replacing = s.replace and bool(day.unlisted['lake'])   # dead letters alone replace nothing
    manifest = self._commit(lake_dir, 'lake', day.unlisted['lake'], LAKE_SCHEMA, replacing, day)
    self._commit(rejected_dir, 'rejected', day.unlisted['rejected'], REJECTED_SCHEMA,
                 replacing)
    day.unlisted = {'lake': [], 'rejected': []}
    day.committed = True
    if s.batch:
      locks.release([locks.lock_path(s.lake, f'dt={dt}')], s.run_id)
    status: Status = 'published' if manifest is not None else 'rejected_only'
    return self._report(dt, day, status, lake_dir, rejected_dir, manifest)

  def _commit(self, directory: str, kind: str, new: list[commit.StagedFile], schema: pa.Schema,
              replace: bool, day: DayCommit | None = None) -> Manifest | None:
    """The partition commit (commit.commit_partition) adding `new` to the day, version + 1.
    With `replace`, the manifest lists `new` only and every other file goes (their rows counted
    in `day.rows_replaced`), unpublished meanwhile as in the import. With nothing new, a
    partition that does not exist is not made (a day of dead letters only has no lake day), and
    a batch run leaves it as it was."""
    path = fs.join(directory, names.MANIFEST)
    old = Manifest.model_validate_json(fs.read_bytes(path)) if fs.exists(path) else None
    if not new and (old is None or (self._s.batch and not replace)):
      return old
    manifest = commit.manifest_for(new, run_id=self._s.run_id, pipeline='ingest',
                                   source='raw events', partition=directory, schema=schema)
    if replace and old is not None:
      manifest = manifest.model_copy(update={'version': old.version + 1})
      if day is not None:
        day.rows_replaced += sum(f.rows for f in old.files if f.name not in {n.name for n in new})
    return commit.commit_partition(
        directory, new, manifest, fence=_fence(self._s, directory),
        append_via=None if replace else fs.join(_staging(self._s, directory, kind),
                                                     names.MANIFEST))

  def _report(self, dt: str, day: DayCommit, status: Status, lake_dir: str, rejected_dir: str,
              lake: Manifest | None = None, files: int | None = None, size: int | None = None,
              snapshot_id: int | None = None) -> DayReport:
    """`files` and `size`: of an Iceberg day (the Hive day's come from its manifest)."""
    st = day.stats
    error = st.balance_error() if status in ('published', 'rejected_only') else None
    report = DayReport(
        dt=dt, status='failed' if error else status, message=error or '',
        rows_in=st.rows_in, rows_written=st.rows_written, rows_rejected=st.rows_rejected,
        rows_duplicate=st.rows_duplicate, rows_replaced=day.rows_replaced,
        rows_forgotten=st.rows_forgotten,
        rejected_by_reason=dict(sorted(st.rejected.items())),
        flags={k: v for k, v in sorted(st.flags.items()) if v},
        files=files if files is not None else len(lake.files) if lake else 0
        if status == 'published' else day.panes,
        bytes=size if size is not None else lake.bytes if lake else 0,
        partition='' if status == 'rejected_only' else lake_dir, rejected_partition=rejected_dir,
        snapshot_id=snapshot_id)
    fs.write_bytes(fs.join(self._s.lake, names.RUNS_DIR, names.ingest_run(self._s.run_id),
                                     f'dt={dt}.json'), report.model_dump_json(indent=2).encode())
    return report


class IngestEvents(beam.PTransform):
  """RawChunks -> the lake, day by day; outputs a DayReport at each pane and commit of a day."""

  def __init__(self, settings: WriteSettings, environment: str):
    super().__init__()
    self._s = settings
    self._environment = environment

  def expand(self, chunks):
    return (chunks
            | 'SplitDays' >> beam.ParDo(SplitDays(
                self._s.zone, self._environment, self._s.allowed_lateness_ms,
                self._s.shards, self._s.lake)).with_output_types(tuple[tuple[str, int], DayPart])
            | 'WriteDays' >> beam.ParDo(WriteDays(self._s)).with_output_types(tuple[str, Pane])
            | 'CommitDays' >> beam.ParDo(CommitDays(self._s)).with_output_types(DayReport))


beam.coders.registry.register_coder(DayPart, PickleCoder)
beam.coders.registry.register_coder(Pane, PickleCoder)
