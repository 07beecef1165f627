"""Read what customers really produce as the import contract's Arrow types.

Each function takes one column as the file holds it and returns the contract's type plus a boolean
numpy mask of rows that could not be converted (the caller rejects them with a reason). A column
whose *type* cannot be read as the contract raises ContractError, naming what was found.

Rounding rule for metric_value: values with more than 6 decimals are rounded to 6, half away from
zero (1.2345665 -> 1.234567, -1.2345665 -> -1.234567), as Spark's and Java's HALF_UP do. A float
is read as its shortest decimal text, the one Python, Polars and DuckDB print (the float 1.2345665,
whose binary value lies a little below, is 1.2345665 and rounds to 1.234567), then rounded by the same
rule. Values with |v| >= 10^18, NaN and infinities are rejected.
"""
import datetime
import decimal
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['METRIC_TYPE', 'MAP_TYPE', 'TS_TYPE', 'MAX_MS', 'ContractError', 'MissingColumn',
           'to_string', 'valid_utf8', 'to_timestamp', 'to_metric', 'to_map']

METRIC_TYPE = pa.decimal128(24, 6)
MAP_TYPE = pa.map_(pa.string(), pa.string())
TS_TYPE = pa.timestamp('ms', tz='UTC')
_WIDE = pa.decimal128(38, 6)
_LIMIT = decimal.Decimal(10) ** 18
_ROUNDING = 'half_towards_infinity'   # Arrow's name for HALF_UP (away from zero)
_MS_PER = {'s': None, 'ms': 1, 'us': 1000, 'ns': 1_000_000}
MAX_MS = 253_402_300_799_999   # 9999-12-31T23:59:59.999Z: integer ts beyond +-this is invalid
_FLOAT_TEXT = pa.decimal256(76, 30)   # holds the shortest text of every float in 1e-7 <= |v| < 1e18


class ContractError(ValueError):
  """A column's type cannot be read as the import contract."""

  def __init__(self, column: str, found: pa.DataType, expected: str):
    super().__init__(f"column '{column}' is {found}; expected {expected}")
    self.column, self.found, self.expected = column, found, expected


class MissingColumn(ContractError):
  """A required column of the contract is not in the file."""

  def __init__(self, column: str, expected: pa.DataType, names: list[str]):
    ValueError.__init__(self, f"the required column '{column}' ({expected}) is missing; the file "
                        f"has {', '.join(names[:20]) or 'no columns'}")
    self.column, self.found, self.expected = column, None, str(expected)


def _none(n: int) -> np.ndarray:
  return np.zeros(n, dtype=bool)


def _mask(arr: pa.Array) -> np.ndarray:
  return np.asarray(pc.fill_null(arr, False), dtype=bool)


def _is_text(t: pa.DataType) -> bool:
  return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _plain_type(t: pa.DataType) -> pa.DataType:
  return t.value_type if pa.types.is_dictionary(t) else t


def _plain(arr: pa.Array) -> pa.Array:
  return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def to_string(arr: pa.Array, column: str) -> pa.Array:
  arr = _plain(arr)
  if _is_text(arr.type) or pa.types.is_null(arr.type):
    return arr.cast(pa.string())
  if pa.types.is_binary(arr.type):
    return arr.view(pa.string())   # unchecked: callers pass it through valid_utf8, which rejects
  if pa.types.is_large_binary(arr.type):  # the rows that are not UTF-8 instead of the whole file
    return arr.view(pa.large_string()).cast(pa.string())
  raise ContractError(column, arr.type, 'a string')


