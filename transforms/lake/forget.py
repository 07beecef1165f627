"""Right to be forgotten: which rows hold a user, and how the lake keeps who was forgotten.

Lake rows are matched by Arrow kernels on the `identifiers` map (a value equal to one of the ids,
under one of the chosen keys, or any key). Dead letters keep the row as read, as JSON text
(`original`): a row is matched when its `identifiers` hold an id; when the text holds an id but
cannot be read as JSON, or has no readable `identifiers`, the row is matched too (a dead letter
is erased rather than left holding the user).

Ids are never stored: only salted SHA-256 hashes, with one random salt per lake
(LAKE/_eventferry/forget/_salt), so a forget request's file names no user to whoever reads it,
and ingest can still recognise a forgotten user's new events by hashing what arrives.
"""
import datetime
import hashlib
import json
import os
import typing

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.lake.names import FORGET_DIR, SALT, STATE_DIR
from transforms.stores import fs

__all__ = ['PAIRS', 'IDS_PER_PATTERN', 'forget_dir', 'salt', 'hashed', 'request_id', 'drop_until',
           'Request', 'Forgotten', 'in_force', 'forgotten_users', 'identifier_rows',
           'hashed_identifier_rows', 'rejected_rows']

PAIRS = pa.list_(pa.struct([('key', pa.string()), ('value', pa.string())]))
IDS_PER_PATTERN = 500   # ids in one search pattern: RE2 keeps a pattern's program within its memory
_RE2_SPECIAL = frozenset('\\.+*?()|[]{}^$')


def forget_dir(lake: str) -> str:
  return fs.join(lake, STATE_DIR, FORGET_DIR)


def salt(lake: str, create: bool = True) -> bytes | None:
  """The lake's salt; made once (atomically, so two first requests agree) when `create`."""
  path = fs.join(forget_dir(lake), SALT)
  if create and not fs.exists(path):
    fs.create_exclusive(path, os.urandom(32).hex().encode())
  return fs.read_bytes(path) if fs.exists(path) else None


def hashed(salt_: bytes, value: str) -> str:
  return hashlib.sha256(salt_ + b'\0' + value.encode()).hexdigest()


def request_id(hashes: typing.Iterable[str], keys: typing.Iterable[str] | None,
               first: str | None, last: str | None) -> str:
  """The same ids, keys and range are the same request (a rerun finishes or confirms it)."""
  text = json.dumps([sorted(hashes), sorted(keys) if keys else None, first, last])
  return hashlib.sha256(text.encode()).hexdigest()[:20]


def drop_until(created: datetime.date, retention_days: int | None) -> str | None:
  """The last server day whose new events of the users ingest drops; None: every day."""
  return None if retention_days is None else (created + datetime.timedelta(retention_days)).isoformat()


# (salt, [(hashes, keys or None, last day dropped or None) per request]): what ingest needs to
# drop forgotten users' rows
Request = tuple[frozenset[str], frozenset[str] | None, str | None]
Forgotten = tuple[bytes, tuple[Request, ...]]


def in_force(forgotten: Forgotten | None, dt: str
             ) -> tuple[bytes, list[tuple[frozenset[str], frozenset[str] | None]]] | None:
  """(salt, [(hashes, keys)] of the requests whose retention still covers server day `dt`), the
  arguments of hashed_identifier_rows; None when no request does."""
  if forgotten is None:
    return None
  salt_, requests = forgotten
  active = [(hashes, keys) for hashes, keys, until in requests if until is None or dt <= until]
  return (salt_, active) if active else None


def forgotten_users(lake: str) -> Forgotten | None:
  """The hashed ids of every forget request the lake holds (read once, when a job starts);
  None when there is none, so ingest hashes nothing."""
  folder = forget_dir(lake)
  requests = []
  for path in sorted(fs.list_files(folder)):
    if path.endswith('.json'):
      audit = json.loads(fs.read_bytes(path))
      keys = frozenset(audit['keys']) if audit.get('keys') else None
      requests.append((frozenset(audit['id_hashes']), keys, audit.get('drop_new_until')))
  salt_ = salt(lake, create=False) if requests else None
  return (salt_, tuple(requests)) if salt_ else None


def _mask(n: int, rows: pa.Array) -> pa.Array:
  mask = np.zeros(n, dtype=bool)
  mask[rows.to_numpy(zero_copy_only=False)] = True
  return pa.array(mask)


