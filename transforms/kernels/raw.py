"""Raw JSON events (schemas/raw.py) -> batches in the import contract's columns.

Parsing JSON is the one per-row Python step of streaming ingest; everything after it is the
vectorized validation the import uses. A payload that is not a JSON object, or whose fields have
the wrong JSON types, becomes a rejected row carrying the payload as it arrived.
"""
import dataclasses
import itertools
import math
import operator
import re
import typing

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import PAYLOAD, REJECTED_SCHEMA, SOURCE_FILE, SOURCE_ROW
from schemas.raw import COLUMN_OF
from schemas.reasons import Reason
from transforms.kernels import coerce, rawjson

__all__ = ['SERVER_MS', 'ARRIVAL_MS', 'RawChunk', 'Parsed', 'lone_surrogate', 'parse_chunk',
           'parse_rows', 'payload_text', 'reject']

SERVER_MS = '_server_ms'      # server time: partitions by server date
ARRIVAL_MS = '_arrival_ms'    # when the row reached us (-1: batch input, never late)
_EMPTY: dict = {}
_NOT_OBJECT: dict = {}   # stands in for a map value that is not an object
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_MAPS = ('identifiers', 'user_properties', 'event_properties', 'hackle_properties')
_TEXT = ('insert_id', 'event_key', 'environment')
_INSTANT_TYPES = {int, str, type(None)}
_METRIC_TYPES = {int, float, str, type(None)}
# Epoch numbers are milliseconds. As millis, a number below 10^11 is before 1973-03-03 and one of
# 10^14 or more after the year 5138: sizes that say seconds, or micros or nanos, were sent.
_SECONDS_BELOW, _MICROS_FROM, _NANOS_FROM, _NANOS_BELOW = 10**11, 10**14, 10**17, 10**20


@dataclasses.dataclass
class RawChunk:
  """Payloads read together, with where they came from and when they arrived."""
  source: list[str]               # per payload: file path, or subscription/message id
  rows: list[int]                 # per payload: line number in the file (0 for messages)
  payloads: list[bytes]
  fallback_ms: list[int] | None = None   # server time of payloads without server_ts (publish time)
  arrival_ms: list[int] | None = None    # None: batch input, no lateness
  received_ms: int = 0   # when read: files the payloads that are not JSON under that day
  unreadable: str | None = None   # a file's damaged rest: its one row is rejected with this detail

  def __len__(self) -> int:
    return len(self.payloads)


class _Raw(msgspec.Struct, gc=False):
  """The fields we read, of any JSON type: types are checked column by column afterwards.
  gc=False: a chunk holds 10k of these, and the cyclic GC scanning them doubled the decode time."""
  insert_id: typing.Any = None
  event_key: typing.Any = None
  environment: typing.Any = None
  ts: typing.Any = None
  server_ts: typing.Any = None
  metric_value: typing.Any = None
  # Maps: their values' JSON text as sent (_map_of). msgspec decodes by these annotations, so they
  # stay plain Raw (null arrives as Raw(b'null')); the None default is only for a field left out.
  identifiers: msgspec.Raw = None  # type: ignore[assignment]
  user_properties: msgspec.Raw = None  # type: ignore[assignment]
  event_properties: msgspec.Raw = None  # type: ignore[assignment]
  hackle_properties: msgspec.Raw = None  # type: ignore[assignment]


class _Huge(float):
  """A number literal beyond a double's range (1e400), which msgspec would refuse along with its
  whole payload: kept with its text, so that the field's own rules judge it (a metric_value is out
  of range, like the same text sent as a string; elsewhere it is a number of the wrong type)."""
  text: str

  def __new__(cls, text: str):
    huge = super().__new__(cls, text)
    huge.text = text
    return huge

  def __str__(self) -> str:
    return self.text


def _number(text: str) -> float:
  value = float(text)
  return value if math.isfinite(value) else _Huge(text)


_DECODE = msgspec.json.Decoder(_Raw, float_hook=_number).decode
_DECODE_MAP = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_DECODE_STR = msgspec.json.Decoder(str).decode
_DECODE_ANY = msgspec.json.Decoder().decode
_ESCAPE = re.compile(rb'\\(?:u([0-9a-fA-F]{4})|.)', re.S)


class _Wrong(typing.NamedTuple):
  """A map field's value that is not a JSON object, for the explanation."""
  value: typing.Any