def valid_utf8(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
  """-> (the strings with invalid UTF-8 values nulled, mask of those rows). Checks the whole
  array in C++; only when that fails are the values decoded one by one."""
  try:
    arr.validate(full=True)
    return arr, _none(len(arr))
  except pa.ArrowInvalid:
    pass
  raw = arr.view(pa.binary()).to_pylist()
  bad = np.zeros(len(raw), dtype=bool)
  for i, value in enumerate(raw):
    if value is not None:
      try:
        value.decode('utf-8')
      except UnicodeDecodeError:
        bad[i] = True
  cleaned = [None if b or v is None else v.decode('utf-8') for v, b in zip(raw, bad)]
  return pa.array(cleaned, pa.string()), bad


def to_timestamp(arr: pa.Array, column: str = 'ts') -> tuple[pa.Array, np.ndarray]:
  """Any timestamp unit and zone (naive means UTC), ISO-8601 text or integer epoch milliseconds
  (as in the raw contract) -> timestamp[ms, UTC], floored to the millisecond."""
  arr = _plain(arr)
  if pa.types.is_null(arr.type):
    return pa.nulls(len(arr), TS_TYPE), _none(len(arr))
  if _is_text(arr.type):
    return _parse_timestamps(arr)
  if pa.types.is_integer(arr.type):
    wide = pa.uint64() if arr.type == pa.uint64() else pa.int64()
    arr = arr.cast(wide)
    bad = _mask(pc.greater(arr, pa.scalar(MAX_MS, wide)))
    if wide == pa.int64():
      bad |= _mask(pc.less(arr, -MAX_MS))
    return pc.if_else(pa.array(bad), None, arr).cast(pa.int64()).cast(TS_TYPE), bad
  if not pa.types.is_timestamp(arr.type):
    raise ContractError(column, arr.type, 'a TIMESTAMP, ISO-8601 text or epoch milliseconds')
  unit = arr.type.unit
  ints = arr.cast(pa.int64())
  if unit == 's':
    ms = pc.multiply_checked(ints, 1000)
  elif _MS_PER[unit] == 1:
    ms = ints
  else:
    values = np.asarray(pc.fill_null(ints, 0)) // _MS_PER[unit]   # floor, also before 1970
    ms = pa.array(values, pa.int64(), mask=np.asarray(ints.is_null()))
  return ms.cast(TS_TYPE), _none(len(arr))


def _parse_timestamps(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
  for zoned in (pa.timestamp('ns', tz='UTC'), pa.timestamp('ns')):   # with an offset, or none
    try:
      return to_timestamp(arr.cast(zoned))[0], _none(len(arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
      pass
  out, bad = [], _none(len(arr))
  for i, text in enumerate(arr.to_pylist()):
    try:
      value = None if text is None else datetime.datetime.fromisoformat(text.strip())
      if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
      out.append(value)
    except ValueError:
      out.append(None)
      bad[i] = True
  return pa.array(out, pa.timestamp('us', tz='UTC')).cast(TS_TYPE, safe=False), bad


def to_metric(arr: pa.Array, column: str = 'metric_value'
              ) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
  """-> (decimal(24,6) values, invalid mask, out-of-range mask, rounded mask). Nulls stay null."""
  arr = _plain(arr)
  n = len(arr)
  t = arr.type
  if pa.types.is_null(t):
    return pa.nulls(n, METRIC_TYPE), _none(n), _none(n), _none(n)
  if _is_text(t):
    return _metric_from_text(arr)
  invalid, rounded, beyond = _none(n), _none(n), _none(n)
  if pa.types.is_floating(t):
    return _metric_from_float(arr)
  if pa.types.is_integer(t):
    if pa.types.is_uint64(t):   # past int64's range: out of ours too (>= 10^18)
      beyond = _mask(pc.greater(arr, pa.scalar(2 ** 63 - 1, pa.uint64())))
      arr = pc.if_else(pa.array(beyond), None, arr)
    arr = arr.cast(pa.int64()).cast(_WIDE)
  elif pa.types.is_decimal(t):
    if t.scale > 6:
      wider = pc.round(arr, 6, round_mode=_ROUNDING)
      rounded = _mask(pc.not_equal(wider, arr))
      arr = wider
    arr = _rescale(arr)
  else:
    raise ContractError(column, t, 'decimal(24,6), an integer, a float or numeric text')
  big = _mask(pc.greater_equal(pc.abs(arr), pa.scalar(_LIMIT, _WIDE))) | beyond
  arr = pc.if_else(pa.array(big), None, arr)
  return arr.cast(METRIC_TYPE), invalid, big, rounded


def _metric_from_float(arr: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
  """Through Arrow's shortest round-trip text (float32 as float32), then HALF_UP to 6 decimals.
  Below 1e-7 a value rounds to 0 and its text could need more decimals than _FLOAT_TEXT holds;
  the range check is on the text's value (the float32 999999984306749440 reads as 1e+18)."""
  if pa.types.is_float16(arr.type):
    arr = arr.cast(pa.float32())
  quick, done = _six_decimal_floats(arr)
  if done.any():   # the text path (0.5 s per million) only for the rest
    values, *masks = _metric_from_float(pc.if_else(pa.array(done), None, arr))
    return pc.if_else(pa.array(done), quick, values), *masks
  invalid = _mask(pc.invert(pc.is_finite(arr)))
  huge = _mask(pc.greater_equal(pc.abs(arr), 1e40)) & ~invalid   # beyond _FLOAT_TEXT
  tiny = _mask(pc.less(pc.abs(arr), 1e-7))
  zero = pa.scalar(0, arr.type)   # a float32 stays float32: its text is the float32 shortest
  kept = pc.if_else(pa.array(invalid | huge), None, pc.if_else(pa.array(tiny), zero, arr))
  exact = kept.cast(pa.string()).cast(_FLOAT_TEXT)
  six = pc.round(exact, 6, round_mode=_ROUNDING)
  rounded = _mask(pc.not_equal(exact, six)) | (tiny & _mask(pc.not_equal(arr, zero)))
  big = huge | _mask(pc.greater_equal(pc.abs(six), pa.scalar(_LIMIT, _FLOAT_TEXT)))
  return pc.if_else(pa.array(big), None, six).cast(METRIC_TYPE), invalid, big, rounded


def _six_decimal_floats(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
  """The common case without text: (decimal(24,6) values, the float64 rows they hold). When
  k / 10^6 == v for the integer k nearest v * 10^6, the 6-decimal k * 10^-6 reads back as v; below
  2^32 a float's rounding interval is narrower than 10^-6, so that is its shortest text too."""
  n = len(arr)
  if not pa.types.is_float64(arr.type) or arr.null_count == n:
    return pa.nulls(n, METRIC_TYPE), _none(n)
  v = np.asarray(pc.fill_null(arr, 0.0), dtype=np.float64)
  with np.errstate(invalid='ignore', over='ignore'):
    k = np.rint(v * 1e6)
    done = (np.abs(v) < 2.0 ** 32) & (k / 1e6 == v) & np.asarray(arr.is_valid())
  k = np.where(done, k, 0).astype(np.int64)
  words = np.empty((n, 2), dtype=np.int64)   # decimal128: little-endian 128-bit integers
  words[:, 0], words[:, 1] = k, k >> 63
  return pa.Array.from_buffers(METRIC_TYPE, n, [None, pa.py_buffer(words.tobytes())]), done


def _rescale(arr: pa.Array) -> pa.Array:
  """A decimal of any precision/scale <= 6 -> decimal(38,6), or (76,6) when it is wider."""
  t = arr.type
  integer_digits = t.precision - t.scale
  if integer_digits + 6 <= 38:
    return arr.cast(_WIDE)
  return arr.cast(pa.decimal256(76, 6))


def _metric_from_text(arr: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
  """Arrow's decimal parser first; row by row (exact Decimal rounding) only when it refuses."""
  try:
    return to_metric(arr.cast(_WIDE))
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    pass
  values: list[decimal.Decimal | None]
  values, invalid, big, rounded = [], *(_none(len(arr)) for _ in range(3))
  for i, text in enumerate(arr.to_pylist()):
    if text is None:
      values.append(None)
      continue
    try:
      d = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
      d = None
    if d is None or not d.is_finite():
      invalid[i] = True
      values.append(None)
      continue
    if abs(d) >= _LIMIT:   # before rounding, which 1e400 would overflow (it needs 407 digits)
      big[i] = True
      values.append(None)
      continue
    q = d.quantize(decimal.Decimal('0.000001'), rounding=decimal.ROUND_HALF_UP,
                   context=decimal.Context(prec=80))
    rounded[i] = q != d
    if abs(q) >= _LIMIT:
      big[i] = True
      values.append(None)
      continue
    values.append(q)
  return pa.array(values, METRIC_TYPE), invalid, big, rounded


def to_map(arr: pa.Array, column: str) -> tuple[pa.MapArray, np.ndarray, np.ndarray]:
  """map<string, X>, list<struct<key, value>> (BigQuery) or JSON object text -> map<string,string>.
  Null maps become empty maps. Masks: rows whose text is not a JSON object; rows with a key or
  value that is not valid UTF-8 (those entries are dropped; the row is rejected)."""
  arr = _plain(arr)
  n = len(arr)
  t = arr.type
  if pa.types.is_null(t):
    return pa.MapArray.from_arrays(np.zeros(n + 1, np.int32), pa.array([], pa.string()),
                                   pa.array([], pa.string())), _none(n), _none(n)
  if _is_text(t):
    text, bad_text = valid_utf8(arr.cast(pa.string()))
    as_map, bad_json = _map_from_json(text)
    return as_map, bad_json, bad_text
  if pa.types.is_map(t):
    keys, items = arr.keys, arr.items
  elif (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type) \
      and {'key', 'value'} <= {f.name for f in t.value_type}:
    keys, items = arr.values.field('key'), arr.values.field('value')
  elif pa.types.is_struct(t):
    return to_map(_struct_as_map(arr, column), column)
  else:
    raise ContractError(column, t, 'map<string,string>, list<struct<key,value>>, a struct of '
                        'scalars or a JSON object string')
  offsets = np.asarray(arr.offsets, dtype=np.int64)
  start, end = int(offsets[0]), int(offsets[-1])
  keys, bad_keys = valid_utf8(to_string(keys.slice(start, end - start), column + '.key'))
  items, bad_items = valid_utf8(_map_values(items.slice(start, end - start), column))
  offsets = offsets - start
  bad_rows = _none(n)
  bad_entries = bad_keys | bad_items
  if bad_entries.any():
    bad_rows[np.searchsorted(offsets, np.flatnonzero(bad_entries), side='right') - 1] = True
    keys = pc.if_else(pa.array(bad_entries), '', keys)
  return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items), _none(n), bad_rows


def _struct_as_map(arr: pa.StructArray, column: str) -> pa.MapArray:
  """A struct (what pyarrow and pandas write for Python dicts) -> map of field name -> value text,
  in field order, without the null fields (a dict without that key) and empty for a null struct."""
  n, names = len(arr), [f.name for f in arr.type]
  if any(pa.types.is_nested(_plain_type(f.type)) for f in arr.type):
    raise ContractError(column, arr.type, 'a struct of scalar fields; from pandas write maps with '
                        "to_parquet(..., schema=...) giving the column pa.map_(pa.string(), "
                        'pa.string()), or write the dicts as JSON text (json.dumps)')
  fields = [_map_values(f, column) for f in arr.flatten()]   # flatten applies the struct's nulls
  present = np.stack([np.asarray(f.is_valid()) for f in fields], axis=1) if fields else \
      np.zeros((n, 0), dtype=bool)
  rows, which = np.nonzero(present)   # row-major: each row's fields in field order
  values = pa.concat_arrays(fields).take(pa.array(which * n + rows)) if fields else pa.array([], pa.string())
  offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
  return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(names, pa.string()).take(
      pa.array(which)), values)


def _map_values(items: pa.Array, column: str) -> pa.Array:
  items = _plain(items)
  if _is_text(items.type) or pa.types.is_null(items.type) or pa.types.is_binary(items.type):
    return to_string(items, column + '.value')
  if pa.types.is_nested(items.type):
    raise ContractError(column, items.type, 'map values of scalar type')
  return items.cast(pa.string())


def _json_value(v) -> str | None:
  if v is None or isinstance(v, str):
    return v
  return json.dumps(v, ensure_ascii=False)


def _map_from_json(arr: pa.Array) -> tuple[pa.MapArray, np.ndarray]:
  keys: list[str]
  items: list[str | None]
  offsets, keys, items, bad = [0], [], [], _none(len(arr))
  for i, text in enumerate(arr.to_pylist()):
    if text is not None and text.strip():
      try:
        obj = json.loads(text)
      except ValueError:
        obj = None
      if isinstance(obj, dict):
        keys.extend(obj)
        items.extend(_json_value(v) for v in obj.values())
      else:
        bad[i] = True
    offsets.append(len(keys))
  return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys, pa.string()),
                                 pa.array(items, pa.string())), bad
