"""JSON text from Arrow columns, vectorized: map columns as JSON objects, strings as JSON strings.

Escaping follows RFC 8259 (backslash, quote, control characters below U+0020) as json.dumps with
ensure_ascii=False writes it. The C kernel (transforms/kernels/_jsonify.c) writes the text in one
pass over the buffers, four to five times faster than the Arrow kernels; without a compiler at
install time it is absent and the Arrow path below writes the same bytes (tests/test_jsonify.py
compares them). On that path only the values that contain such a character are escaped, with
Arrow string kernels; the rare control characters without a short escape (all but \\b \\f \\n
\\r \\t) are escaped in Python for just those values, and map keys, which repeat from row to row,
are quoted once per distinct key.
"""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['escaped', 'quote', 'map_to_json']

try:
  from transforms.kernels._jsonify import maps as _c_maps, quote as _c_quote
except ImportError:   # built without a C compiler: the Arrow path
  _c_maps = _c_quote = None


def _span(strings: pa.Array, start: int, stop: int) -> int:
  """Bytes of text in rows start..stop of a string array."""
  offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)
  return int(offsets[strings.offset + stop] - offsets[strings.offset + start])


def _from_c(kernel, n: int, estimate: int, *arrays: tuple,
            validity: pa.Buffer | None = None) -> pa.Array:
  """A string array of n rows that the C kernel writes into buffers of Arrow's pool: the
  estimate is the text's length when nothing needs escaping; when escapes make it longer,
  the kernel has counted the length and writes again into a buffer that size."""
  offsets = pa.allocate_buffer(4 * (n + 1))
  text = pa.allocate_buffer(estimate, resizable=True)
  length = kernel(n, *arrays, offsets, text)
  if length > estimate:
    text.resize(length)
    kernel(n, *arrays, offsets, text)
  text.resize(length)   # smaller: the allocation stays, Arrow reads the size
  return pa.Array.from_buffers(pa.string(), n, [validity, offsets, text])


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
  values = arr.cast(pa.string())
  n = len(values)
  if _c_quote is None or not n:
    return _quote_arrow(values)
  own = values.buffers()
  # the result starts at row 0: the validity bits too, when the input is a slice
  validity = (None if not values.null_count else own[0] if not values.offset
              else pc.is_valid(values).buffers()[1])
  return _from_c(_c_quote, n, _span(values, 0, n) + 2 * n,
                 (own[0], own[1], own[2], values.offset), validity=validity)


def _quote_arrow(arr: pa.Array) -> pa.Array:
  """quote with Arrow kernels."""
  return pc.binary_join_element_wise('"', escaped(arr), '"', '')


def map_to_json(arr: pa.MapArray) -> pa.Array:
  """map<string,string> -> '{"k": "v", ...}' per row ('{}' for empty or null maps)."""
  n = len(arr)
  if _c_maps is None or not n or not (pa.types.is_string(arr.type.key_type)
                                      and pa.types.is_string(arr.type.item_type)):
    return _map_to_json_arrow(arr)   # (the kernel reads int32 offsets: string, not large_string)
  keys, items, own = arr.keys, arr.items, arr.buffers()
  entries = np.frombuffer(own[1], dtype=np.int32)[arr.offset:arr.offset + n + 1]
  first, last = int(entries[0]), int(entries[-1])
  # `{"k": "v"` or `, "k": "v"`: 8 bytes besides the text an entry, `}` a row, `{}` an empty one
  estimate = _span(keys, first, last) + _span(items, first, last) + 8 * (last - first) + 2 * n
  return _from_c(_c_maps, n, estimate, (own[0], own[1], arr.offset),
                 (keys.buffers()[1], keys.buffers()[2], keys.offset),
                 (items.buffers()[0], items.buffers()[1], items.buffers()[2], items.offset))


def _map_to_json_arrow(arr: pa.MapArray) -> pa.Array:
  """map_to_json with Arrow kernels. Each entry is written as one piece, `{"k": "v"` for a
  row's first entry and `, "k": "v"` after, with `}` after the last, and a row is its pieces
  back to back: three passes over the text. The key parts come from the map's few distinct keys."""
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
  names = _quote_arrow(keys.dictionary).to_pylist()
  heads = pa.array([lead + name + (': "' if valued else ': null')
                    for name in names for lead in (', ', '{') for valued in (False, True)],
                   pa.string())   # typed: a column with no entries at all has no keys
  head = heads.take(pa.array(np.asarray(keys.indices, dtype=np.int64) * 4 + first * 2 + has_value))
  tail = pa.array(['', '"', '}', '"}']).take(pa.array(last * 2 + has_value))
  pieces = pc.binary_join_element_wise(head, pc.fill_null(escaped(values), ''), tail, '')
  rows = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets - start, pa.int32()), pieces), '')
  # a null map's entries, if it has any, are not its value (Arrow's format)
  empty = (lengths == 0) | ~np.asarray(arr.is_valid(), dtype=bool)
  if empty.any():
    rows = pc.if_else(pa.array(empty), '{}', rows)
  return rows
