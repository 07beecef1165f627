"""De-duplication by insert_id, sharded so each shard is owned by one worker.

Rows reach their shard through files, not through Beam's shuffle: each validated batch is split by
shard (the import's validation already yields one batch per shard) and spilled as an Arrow IPC
file under the run's staging prefix (`spill`), and only the file paths cross the GroupByKey. On
the FnApiRunner this cut a 1M-event import from 22 s to a few seconds (the runner copies large
elements several times through protobuf), and on Dataflow it keeps shuffle volume tiny. Spill
names derive from the incoming batch's source file and first row, so a retried bundle overwrites
its own files.

A row's shard comes from its insert_id (transforms/kernels/shards.py), so every copy of an insert_id
meets in the same shard, whichever file or worker it came from. Within a shard one sort by
(insert_id, ts, source file, source row) both picks the survivor of each insert_id (the earliest
ts; ties go to the first file name, then the first row). Output rows keep the source order (file
name, then row number), so the same input always gives byte-identical files.
"""
import hashlib
import io
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from schemas.events import LAKE_SCHEMA, SOURCE_FILE, SOURCE_ROW
from transforms.stores import fs
from transforms.kernels.shards import split_by_shard
from transforms.kernels.accounting import DayStats
from transforms.kernels.lineage import per_source_file

__all__ = ['NEW', 'SEEN', 'ShardKey', 'spill', 'unspill', 'spill_name', 'dedupe', 'SpillShards',
           'DedupeShard', 'DedupeEvents', 'ReadSeenIds', 'LookbackIds']

NEW, SEEN = 'new', 'seen'
ShardKey = tuple[str, int]


def spill(batch: pa.RecordBatch, path: str) -> None:
  """lz4 on local scratch, zstd on remote stores, where bytes travel. Per 1M events (bench input,
  no checksum): lz4 0.40-0.48 s to write and read back, 271 MiB; zstd 0.53-0.57 s, 167 MiB;
  uncompressed 0.32-0.70 s (slowest when the page cache was cold), 488 MiB."""
  local = fs.FileSystems.get_scheme(path) is None
  options = pa.ipc.IpcWriteOptions(compression='lz4' if local else 'zstd')
  with fs.open_write(path, checksum=False) as f, \
      pa.ipc.new_stream(f, batch.schema, options=options) as writer:
    writer.write_batch(batch)


def unspill(path: str) -> pa.Table:
  """Reads the file into Arrow's allocator, which reuses the pages it holds: a Python bytes object
  of this size is a fresh mmap that faults in every page again."""
  with fs.open_read(path) as f:
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    buffer = pa.allocate_buffer(size)
    view, done = memoryview(buffer), 0
    while done < size:
      got = f.readinto(view[done:])
      if not got:
        raise OSError(f'{path} ended after {done} of {size} bytes')
      done += got
  return pa.ipc.open_stream(buffer).read_all()


def spill_name(batch: pa.RecordBatch) -> str:
  """Deterministic per batch: its source file and first row (the lineage columns)."""
  first = f'{batch.column(SOURCE_FILE)[0]}:{batch.column(SOURCE_ROW)[0]}'
  return hashlib.sha1(first.encode()).hexdigest()[:20] + '.arrows'


def _lineage_start(part: pa.Table | pa.RecordBatch) -> tuple[str, int]:
  return str(part.column(SOURCE_FILE)[0]), part.column(SOURCE_ROW)[0].as_py()


def dedupe(parts: list[pa.Table | pa.RecordBatch], seen: typing.Sequence[pa.Array] = (),
           unseen: typing.Callable[[pa.Array], np.ndarray] | None = None) -> tuple[pa.Table, int]:
  """-> (one row per insert_id not in `seen`, in LAKE_SCHEMA, in source order; rows dropped).
  `unseen`: given the surviving insert_ids (distinct, in ascending order), the mask of those to
  keep (streaming: those its key has not written, seen.keep_unseen), in the same one filter.

  Parts are contiguous row ranges of source files; concatenated in (file, first row) order they
  give a table in source order whatever order they arrived in. Survivors are found with one sort of
  the key columns and kept with a filter, which preserves that order (a gather in sorted order was
  5x slower)."""
  parts = sorted((p for p in parts if p.num_rows), key=_lineage_start)
  if not parts:
    return LAKE_SCHEMA.empty_table(), 0
  table = pa.concat_tables([piece for p in parts for piece in per_source_file(p)])
  ids = table['insert_id'].combine_chunks()
  keys = pa.table({**_id_words(ids), 'ts': table['ts'], SOURCE_FILE: table[SOURCE_FILE],
                   SOURCE_ROW: table[SOURCE_ROW]})
  order = pc.sort_indices(keys, sort_keys=[(k, 'ascending') for k in keys.column_names])
  ids = ids.take(order)
  first = np.ones(len(ids), dtype=bool)
  if len(ids) > 1:
    first[1:] = np.asarray(pc.not_equal(ids[1:], ids[:-1]))
  if seen:
    known = pa.concat_arrays([s.cast(pa.string()) for s in seen])
    first &= ~np.asarray(pc.is_in(ids, value_set=known))
  if unseen is not None:
    survivors = np.flatnonzero(first)
    first[survivors[~unseen(ids.take(survivors))]] = False
  keep = np.zeros(len(ids), dtype=bool)
  keep[np.asarray(order)[first]] = True
  out = table.select(LAKE_SCHEMA.names).filter(pa.array(keep))
  return out.cast(LAKE_SCHEMA), table.num_rows - int(keep.sum())


