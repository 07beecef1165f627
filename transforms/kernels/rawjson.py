"""Columns of raw events from the C parser (transforms/kernels/_rawjson.c), without a Python object per
field: about five times faster than msgspec's decode plus the conversion of its objects to Arrow.

The parser takes a payload only in the strict common case and marks the rest, which
transforms/kernels/raw.py decodes with msgspec as before; tests/test_rawjson.py checks on generated
payloads that both ways give the same rows. Without a compiler at install time the extension is
absent and every payload takes the msgspec path.
"""
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['columns']

try:
  from transforms.kernels._rawjson import parse
except ImportError:   # built without a C compiler: raw.py decodes everything with msgspec
  parse = None

_TEXT = ('insert_id', 'event_key', 'environment')
_INSTANTS = ('ts', 'server_ts')
_MAPS = ('identifiers', 'user_properties', 'event_properties', 'platform_properties')
_OTHER_NUMBER = 3   # metric kinds: 0 null, 1 string, 2 integer, 3 other number


def _u8(buffer: bytes) -> np.ndarray:
  return np.frombuffer(buffer, dtype=np.uint8)


def _valid(mask: np.ndarray) -> pa.Buffer:
  return pa.py_buffer(np.packbits(mask, bitorder='little'))


def _strings(n: int, offsets: bytes, data: bytes, valid: np.ndarray | None = None) -> pa.Array:
  return pa.Array.from_buffers(pa.string(), n, [None if valid is None else _valid(valid),
                                                 pa.py_buffer(offsets), pa.py_buffer(data)])


def _doubles_as_repr(text: pa.Array, double: np.ndarray) -> pa.Array:
  """metric_value literals with a fraction or exponent -> repr of the double, as msgspec's path
  writes them (1.50 -> 1.5, 1e5 -> 100000.0). A literal beyond a double's range keeps its text,
  as msgspec's path does, for the metric's range rule. (Property values keep their literal: see
  _rawjson.c.)

  Arrow's casts do it for most of them: text -> double rounds correctly, as float() does, and
  double -> text gives the shortest digits that round-trip, as repr does, in its own notation. Where
  both write plain decimals (repr does from 1e-4 to 1e16, Arrow then too unless it picks an
  exponent) they differ only by repr's '.0' after a whole number; the rest go through repr."""
  at = np.flatnonzero(double)
  if not len(at):
    return text
  literals = text.take(at)
  values = literals.cast(pa.float64())
  shown = values.cast(pa.string())
  size = pc.abs(values)
  plain = pc.and_(pc.or_(pc.equal(size, 0), pc.and_(pc.greater_equal(size, 1e-4), pc.less(size, 1e16))),
                  pc.invert(pc.match_substring(shown, 'e')))
  shown = pc.if_else(pc.match_substring(shown, '.'), shown, pc.binary_join_element_wise(shown, '.0', ''))
  other = np.flatnonzero(~np.asarray(plain))
  if len(other):   # exponents, and literals beyond a double's range: Python's repr
    numbers = [float(v) for v in literals.take(other).to_pylist()]
    shown = pc.replace_with_mask(shown, pa.array(~np.asarray(plain)), pa.array(
        [repr(v) if math.isfinite(v) else literal
         for v, literal in zip(numbers, literals.take(other).to_pylist())], pa.string()))
  return pc.replace_with_mask(text, pa.array(double), shown)


def columns(payloads: list[bytes]) -> tuple[np.ndarray, dict[str, pa.Array]]:
  """-> (mask of the payloads taken; columns as transforms/kernels/raw.py's _decoded makes them, with
  rows not taken present but meaningless)."""
  b, n = parse(payloads), len(payloads)
  taken = _u8(b[0]) == 0
  out = {}
  for i, name in enumerate(_TEXT):
    offsets, data, valid = b[1 + 3 * i:4 + 3 * i]
    out[name] = _strings(n, offsets, data, _u8(valid).astype(bool))
  for i, name in enumerate(_INSTANTS):
    kind, ms, offsets, data = b[10 + 4 * i:14 + 4 * i]
    kind = _u8(kind)
    out[name] = pa.array(np.frombuffer(ms, dtype=np.int64), mask=kind != 1)
    out[name + '_text'] = _strings(n, offsets, data, kind == 2)
  kind, offsets, data = b[18:21]
  kind = _u8(kind)
  out['metric_value'] = _doubles_as_repr(_strings(n, offsets, data, kind != 0),
                                         kind == _OTHER_NUMBER)
  for i, name in enumerate(_MAPS):
    entries, key_offsets, keys, value_offsets, values, value_kind = b[21 + 6 * i:27 + 6 * i]
    count, value_kind = len(key_offsets) // 4 - 1, _u8(value_kind)
    entries = np.frombuffer(entries, dtype=np.int32)
    items = _strings(count, value_offsets, values, value_kind != 1)
    out[name] = pa.MapArray.from_arrays(pa.array(entries), _strings(count, key_offsets, keys), items)
  return taken, out
