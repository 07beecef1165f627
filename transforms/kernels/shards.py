"""Which shard of a day a row belongs to, and splitting batches by shard.

A row's shard comes from the last 8 hex digits of its (validated, lower-case) insert_id, so every
copy of an insert_id meets in the same shard, whichever file or worker it came from.
"""
import typing
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['HEX_VALUE', 'shard_of', 'split_by_shard']

HEX_VALUE = np.zeros(256, dtype=np.uint32)
for _i, _c in enumerate(b'0123456789abcdef'):
  HEX_VALUE[_c] = _i


def shard_of(insert_id: pa.Array, shards: int) -> np.ndarray:
  """Shard number of each validated insert_id (36 lower-case ASCII characters)."""
  insert_id = insert_id.cast(pa.string())
  offsets = np.frombuffer(insert_id.buffers()[1], dtype=np.int32)[
      insert_id.offset:insert_id.offset + len(insert_id) + 1].astype(np.int64)
  data = np.frombuffer(insert_id.buffers()[2], dtype=np.uint8)
  value: np.ndarray = np.zeros(len(insert_id), dtype=np.uint32)
  for k in range(28, 36):
    value = (value << 4) | HEX_VALUE[data[offsets[:-1] + k]]
  return (value % shards).astype(np.int64)


def split_by_shard(batch: pa.RecordBatch, shards: int, keep: np.ndarray | None = None
                   ) -> typing.Iterator[tuple[int, pa.RecordBatch]]:
  """-> (shard, its rows of `batch` in batch order) for each shard holding rows. With `keep`, only
  those rows (the others need not have a valid insert_id): filtering and splitting in one pass
  copies the rows once. A batch that lies in one shard is passed on without a copy."""
  if keep is not None and keep.all():
    keep = None
  if batch.num_rows == 0 or (keep is not None and not keep.any()):
    return
  if shards == 1:
    yield 0, batch if keep is None else batch.filter(pa.array(keep))
    return
  ids = batch.column('insert_id')
  shard = np.full(batch.num_rows, -1, dtype=np.int64)
  if keep is None:
    shard[:] = shard_of(ids, shards)
  else:
    shard[keep] = shard_of(ids.filter(pa.array(keep)), shards)
  present = np.unique(shard[shard >= 0])
  if keep is None and len(present) == 1:
    yield int(present[0]), batch
    return
  for s in present:   # a filter per shard measured faster than one argsort and take
    yield int(s), batch.filter(pa.array(shard == s))


def row_shard(rows: pa.RecordBatch | pa.Table, shards: int) -> np.ndarray:
  """Shard of each dead letter, from its source file and row (it may have no valid insert_id):
  a day's dead letters spread over its shards, and a rerun files each under the same one."""
  files = pc.dictionary_encode(rows.column('source_file'))
  if isinstance(files, pa.ChunkedArray):
    files = files.combine_chunks()
  names = files.dictionary.to_pylist()
  file_hash = np.array([zlib.crc32((n or '').encode()) for n in names] or [0], dtype=np.int64)
  source_row = np.asarray(pc.fill_null(rows.column('source_row'), 0), dtype=np.int64)
  index = np.asarray(pc.fill_null(files.indices, 0), dtype=np.int64)
  return (file_hash[index] + source_row) % shards