def identifier_rows(identifiers: pa.Array | pa.ChunkedArray, ids: typing.Collection[str],
                    keys: typing.Collection[str] | None = None) -> pa.Array:
  """Boolean mask of the rows whose identifiers map holds one of `ids` (under `keys`, or any)."""
  column = identifiers.combine_chunks() if isinstance(identifiers, pa.ChunkedArray) else identifiers
  column = column.cast(PAIRS)   # list kernels take no maps; .keys would ignore a slice's offset
  pairs = pc.list_flatten(column)
  hit = pc.is_in(pairs.field('value'), value_set=pa.array(list(ids), pa.string()))
  if keys is not None:
    hit = pc.and_(hit, pc.is_in(pairs.field('key'), value_set=pa.array(list(keys), pa.string())))
  return _mask(len(column), pc.filter(pc.list_parent_indices(column), pc.fill_null(hit, False)))


def hashed_identifier_rows(identifiers: pa.Array | pa.ChunkedArray, salt_: bytes,
                           requests: typing.Sequence[tuple[frozenset[str], frozenset[str] | None]]
                           ) -> pa.Array:
  """The same mask for ids known only as hashes ([(hashes, keys or None)] per request): each
  distinct identifier value is hashed once."""
  column = identifiers.combine_chunks() if isinstance(identifiers, pa.ChunkedArray) else identifiers
  values = pc.list_flatten(column.cast(PAIRS)).field('value')
  distinct = [v for v in pc.unique(values).to_pylist() if v is not None]
  digests = {v: hashed(salt_, v) for v in distinct}
  mask = pa.array(np.zeros(len(column), dtype=bool))
  for hashes, keys in requests:
    ids = [v for v, h in digests.items() if h in hashes]
    if ids:
      mask = pc.or_(mask, identifier_rows(column, ids, keys))
  return mask


def rejected_rows(original: pa.Array | pa.ChunkedArray, ids: typing.Collection[str],
                  keys: typing.Collection[str] | None = None) -> pa.Array:
  """Boolean mask of the dead letters (their `original` JSON text) that hold one of `ids`."""
  text = original.combine_chunks() if isinstance(original, pa.ChunkedArray) else original
  candidate = pa.array(np.zeros(len(text), dtype=bool))
  values = sorted(ids)
  # a text search for all ids at once (one pass per IDS_PER_PATTERN ids, not per id), then JSON
  # for the texts that hold one
  for at in range(0, len(values), IDS_PER_PATTERN):
    some = values[at:at + IDS_PER_PATTERN]
    found = (pc.match_substring(text, some[0]) if len(some) == 1   # 15x faster than a pattern
             else pc.match_substring_regex(text, '|'.join(_literal(v) for v in some)))
    candidate = pc.or_(candidate, pc.fill_null(found, False))
  rows = np.flatnonzero(candidate.to_numpy(zero_copy_only=False))
  wanted = set(ids)
  hits = [i for i in rows if _payload_holds(text[int(i)].as_py(), wanted, keys)]
  return _mask(len(text), pa.array(hits, pa.int64()))


def _literal(value: str) -> str:
  """`value` as an RE2 pattern that matches exactly its text."""
  return ''.join('\\' + c if c in _RE2_SPECIAL else c for c in value)


def _payload_holds(text: str, ids: set[str], keys: typing.Collection[str] | None) -> bool:
  try:
    pairs = _identifier_pairs(json.loads(text))
  except ValueError:
    return True
  if pairs is None:
    return True
  return any(_scalar(v) in ids and (keys is None or str(k).lower() in keys) for k, v in pairs)


def _scalar(value) -> str | None:
  if isinstance(value, bool) or value is None:
    return None if value is None else str(value).lower()
  return str(value) if isinstance(value, (str, int, float)) else None


def _identifier_pairs(row) -> list[tuple] | None:
  """(key, value) pairs of a payload's identifiers, as any writer spells a map: an object,
  [[key, value], ...] or [{"key": .., "value": ..}, ...]; None when there are none to read."""
  if not isinstance(row, dict):
    return None
  found = [v for k, v in row.items() if str(k).lower() == 'identifiers']
  if not found:
    return None
  value = found[0]
  if isinstance(value, dict):
    return list(value.items())
  if isinstance(value, list):
    pairs = []
    for item in value:
      if isinstance(item, (list, tuple)) and len(item) == 2:
        pairs.append(tuple(item))
      elif isinstance(item, dict) and 'key' in item:
        pairs.append((item['key'], item.get('value')))
      else:
        return None
    return pairs
  return None
