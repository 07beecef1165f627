"""JSON text from Arrow columns, vectorized: map columns as JSON objects, strings as JSON strings.

Escaping follows RFC 8259: backslash, quote and the control characters below U+0020. The common
ones are replaced with Arrow string kernels; the rare other control characters (U+0000-U+001F but
\\b \\f \\n \\r \\t) are escaped in Python for just the values that contain them.
"""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SIMPLE = [('\\', '\\\\'), ('"', '\\"'), ('\n', '\\n'), ('\r', '\\r'), ('\t', '\\t'),
           ('\b', '\\b'), ('\f', '\\f')]
_OTHER_CONTROL = '[\\x00-\\x07\\x0b\\x0e-\\x1f]'


def quote(arr: pa.Array) -> pa.Array:
  """Each string as a JSON string literal (with quotes); null stays null."""
  original = arr.cast(pa.string())
  rare = np.asarray(pc.fill_null(pc.match_substring_regex(original, _OTHER_CONTROL), False))
  escaped = original
  for old, new in _SIMPLE:
    escaped = pc.replace_substring(escaped, old, new)
  quoted = pc.binary_join_element_wise('"', escaped, '"', '')
  if rare.any():
    rows = np.flatnonzero(rare)
    values = np.asarray(quoted.to_pylist(), dtype=object)
    values[rows] = [json.dumps(v, ensure_ascii=False)
                    for v in original.take(pa.array(rows)).to_pylist()]
    quoted = pa.array(values, pa.string())
  return quoted


def map_to_json(arr: pa.MapArray) -> pa.Array:
  """map<string,string> -> '{"k": "v", ...}' per row ('{}' for empty or null maps)."""
  offsets = np.asarray(arr.offsets, dtype=np.int64)
  start, end = int(offsets[0]), int(offsets[-1])
  keys = quote(arr.keys.slice(start, end - start))
  values = pc.fill_null(quote(arr.items.slice(start, end - start)), 'null')
  entries = pc.binary_join_element_wise(keys, values, ': ')
  lists = pa.ListArray.from_arrays(pa.array(offsets - start, pa.int32()), entries)
  joined = pc.binary_join(lists, ', ')
  return pc.binary_join_element_wise('{', joined, '}', '')
