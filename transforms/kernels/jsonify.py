"""JSON text from Arrow columns, vectorized: map columns as JSON objects, strings as JSON strings.

Escaping follows RFC 8259 (backslash, quote, control characters below U+0020). Only the values that
contain such a character are escaped, with Arrow string kernels; the rare control characters
without a short escape (all but \\b \\f \\n \\r \\t) are escaped in Python for just those values.
Map keys repeat from row to row, so each distinct key is quoted once.
"""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['escaped', 'quote', 'map_to_json']

_SIMPLE = [('\\', '\\\\'), ('"', '\\"'), ('\n', '\\n'), ('\r', '\\r'), ('\t', '\\t'),
           ('\b', '\\b'), ('\f', '\\f')]
_SPECIAL = '[\\\\"\\x00-\\x1f]'
_OTHER_CONTROL = '[\\x00-\\x07\\x0b\\x0e-\\x1f]'


def _escape(values: pa.Array) -> pa.Array:
  """Escapes every value (all of which need it), without the surrounding quotes."""
  escaped = values
  for old, new in _SIMPLE:
    escaped = pc.replace_substring(escaped, old, new)
  rare = np.asarray(pc.fill_null(pc.match_substring_regex(values, _OTHER_CONTROL), False))
  if rare.any():
    out = np.asarray(escaped.to_pylist(), dtype=object)
    out[rare] = [json.dumps(v, ensure_ascii=False)[1:-1]
                 for v in values.filter(pa.array(rare)).to_pylist()]
    escaped = pa.array(out, pa.string())
  return escaped


def _any_special(values: pa.Array) -> bool:
  """Whether any value holds a character JSON escapes: one regex over the values' data buffer
  as a single string, about twice as fast as asking row by row (most columns hold none)."""
  data = values.buffers()[2]
  offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[
      values.offset:values.offset + len(values) + 1]
  if data is None or not len(values) or offsets[-1] == offsets[0]:
    return False
  span = pa.py_buffer(np.array([0, offsets[-1] - offsets[0]], dtype=np.int32))
  whole = pa.StringArray.from_buffers(1, span, data.slice(int(offsets[0])))
  return pc.match_substring_regex(whole, _SPECIAL)[0].as_py()


def escaped(arr: pa.Array) -> pa.Array:
  """Each string's JSON text without the surrounding quotes; null stays null."""
  values = arr.cast(pa.string())
  if not _any_special(values):
    return values
  special = pc.fill_null(pc.match_substring_regex(values, _SPECIAL), False)
  return pc.replace_with_mask(values, special, _escape(values.filter(special)))


def quote(arr: pa.Array) -> pa.Array:
  """Each string as a JSON string literal (with quotes); null stays null."""
  return pc.binary_join_element_wise('"', escaped(arr), '"', '')


def map_to_json(arr: pa.MapArray) -> pa.Array:
  """map<string,string> -> '{"k": "v", ...}' per row ('{}' for empty or null maps).

  Each entry is written as one piece, `{"k": "v"` for a row's first entry and `, "k": "v"`
  after, with `}` after the last, and a row is its pieces back to back: three passes over the
  text. The key parts come from the map's few distinct keys."""
  offsets = np.asarray(arr.offsets, dtype=np.int64)
  start, end = int(offsets[0]), int(offsets[-1])
  lengths = np.diff(offsets)
  keys = pc.dictionary_encode(arr.keys.slice(start, end - start))
  values = arr.items.slice(start, end - start)
  first = np.zeros(end - start, dtype=np.int64)
  first[(offsets[:-1] - start)[lengths > 0]] = 1
  last = np.zeros(end - start, dtype=np.int64)
  last[(offsets[1:] - start - 1)[lengths > 0]] = 1
  has_value = np.asarray(values.is_valid(), dtype=np.int64)
  # the piece before the value: 4 forms per distinct key (first in the row or not, null or not)
  names = quote(keys.dictionary).to_pylist()
  heads = pa.array([lead + name + (': "' if valued else ': null')
                    for name in names for lead in (', ', '{') for valued in (False, True)],
                   pa.string())   # typed: a column with no entries at all has no keys
  head = heads.take(pa.array(np.asarray(keys.indices, dtype=np.int64) * 4 + first * 2 + has_value))
  tail = pa.array(['', '"', '}', '"}']).take(pa.array(last * 2 + has_value))
  pieces = pc.binary_join_element_wise(head, pc.fill_null(escaped(values), ''), tail, '')
  rows = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets - start, pa.int32()), pieces), '')
  empty = lengths == 0
  if empty.any():
    rows = pc.if_else(pa.array(empty), '{}', rows)
  return rows