def _id_words(ids: pa.Array) -> dict[str, np.ndarray]:
  """Validated insert_ids (36 ASCII characters each) as five integer columns of their bytes. Equal
  ids have equal words, so sorting on them groups the copies of an id as the text does, and it
  sorted 1M events in 0.12 s against 0.31 s. The words are read big-endian, so their order is the
  text's: the survivors come out sorted, as seen.keep_unseen wants them."""
  n = len(ids)
  offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + n + 1]
  start = offsets[0]
  if ids.null_count or offsets[-1] - start != 36 * n:
    raise ValueError('dedupe takes validated insert_ids (36 characters each)')
  text = np.frombuffer(ids.buffers()[2], dtype=np.uint8, count=36 * n, offset=start).reshape(n, 36)
  head = np.ascontiguousarray(text[:, :32]).view('>u8')
  words: dict[str, np.ndarray] = {f'id{i}': head[:, i].astype(np.uint64) for i in range(4)}
  words['id4'] = np.ascontiguousarray(text[:, 32:]).view('>u4').ravel().astype(np.uint32)
  return words


class SpillShards(beam.DoFn):
  """(dt, batch) -> ((dt, shard), (NEW, spill file path)) for every shard the batch touches."""

  def __init__(self, shards: dict[str, int], spill_root: str):
    self._shards = shards
    self._root = spill_root

  def process(self, element: tuple[str, pa.RecordBatch]
              ) -> typing.Iterator[tuple[ShardKey, tuple[str, str]]]:
    dt, batch = element
    name = spill_name(batch)
    for shard, part in split_by_shard(batch, self._shards[dt]):
      path = fs.join(fs.partition_dir(self._root, dt), f'shard={shard:05d}', name)
      spill(part, path)
      yield (dt, shard), (NEW, path)


class DedupeShard(beam.DoFn):
  """((dt, shard), [(NEW, spill path) | (SEEN, ids)]) -> ((dt, shard), table); 'stats' tagged."""
  duplicates = Metrics.counter('eventferry.dedupe', 'rows_duplicate')

  def process(self, element):
    (dt, shard), values = element
    new = sorted(v for kind, v in values if kind == NEW)
    seen = [v for kind, v in values if kind == SEEN]
    if not new:
      return
    table, dropped = dedupe([unspill(path) for path in new], seen)
    fs.delete(new)
    self.duplicates.inc(dropped)
    yield beam.pvalue.TaggedOutput('stats', (dt, DayStats(rows_duplicate=dropped)))
    yield (dt, shard), table


class DedupeEvents(beam.PTransform):
  """(dt, batch) -> ((dt, shard), deduplicated sorted table); outputs 'main' and 'stats'.
  Batches travel to their shard as spill files under `spill_root`.

  `seen` optionally carries ((dt, shard), (SEEN, insert_ids)) of earlier lake days to drop too."""

  def __init__(self, shards: dict[str, int], spill_root: str,
               seen: beam.PCollection | None = None):
    super().__init__()
    self._shards = shards
    self._spill_root = spill_root
    self._seen = seen

  def expand(self, events):
    keyed = events | 'SpillShards' >> beam.ParDo(SpillShards(self._shards, self._spill_root))
    if self._seen is not None:
      keyed = (keyed, self._seen) | 'WithSeenIds' >> beam.Flatten()
    return (keyed
            | 'GroupShards' >> beam.GroupByKey()
            | 'DedupeShard' >> beam.ParDo(DedupeShard()).with_output_types(
                tuple[ShardKey, pa.Table]).with_outputs('stats', main='main'))


class ReadSeenIds(beam.DoFn):
  """(dt, committed lake file) -> ((dt, shard), (SEEN, insert_ids)) for --dedupe_lookback_days."""

  def __init__(self, shards: dict[str, int]):
    self._shards = shards

  def process(self, element: tuple[str, str]):
    dt, path = element
    ids = fs.read_parquet(path, ['insert_id'])
    batch = pa.RecordBatch.from_arrays([ids['insert_id'].combine_chunks()], names=['insert_id'])
    for shard, part in split_by_shard(batch, self._shards[dt]):
      yield (dt, shard), (SEEN, part.column('insert_id'))


class LookbackIds(beam.PTransform):
  """(dt, earlier lake file) pairs -> ((dt, shard), (SEEN, insert_ids)) for DedupeEvents'
  `seen` (--dedupe_lookback_days)."""

  def __init__(self, files: list[tuple[str, str]], shards: dict[str, int]):
    super().__init__()
    self._files = files
    self._shards = shards

  def expand(self, pbegin):
    return (pbegin
            | 'LookbackFiles' >> beam.Create(self._files)
            | 'ReadSeenIds' >> beam.ParDo(ReadSeenIds(self._shards)))
