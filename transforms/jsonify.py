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


def quote(arr: pa.Array) -> pa.Array:
  """Each string as a JSON string literal (with quotes); null stays null."""
  values = arr.cast(pa.string())
  special = pc.fill_null(pc.match_substring_regex(values, _SPECIAL), False)
  if pc.any(special).as_py():
    values = pc.replace_with_mask(values, special, _escape(values.filter(special)))
  return pc.binary_join_element_wise('"', values, '"', '')


def map_to_json(arr: pa.MapArray) -> pa.Array:
  """map<string,string> -> '{"k": "v", ...}' per row ('{}' for empty or null maps)."""
  offsets = np.asarray(arr.offsets, dtype=np.int64)
  start, end = int(offsets[0]), int(offsets[-1])
  keys = pc.dictionary_encode(arr.keys.slice(start, end - start))
  quoted_keys = quote(keys.dictionary).take(keys.indices)
  values = pc.fill_null(quote(arr.items.slice(start, end - start)), 'null')
  entries = pc.binary_join_element_wise(quoted_keys, values, ': ')
  lists = pa.ListArray.from_arrays(pa.array(offsets - start, pa.int32()), entries)
  return pc.binary_join_element_wise('{', pc.binary_join(lists, ', '), '}', '')