def _map_of(raw: msgspec.Raw | None) -> dict | _Wrong | None:
  """A map field -> {key: a string as itself, null as None, any other value as its JSON text
  exactly as sent (0.000001 stays "0.000001", 1e3 "1e3")}; None for null or absent."""
  if raw is None:
    return None
  text = bytes(raw)
  if text == b'null':
    return None
  if not text.startswith(b'{'):
    return _Wrong(_DECODE_ANY(text))
  out = {}
  for key, item in _DECODE_MAP(text).items():
    value = bytes(item)
    out[key] = (_DECODE_STR(value) if value.startswith(b'"') else
                None if value == b'null' else value.decode('utf-8'))
  return out


def lone_surrogate(payload: bytes) -> str | None:
  """The first \\uD800-\\uDFFF escape without its other half, as it was sent, or None. msgspec
  calls a lone high half "Input data was truncated", which it is not."""
  high = None   # (escape, end) of a high half waiting for its low half
  for m in _ESCAPE.finditer(payload):
    unit = int(m.group(1), 16) if m.group(1) else None
    paired = high is not None and m.start() == high[1] and unit is not None and 0xDC00 <= unit <= 0xDFFF
    if high is not None and not paired:
      return high[0]
    high = None
    if paired:
      continue
    if unit is not None and 0xDC00 <= unit <= 0xDFFF:
      return m.group().decode()
    if unit is not None and 0xD800 <= unit <= 0xDBFF:
      high = (m.group().decode(), m.end())
  return high[0] if high else None


def _strings(values: list, name: str, bad: dict[int, tuple[Reason, str]]) -> pa.Array:
  try:
    return pa.array(values, pa.string())
  except (pa.ArrowTypeError, pa.ArrowInvalid):
    pass
  for i, v in enumerate(values):
    if v is not None and type(v) is not str:
      bad.setdefault(i, _wrong(name, v, 'a string'))
  return pa.array([v if type(v) is str else None for v in values], pa.string())


def _wrong(name: str, value, expected: str) -> tuple[Reason, str]:
  kind = {dict: 'object', list: 'array', str: 'string', bool: 'boolean'}.get(type(value), 'number')
  return Reason.INVALID_FIELD, f'{name} is a JSON {kind} ({str(value)[:80]}); expected {expected}'


def _uniform(values: list) -> pa.Array | None:
  """The column as Arrow when every value has one JSON type (the usual case), else None."""
  try:
    return pa.array(values)
  except (pa.ArrowTypeError, pa.ArrowInvalid, OverflowError):
    return None


def _instants(values: list, name: str, bad: dict[int, tuple[Reason, str]]) -> tuple[pa.Array, pa.Array]:
  """Epoch millis or ISO text -> (millis, null where not a number; text, null where not text)."""
  arr = _uniform(values)
  if arr is not None and pa.types.is_string(arr.type):
    return pa.nulls(len(values), pa.int64()), arr
  if arr is not None and (pa.types.is_null(arr.type) or (
      pa.types.is_int64(arr.type) and (pc.max(pc.abs_checked(arr)).as_py() or 0) <= _MAX_MS)):
    return arr.cast(pa.int64()), pa.nulls(len(values), pa.string())
  ms = [v if type(v) is int else None for v in values]
  text = [v if type(v) is str else None for v in values]
  if not (set(map(type, values)) <= _INSTANT_TYPES and _within_range(ms)):
    for i, v in enumerate(values):
      if v is not None and ((type(v) is int and not -_MAX_MS <= v <= _MAX_MS)
                            or type(v) not in (int, str)):
        bad.setdefault(i, type(v) is int and _not_millis(name, v)
                       or _wrong(name, v, 'epoch milliseconds or ISO 8601 text'))
        ms[i] = None
  return pa.array(ms, pa.int64()), pa.array(text, pa.string())


