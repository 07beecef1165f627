"""De-duplication by insert_id, sharded so each shard is owned by one worker.

A row's shard comes from the last 8 hex digits of its (validated, lower-case) insert_id, so every
copy of an insert_id meets in the same shard, whichever file or worker it came from. Within a shard
one sort by (insert_id, ts, source file, source row) both picks the survivor of each insert_id (the
earliest ts; ties go to the first file name, then the first row) and fixes the row order of the
output, so the same input always gives byte-identical files.
"""
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from schemas.events import LAKE_SCHEMA
from transforms.accounting import DayStats
from transforms.validate import SOURCE_FILE, SOURCE_ROW

_HEX_VALUE = np.zeros(256, dtype=np.uint32)
for _i, _c in enumerate(b'0123456789abcdef'):
  _HEX_VALUE[_c] = _i

NEW, SEEN = 'new', 'seen'
ShardKey = tuple[str, int]


def shard_of(insert_id: pa.Array, shards: int) -> np.ndarray:
  """Shard number of each validated insert_id (36 lower-case ASCII characters)."""
  insert_id = insert_id.cast(pa.string())
  offsets = np.frombuffer(insert_id.buffers()[1], dtype=np.int32)[
      insert_id.offset:insert_id.offset + len(insert_id) + 1].astype(np.int64)
  data = np.frombuffer(insert_id.buffers()[2], dtype=np.uint8)
  value = np.zeros(len(insert_id), dtype=np.uint32)
  for k in range(28, 36):
    value = (value << 4) | _HEX_VALUE[data[offsets[:-1] + k]]
  return (value % shards).astype(np.int64)


def split_by_shard(batch: pa.RecordBatch, shards: int) -> typing.Iterator[tuple[int, pa.RecordBatch]]:
  if shards == 1:
    yield 0, batch
    return
  shard = shard_of(batch.column('insert_id'), shards)
  order = np.argsort(shard, kind='stable')
  ordered = batch.take(pa.array(order))
  bounds = np.concatenate([[0], np.cumsum(np.bincount(shard, minlength=shards))])
  for s in range(shards):
    if bounds[s + 1] > bounds[s]:
      yield s, ordered.slice(bounds[s], bounds[s + 1] - bounds[s])


def dedupe(batches: list[pa.RecordBatch], seen: list[pa.Array] = ()) -> tuple[pa.Table, int]:
  """-> (one row per insert_id not in `seen`, sorted by insert_id, in LAKE_SCHEMA; rows dropped)."""
  if not batches:
    return LAKE_SCHEMA.empty_table(), 0
  table = pa.Table.from_batches(batches)
  keys = table.select(['insert_id', 'ts', SOURCE_FILE, SOURCE_ROW])
  order = pc.sort_indices(keys, sort_keys=[('insert_id', 'ascending'), ('ts', 'ascending'),
                                           (SOURCE_FILE, 'ascending'), (SOURCE_ROW, 'ascending')])
  ids = keys['insert_id'].take(order).combine_chunks()
  first = np.ones(len(ids), dtype=bool)
  if len(ids) > 1:
    first[1:] = np.asarray(pc.not_equal(ids[1:], ids[:-1]))
  if seen:
    known = pa.concat_arrays([s.cast(pa.string()) for s in seen])
    first &= ~np.asarray(pc.is_in(ids, value_set=known))
  survivors = order.filter(pa.array(first))
  out = table.select(LAKE_SCHEMA.names).take(survivors)
  return out.cast(LAKE_SCHEMA), table.num_rows - len(survivors)


class AssignShards(beam.DoFn):
  def __init__(self, shards: dict[str, int]):
    self._shards = shards

  def process(self, element: tuple[str, pa.RecordBatch]
              ) -> typing.Iterator[tuple[ShardKey, tuple[str, pa.RecordBatch]]]:
    dt, batch = element
    for shard, part in split_by_shard(batch, self._shards[dt]):
      yield (dt, shard), (NEW, part)


class DedupeShard(beam.DoFn):
  """((dt, shard), [(NEW, batch) | (SEEN, ids)]) -> ((dt, shard), table); stats tagged 'stats'."""
  duplicates = Metrics.counter('eventferry.dedupe', 'rows_duplicate')

  def process(self, element):
    (dt, shard), values = element
    new = [v for kind, v in values if kind == NEW]
    seen = [v for kind, v in values if kind == SEEN]
    if not new:
      return
    table, dropped = dedupe(new, seen)
    self.duplicates.inc(dropped)
    yield beam.pvalue.TaggedOutput('stats', (dt, DayStats(rows_duplicate=dropped)))
    yield (dt, shard), table


class DedupeEvents(beam.PTransform):
  """(dt, batch) -> ((dt, shard), deduplicated sorted table); outputs 'main' and 'stats'.

  `seen` optionally carries ((dt, shard), (SEEN, insert_ids)) of earlier lake days to drop too."""

  def __init__(self, shards: dict[str, int], seen: beam.PCollection | None = None):
    super().__init__()
    self._shards = shards
    self._seen = seen

  def expand(self, events):
    keyed = events | 'AssignShards' >> beam.ParDo(AssignShards(self._shards))
    if self._seen is not None:
      keyed = (keyed, self._seen) | 'WithSeenIds' >> beam.Flatten()
    return (keyed
            | 'GroupShards' >> beam.GroupByKey()
            | 'DedupeShard' >> beam.ParDo(DedupeShard()).with_outputs('stats', main='main'))
