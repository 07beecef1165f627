"""The insert_ids one (day, shard) key of the streaming ingest has written, kept as Beam state
whose writes follow the pane, not the day.

Two state cells per key: BASE, one sorted array of 16-byte keys (uuid_keys), and FRESH, a
bag of one sorted array per pane written since BASE was last rewritten. A pane reads both, drops
its rows whose ids they hold, and adds its own ids as one more FRESH element. Once FRESH holds
RATIO x as many ids as BASE, or MAX_FRESH arrays, everything is merged into BASE and FRESH is
cleared (a compaction).

What that costs (PickleCoder of a numpy 'S16' array: 16 bytes per id plus about 150 per array):
  - held: 16 bytes per distinct id; per key, 16 x the day's distinct ids / --day_shards (ids are
    random, so shards are even); per open day, 16 x its distinct ids over all its keys; dropped
    when the day closes (--allowed_lateness after its end);
  - written per pane: 16 x the pane's new ids; a compaction rewrites the key's ids, but it comes
    only after FRESH grew by RATIO x BASE, so it writes at most (1 + 1 / RATIO) x what FRESH took:
    over a day, at most 16 x (2 + 1 / RATIO) = 64 bytes per distinct id, however many panes.
    MAX_FRESH bounds the arrays a pane searches; a day of many tiny panes compacts every
    MAX_FRESH panes instead, each time rewriting its key's ids;
  - read per pane: the key's ids (a runner's state cache usually holds them).
Before, one key per day rewrote the day's whole array at every pane (16 x the day's ids).
"""
import numpy as np
import pyarrow as pa


__all__ = ['RATIO', 'MAX_FRESH', 'EMPTY', 'uuid_keys', 'held_in', 'keep_unseen', 'drop_seen', 'compacts',
           'record',
           'replace', 'clear']

RATIO = 0.5
MAX_FRESH = 64
EMPTY = np.zeros(0, dtype='S16')


# Where the 32 hex digits of an 8-4-4-4-12 id are.
_DIGITS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def uuid_keys(insert_id: pa.Array) -> np.ndarray:
  """Validated insert_ids (lower-case 8-4-4-4-12 hex) -> 16-byte keys ('S16'), a third of the
  memory of the text, for the streaming horizon of seen ids."""
  ids = insert_id.cast(pa.string())
  n = len(ids)
  if n == 0:
    return EMPTY
  offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + n + 1]
  if ids.null_count or offsets[-1] - offsets[0] != 36 * n:
    raise ValueError('uuid_keys takes validated insert_ids (36 characters each)')
  text = np.frombuffer(ids.buffers()[2], dtype=np.uint8, count=36 * n, offset=offsets[0]).reshape(n, 36)
  hexes = text[:, _DIGITS]
  digits = (hexes & 0xF) + 9 * (hexes >> 6)   # '0'-'9' -> 0-9, 'a'-'f' -> 10-15, no table
  return np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2]).view('S16').ravel()


def _halves(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """'S16' keys -> their first and last 8 bytes as numbers, whose order is the keys' order
  (numpy compares 'S16' values byte by byte, several times slower)."""
  words = keys.view('>u8').reshape(-1, 2)
  return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _in_order(keys: np.ndarray) -> np.ndarray:
  """Sorted distinct `keys`: as they are when they come sorted (from dedupe, they do), else by
  their first halves, bytewise only where two share one."""
  if len(keys) < 2 or (keys[1:] > keys[:-1]).all():
    return keys
  high = _halves(keys)[0]
  order = np.argsort(high)
  if (high[order][1:] == high[order][:-1]).any():
    return np.sort(keys)
  return keys[order]


def _search(known: np.ndarray, high: np.ndarray, keys: np.ndarray, key_high: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """-> (for each key, the first position in sorted `known` whose first half is not below the
  key's; whether that entry's first half equals the key's). Numbers, not bytes, are compared,
  and queries in order: a search of 1M random 64-bit queries took 26x the time of sorted ones."""
  if len(key_high) > 1 and not (key_high[1:] >= key_high[:-1]).all():
    order = np.argsort(key_high)
    at = np.empty(len(keys), dtype=np.int64)
    at[order] = np.searchsorted(high, key_high[order])
  else:
    at = np.searchsorted(high, key_high)
  clipped = np.minimum(at, len(known) - 1)
  return at, high[clipped] == key_high


def held_in(known: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """-> which of `keys` the sorted, distinct 'S16' array `known` holds: the first 8 bytes
  searched, the last 8 compared; a key whose first 8 bytes several known ones share (about one
  in 10^11 pairs of random ids) is searched bytewise."""
  if not len(known) or not len(keys):
    return np.zeros(len(keys), dtype=bool)
  high, low = _halves(known)
  key_high, key_low = _halves(keys)
  at, same_high = _search(known, high, keys, key_high)
  at = np.minimum(at, len(known) - 1)
  hit = same_high & (low[at] == key_low)
  after = np.minimum(at + 1, len(known) - 1)
  shared = np.flatnonzero(same_high & ~hit & (after > at) & (high[after] == key_high))
  if len(shared):
    full = np.minimum(np.searchsorted(known, keys[shared]), len(known) - 1)
    hit[shared] = known[full] == keys[shared]
  return hit


def _merged(known: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Sorted distinct `known` and `keys` (none in `known`) -> one sorted array. Where a key shares
  its first half with a known id (rare), its place is found bytewise."""
  if not len(known):
    return keys
  at, same_high = _search(known, _halves(known)[0], keys, _halves(keys)[0])
  shared = np.flatnonzero(same_high)
  if len(shared):
    at[shared] = np.searchsorted(known, keys[shared])
  return np.insert(known, at, keys)


def keep_unseen(insert_id: pa.Array, base, fresh) -> np.ndarray:
  """-> which of the distinct `insert_id`s the key's state (`base`, a ReadModifyWriteState, and
  `fresh`, a BagState) does not hold; records them."""
  keys = uuid_keys(insert_id)
  held = base.read()
  held = EMPTY if held is None else held
  chunks = list(fresh.read())
  new = np.ones(len(keys), dtype=bool)
  for known in [held, *chunks]:
    new &= ~held_in(known, keys)
  keys = keys[new]
  if len(keys):
    record(base, fresh, held, chunks, _in_order(keys))
  return new


def drop_seen(table: pa.Table, base, fresh) -> pa.Table:
  """-> the rows of `table` (one per insert_id) whose insert_id the key's state does not hold;
  records theirs (keep_unseen)."""
  new = keep_unseen(table['insert_id'].combine_chunks(), base, fresh)
  return table if new.all() else table.filter(pa.array(new))


def compacts(held: int, fresh: list[int], new: int) -> bool:
  """Whether adding `new` ids to a key holding `held` in BASE and `fresh` in FRESH compacts."""
  return len(fresh) + 1 >= MAX_FRESH or sum(fresh) + new >= RATIO * held


def record(base, fresh, held: np.ndarray, chunks: list[np.ndarray], keys: np.ndarray) -> None:
  """Adds the sorted new `keys` to the state: one FRESH element, or a compaction (see above)."""
  if not compacts(len(held), [len(c) for c in chunks], len(keys)):
    fresh.add(keys)
    return
  small = _in_order(np.concatenate([*chunks, keys]))   # a merge into the big array, not a sort of it
  base.write(_merged(held, small))
  fresh.clear()


def replace(base, fresh, keys: np.ndarray) -> None:
  """The state holds `keys` (sorted, distinct) only."""
  base.write(keys)
  fresh.clear()


def clear(base, fresh) -> None:
  base.clear()
  fresh.clear()
