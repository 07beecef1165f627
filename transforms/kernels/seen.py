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
import pyarrow.compute as pc

from transforms.kernels.shards import HEX_VALUE

__all__ = ['RATIO', 'MAX_FRESH', 'EMPTY', 'uuid_keys', 'drop_seen', 'compacts', 'record',
           'replace', 'clear']

RATIO = 0.5
MAX_FRESH = 64
EMPTY = np.zeros(0, dtype='S16')


def uuid_keys(insert_id: pa.Array) -> np.ndarray:
  """Validated insert_ids (lower-case 8-4-4-4-12 hex) -> 16-byte keys ('S16'), a third of the
  memory of the text, for the streaming horizon of seen ids."""
  hexes = pc.replace_substring(insert_id.cast(pa.string()), '-', '')
  if len(hexes) == 0:
    return np.zeros(0, dtype='S16')
  data = np.frombuffer(hexes.buffers()[2], dtype=np.uint8)
  start = np.frombuffer(hexes.buffers()[1], dtype=np.int32)[hexes.offset]
  digits = HEX_VALUE[data[start:start + 32 * len(hexes)]].reshape(-1, 16, 2).astype(np.uint8)
  packed = np.ascontiguousarray((digits[:, :, 0] << 4) | digits[:, :, 1])
  return packed.view('S16').ravel()


def drop_seen(table: pa.Table, base, fresh) -> pa.Table:
  """-> the rows of `table` (one per insert_id) whose insert_id the key's state (`base`, a
  ReadModifyWriteState, and `fresh`, a BagState) does not hold; records theirs."""
  keys = uuid_keys(table['insert_id'].combine_chunks())
  held = base.read()
  held = EMPTY if held is None else held
  chunks = list(fresh.read())
  new = np.ones(len(keys), dtype=bool)
  for known in [held, *chunks]:
    if len(known):
      at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
      new &= known[at] != keys
  if not new.all():
    table, keys = table.filter(pa.array(new)), keys[new]
  if len(keys):
    record(base, fresh, held, chunks, np.sort(keys))
  return table


def compacts(held: int, fresh: list[int], new: int) -> bool:
  """Whether adding `new` ids to a key holding `held` in BASE and `fresh` in FRESH compacts."""
  return len(fresh) + 1 >= MAX_FRESH or sum(fresh) + new >= RATIO * held


def record(base, fresh, held: np.ndarray, chunks: list[np.ndarray], keys: np.ndarray) -> None:
  """Adds the sorted new `keys` to the state: one FRESH element, or a compaction (see above)."""
  if not compacts(len(held), [len(c) for c in chunks], len(keys)):
    fresh.add(keys)
    return
  small = np.sort(np.concatenate([*chunks, keys]))   # a merge into the big array, not a sort of it
  base.write(np.insert(held, np.searchsorted(held, small), small))
  fresh.clear()


def replace(base, fresh, keys: np.ndarray) -> None:
  """The state holds `keys` (sorted, distinct) only."""
  base.write(keys)
  fresh.clear()


def clear(base, fresh) -> None:
  base.clear()
  fresh.clear()