def _not_millis(name: str, ms: int) -> tuple[Reason, str] | None:
  """The rejection of an epoch number whose size says another unit than milliseconds, or None."""
  size = abs(ms)
  unit, millis = (('seconds', ms * 1000) if size < _SECONDS_BELOW else ('microseconds', ms // 1000)
                  if _MICROS_FROM <= size < _NANOS_FROM else ('nanoseconds', ms // 1_000_000)
                  if _NANOS_FROM <= size < _NANOS_BELOW else (None, 0))
  if unit is None:
    return None
  return (Reason.INVALID_TS if name == 'ts' else Reason.INVALID_FIELD,
          f'{name} is {ms}, epoch {unit} by its size; send epoch milliseconds ({millis}) '
          'or ISO 8601 text')


def _units(ms: pa.Array, name: str, bad: dict[int, tuple[Reason, str]]) -> pa.Array:
  """Epoch numbers in milliseconds; those sized as another unit are rejected and nulled, so that
  they decide no day."""
  size = pc.abs(ms)
  other = np.asarray(pc.fill_null(pc.or_(pc.less(size, _SECONDS_BELOW),
                                         pc.greater_equal(size, _MICROS_FROM)), False))
  if not other.any():
    return ms
  for j in np.flatnonzero(other):
    # An int64 is below _NANOS_BELOW in size, so _not_millis always names a unit here.
    bad.setdefault(int(j), typing.cast(tuple[Reason, str], _not_millis(name, ms[j].as_py())))
  return pc.if_else(pa.array(other), pa.nulls(len(ms), pa.int64()), ms)


def _epoch_ms(ms: pa.Array, text: pa.Array) -> tuple[pa.Array, np.ndarray]:
  """(millis, ISO text) -> (epoch ms, int64; mask of text that is not a timestamp)."""
  if text.null_count == len(text):
    return ms, np.zeros(len(ms), dtype=bool)
  parsed, unreadable = coerce.to_timestamp(text)
  return pc.coalesce(ms, parsed.cast(pa.int64())), unreadable


def _within_range(ms: list) -> bool:
  try:
    return (pc.max(pc.abs_checked(pa.array(ms, pa.int64()))).as_py() or 0) <= _MAX_MS
  except (OverflowError, pa.ArrowInvalid):
    return False


def _metrics(values: list, bad: dict[int, tuple[Reason, str]]) -> pa.Array:
  """Numbers and numeric text as text (a double as its shortest round-trip form, like repr), so
  that rounding is decided on the digits that were sent."""
  arr = _uniform(values)
  if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_null(arr.type)
                          or pa.types.is_int64(arr.type)):   # doubles: repr, as the C parser
    return arr.cast(pa.string())
  if set(map(type, values)) <= _METRIC_TYPES:   # numbers and text, mixed
    return pa.array([v if v is None or type(v) is str else repr(v) for v in values], pa.string())
  out = []
  for i, v in enumerate(values):
    if v is None or type(v) is str:
      out.append(v)
    elif type(v) in (int, float):
      out.append(repr(v))
    elif type(v) is _Huge:
      out.append(v.text)
    else:
      bad.setdefault(i, _wrong('metric_value', v, 'a number or a string'))
      out.append(None)
  return pa.array(out, pa.string())


def _maps(values: list, name: str, bad: dict[int, tuple[Reason, str]]) -> pa.MapArray:
  """Maps from _map_of -> map<string,string> (null: empty)."""
  if set(map(type, values)) <= {dict, type(None)}:   # the usual case: Arrow converts them in one call
    arr = pa.array(values, coerce.MAP_TYPE)
    return pa.MapArray.from_arrays(arr.offsets, arr.keys, arr.items)
  dicts = [d if type(d) is dict else (_EMPTY if d is None else _NOT_OBJECT) for d in values]
  for i in [i for i, d in enumerate(dicts) if d is _NOT_OBJECT]:
    bad.setdefault(i, _wrong(name, values[i].value, 'an object'))
  offsets = np.zeros(len(dicts) + 1, dtype=np.int32)
  np.cumsum(list(map(len, dicts)), out=offsets[1:])
  keys = list(itertools.chain.from_iterable(dicts))
  items = list(itertools.chain.from_iterable(map(dict.values, dicts)))
  return pa.MapArray.from_arrays(pa.array(offsets), pa.array(keys, pa.string()),
                                 pa.array(items, pa.string()))


def _binary(values: list[bytes]) -> pa.Array:
  """bytes objects -> a binary array from one joined buffer (5x faster than pa.array)."""
  offsets = np.zeros(len(values) + 1, dtype=np.int64)
  np.cumsum(list(map(len, values)), out=offsets[1:])
  return pa.Array.from_buffers(pa.large_binary(), len(values),
                               [None, pa.py_buffer(offsets), pa.py_buffer(b''.join(values))])


def _decoded(payloads: list[bytes]) -> tuple[np.ndarray, dict, dict, list]:
  """The msgspec path: -> (indexes of the payloads that are JSON objects; their columns; their
  fields of the wrong JSON type, by position among them; the payloads that are not objects)."""
  events, maps, good, rejected = [], [], [], []
  for i, payload in enumerate(payloads):
    try:
      payload.decode('utf-8')   # msgspec does not check the text of fields it skips
      event = _DECODE(payload)
      maps.append([_map_of(getattr(event, name)) for name in _MAPS])
      events.append(event)
      good.append(i)
    except msgspec.DecodeError as e:   # also a JSON array or string where an object belongs
      half = lone_surrogate(payload)
      rejected.append((i, Reason.INVALID_TEXT, f'{half} is half of a UTF-16 surrogate pair '
                       'without its other half, not a character: send the pair, or the '
                       'character itself in UTF-8') if half else (i, Reason.INVALID_JSON, str(e)))
    except UnicodeDecodeError as e:    # msgspec's error for a string that is not UTF-8
      rejected.append((i, Reason.INVALID_TEXT, str(e)))
  bad: dict[int, tuple[Reason, str]] = {}
  field = {name: list(map(operator.attrgetter(name), events)) for name in _Raw.__struct_fields__}
  columns = {COLUMN_OF.get(name, name): _strings(field[name], name, bad) for name in _TEXT}
  columns['metric_value'] = _metrics(field['metric_value'], bad)
  for k, name in enumerate(_MAPS):
    columns[COLUMN_OF[name]] = _maps([m[k] for m in maps], name, bad)
  for name in ('ts', 'server_ts'):
    columns[name], columns[name + '_text'] = _instants(field[name], name, bad)
  return np.array(good, dtype=np.int64), columns, bad, rejected


def _columns(payloads: list[bytes]) -> tuple[np.ndarray, dict, dict, list]:
  """As _decoded, with the payloads the C parser takes (the usual case) parsed there. When all it
  leaves is rejected, its columns serve as they are, for every payload, and the payloads that are
  not objects come back in `bad` too."""
  if rawjson.parse is None:
    return _decoded(payloads)
  taken, fast = rawjson.columns(payloads)
  if taken.all():
    return np.arange(len(payloads)), fast, {}, []
  slow = np.flatnonzero(~taken)
  slow_good, slow_columns, slow_bad, rejected = _decoded([payloads[i] for i in slow])
  if len(slow_bad) == len(slow_good):   # all the parser left is rejected: keep its layout, no copy
    bad = {int(slow[i]): (reason, detail) for i, reason, detail in rejected}
    bad.update((int(slow[slow_good[j]]), why) for j, why in slow_bad.items())
    mask = np.zeros(len(payloads), dtype=bool)
    mask[slow[slow_good]] = True
    for name in ('ts', 'ts_text', 'server_ts', 'server_ts_text'):   # they decide the day
      fast[name] = pc.replace_with_mask(fast[name], pa.array(mask), slow_columns[name])
    return np.arange(len(payloads)), fast, bad, []
  fast_rows = np.flatnonzero(taken)
  rows = np.concatenate([fast_rows, slow[slow_good]])
  order = np.argsort(rows, kind='stable')
  keep = pa.array(taken)
  columns = {name: pa.concat_arrays([fast[name].filter(keep), slow_columns[name]]).take(order)
             for name in fast}
  position = np.empty(len(rows), dtype=np.int64)
  position[order] = np.arange(len(rows))
  bad = {int(position[len(fast_rows) + j]): why for j, why in slow_bad.items()}
  return rows[order], columns, bad, [(int(slow[i]), r, d) for i, r, d in rejected]


def parse_chunk(chunk: RawChunk) -> tuple[pa.RecordBatch, pa.RecordBatch, np.ndarray]:
  """-> (rows in import-contract columns plus environment (null: not given), lineage, payload,
  server and arrival times; rejected rows for payloads that are not raw events; the server time
  of each rejected row in ms: its own where readable, else when the chunk was received)."""
  parsed = parse_rows(chunk)
  batch = parsed.rows.add_column(parsed.rows.schema.get_field_index(SOURCE_ROW) + 1, PAYLOAD,
                                 _binary(parsed.payloads))
  return (batch if parsed.keep is None else batch.filter(pa.array(parsed.keep)), parsed.rejected,
          parsed.rejected_server_ms)


class Parsed(typing.NamedTuple):
  """parse_chunk's result before it copies anything: the rows (no payload column) including
  those it rejects, `keep` marking the others (None: all), and each row's payload."""
  rows: pa.RecordBatch
  keep: np.ndarray | None
  payloads: list[bytes]
  rejected: pa.RecordBatch
  rejected_server_ms: np.ndarray


def parse_rows(chunk: RawChunk) -> Parsed:
  """As parse_chunk, but without its two copies of the rows: a filter copies every column (the
  maps most of all), and the payload column copies every payload, for the few rows a caller
  rejects. A caller that filters the rows anyway (validation: validate_batch's `skip`) and
  explains rejected rows from `payloads` copies them once."""
  if chunk.unreadable is not None:
    empty = dataclasses.replace(chunk, source=[], rows=[], payloads=[], arrival_ms=None,
                                fallback_ms=None, unreadable=None)
    return Parsed(parse_rows(empty).rows, None, [],
                  reject(chunk, [(0, Reason.UNREADABLE_FILE, chunk.unreadable)]),
                  np.array([chunk.received_ms], dtype=np.int64))
  good, columns, bad, rejected = _columns(chunk.payloads)
  whole = len(good) == len(chunk)   # the usual case: per-payload lists serve as they are

  def pick(values: list) -> list:
    return values if whole else [values[i] for i in good]

  ts, bad_ts = _epoch_ms(_units(columns.pop('ts'), 'ts', bad), columns['ts_text'])
  server, bad_server = _epoch_ms(_units(columns.pop('server_ts'), 'server_ts', bad),
                                 columns['server_ts_text'])
  if chunk.fallback_ms is not None:   # Pub/Sub: publish time (or the named attribute)
    server = pc.coalesce(server, pa.array(pick(chunk.fallback_ms), pa.int64()))
  server = pc.coalesce(server, ts)     # files: the client time
  server = pc.fill_null(server, chunk.received_ms)   # no time at all: when it arrived (rejected later)
  for name, mask in (('ts', bad_ts), ('server_ts', bad_server)):
    for j in np.flatnonzero(mask):
      reason = Reason.INVALID_TS if name == 'ts' else Reason.INVALID_FIELD
      bad.setdefault(int(j), (reason, f'{name} is {columns[name + "_text"][j].as_py()!r}; not ISO 8601'))
  out_of_range = np.asarray(pc.fill_null(pc.or_(pc.less(server, 0), pc.greater(server, _MAX_MS)),
                                         False))
  for j in np.flatnonzero(out_of_range):
    bad.setdefault(int(j), (Reason.INVALID_FIELD,
                            f'server time {server[j]} ms is outside the years 1970..9999'))
  server = pc.if_else(pa.array(out_of_range), chunk.received_ms, server)

  arrival = (np.asarray(chunk.arrival_ms, dtype=np.int64)[good] if chunk.arrival_ms is not None
             else np.full(len(good), -1, dtype=np.int64))
  del columns['ts_text'], columns['server_ts_text']
  batch = pa.RecordBatch.from_pydict({
      'ts': ts.cast(coerce.TS_TYPE), **columns,
      SOURCE_FILE: pa.array(pick(chunk.source), pa.string()),
      SOURCE_ROW: pa.array(pick(chunk.rows), pa.int64()),
      SERVER_MS: server, ARRIVAL_MS: arrival})
  server_of = {}
  keep = None
  if bad:
    server_ms = np.asarray(server)
    for j, (reason, detail) in bad.items():
      rejected.append((int(good[j]), reason, detail))
      server_of[int(good[j])] = int(server_ms[j])
    keep = np.ones(len(good), dtype=bool)
    keep[list(bad)] = False
  rejected_batch = reject(chunk, rejected)   # sorts `rejected` by payload
  return Parsed(batch, keep, pick(chunk.payloads), rejected_batch, np.array(
      [server_of.get(i, chunk.received_ms) for i, _, _ in rejected], dtype=np.int64))


def payload_text(payload: bytes) -> str:
  return payload.decode('utf-8', errors='backslashreplace')


def reject(chunk: RawChunk, rejected: list[tuple[int, Reason, str]]) -> pa.RecordBatch:
  rejected.sort(key=lambda r: r[0])
  return pa.RecordBatch.from_arrays([
      pa.array([r.value for _, r, _ in rejected], pa.string()),
      pa.array([f'{r.explanation}; {detail}' for _, r, detail in rejected], pa.string()),
      pa.array([chunk.source[i] for i, _, _ in rejected], pa.string()),
      pa.array([chunk.rows[i] for i, _, _ in rejected], pa.int64()),
      pa.array([payload_text(chunk.payloads[i]) for i, _, _ in rejected], pa.string()),
  ], schema=REJECTED_SCHEMA)

