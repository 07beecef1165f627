"""Column normalizations of the import contract, all vectorized.

Map keys are lower-cased. When two keys of one map become equal after lower-casing (`UserId` and
`userid`), one entry is kept: the one whose key was already lower-case, else the first in the map's
order. Each dropped entry is counted as a `map_key_collision`.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['lower_map_keys', 'lower_uuid']


def lower_map_keys(arr: pa.MapArray) -> tuple[pa.MapArray, int]:
  """-> (map with lower-case keys and no duplicate keys in rows that needed lowering, entries dropped)."""
  offsets = np.asarray(arr.offsets, dtype=np.int64)
  start, end = int(offsets[0]), int(offsets[-1])
  keys = arr.keys.slice(start, end - start)
  items = arr.items.slice(start, end - start)
  offsets = offsets - start
  lowered = pc.utf8_lower(keys)
  changed = np.asarray(pc.fill_null(pc.not_equal(keys, lowered), False), dtype=bool)
  if not changed.any():
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items), 0
  parent = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  touched_rows = np.zeros(len(offsets) - 1, dtype=bool)
  touched_rows[parent[changed]] = True
  keep = _first_per_key(parent, lowered, changed, touched_rows[parent])
  if keep.all():   # no collision: the common case needs no copy of the entries
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), lowered, items), 0
  kept_per_row = np.bincount(parent[keep], minlength=len(offsets) - 1)
  new_offsets = np.concatenate([[0], np.cumsum(kept_per_row)])
  positions = np.flatnonzero(keep)
  return (pa.MapArray.from_arrays(pa.array(new_offsets, pa.int32()), lowered.take(positions),
                                  items.take(positions)),
          int(len(keep) - keep.sum()))


def _first_per_key(parent: np.ndarray, lowered: pa.Array, changed: np.ndarray,
                   candidate: np.ndarray) -> np.ndarray:
  """Mask of entries to keep: within each candidate row, one entry per lowered key."""
  keep = np.ones(len(parent), dtype=bool)
  idx = np.flatnonzero(candidate)
  entries = pa.table({'row': parent[idx], 'key': lowered.take(idx), 'was_upper': changed[idx],
                      'pos': idx})
  order = pc.sort_indices(entries, sort_keys=[('row', 'ascending'), ('key', 'ascending'),
                                              ('was_upper', 'ascending'), ('pos', 'ascending')])
  ordered = entries.take(order)
  rows = ordered['row'].to_numpy()
  same_as_previous = np.zeros(len(rows), dtype=bool)
  if len(rows) > 1:
    key_eq = np.asarray(pc.fill_null(pc.equal(ordered['key'][1:], ordered['key'][:-1]), False))
    same_as_previous[1:] = (rows[1:] == rows[:-1]) & key_eq
  keep[ordered['pos'].to_numpy()[same_as_previous]] = False
  return keep


def lower_uuid(arr: pa.Array) -> pa.Array:
  return pc.utf8_lower(pc.utf8_trim_whitespace(arr))
