"""Validation and normalization of event batches against the import contract, vectorized.

`validate_batch` takes a batch as read (any column types the coerce module accepts, plus the
lineage columns `_source_file` and `_source_row`) and returns every row normalized to the lake
schema with a mask of the valid ones, the rejected rows (with their original values, a reason code
and a detail), and the counts. Python runs per row only for
rejected rows, to explain them.
"""
import dataclasses
import datetime
import json
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from schemas.events import (IMPORT_SCHEMA, LAKE_SCHEMA, LINEAGE, MAP_COLUMNS, OPTIONAL_COLUMNS, PAYLOAD,
                            REJECTED_SCHEMA, REQUIRED_KEYS, SOURCE_FILE, SOURCE_ROW, UUID_PATTERN)
from schemas.reasons import Flag, Reason
from transforms.kernels import coerce, normalize
from transforms.kernels.accounting import DayStats
from transforms.kernels.shards import split_by_shard

__all__ = ['DEFAULT_ENVIRONMENT', 'Validated',
           'constant', 'check_columns', 'validate_batch', 'explain', 'ValidateBatches',
           'ValidateEvents']

DEFAULT_ENVIRONMENT = 'production'   # of events that name none, unless --environment says
_REASONS = list(Reason)
_MISSING_KEY_REASONS = {  # in the order of schemas.events.REQUIRED_KEYS
    'identifiers': (Reason.MISSING_ID, Reason.MISSING_DEVICE_ID),
    'platform_properties': (Reason.MISSING_OSNAME, Reason.MISSING_APPVERSION),
}
_DAY_MS = 86_400_000
_SKIPPED = -2   # reason of a row validate_batch's caller rejected (its `skip`)


@dataclasses.dataclass
class Validated:
  checked: pa.RecordBatch    # every row: LAKE_SCHEMA columns plus the lineage columns
  ok: np.ndarray             # the rows of `checked` that passed; the others are in `rejected`
  rejected: pa.RecordBatch   # REJECTED_SCHEMA
  stats: DayStats

  @property
  def valid(self) -> pa.RecordBatch:
    return self.checked.filter(pa.array(self.ok))


def constant(value, n: int, type_: pa.DataType = pa.string()) -> pa.Array:
  return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                        pa.array([value], type_)).cast(type_)


def check_columns(schema: pa.Schema) -> list[str]:
  """Raises MissingColumn for a missing required column; returns the extra columns (ignored)."""
  names = set(schema.names)
  for field in IMPORT_SCHEMA:
    if field.name not in names and field.name not in OPTIONAL_COLUMNS:
      raise coerce.MissingColumn(field.name, field.type,
                                 [n for n in schema.names if n not in LINEAGE])
  return sorted(names - set(IMPORT_SCHEMA.names) - set(LINEAGE))


def _has_keys(arr: pa.MapArray, keys: tuple[str, ...]) -> list[np.ndarray]:
  """Per key, the rows whose map holds it with a non-empty value. O(entries), no per-row Python;
  which values are non-empty is worked out once for all keys."""
  offsets = np.asarray(arr.offsets, dtype=np.int64)
  start, end = offsets[0], offsets[-1]
  entries = arr.keys.slice(start, end - start)
  filled = pc.greater(pc.binary_length(arr.items.slice(start, end - start)), 0)
  out = []
  for key in keys:
    hit = np.asarray(pc.fill_null(pc.and_(pc.equal(entries, key), filled), False))
    hits_before = np.concatenate([[0], np.cumsum(hit)])   # hits among the entries before each
    out.append(hits_before[offsets[1:] - start] > hits_before[offsets[:-1] - start])
  return out


def _entries(arr: pa.MapArray) -> np.ndarray:
  return np.diff(np.asarray(arr.offsets))


def _blank(arr: pa.Array) -> np.ndarray:
  return np.asarray(pc.fill_null(pc.equal(pc.binary_length(pc.utf8_trim_whitespace(arr)), 0), True))


def validate_batch(raw: pa.RecordBatch, environment: str | pa.Array,
                   day: datetime.date | None = None, skip: np.ndarray | None = None,
                   payloads: typing.Sequence[bytes] | None = None) -> Validated:
  """`environment`: one for the batch, or one per row. `skip`: rows another step rejected
  already (streaming ingest: payloads its parser refused, rows too late), left in so that the
  batch is copied once, by the caller's filter of the valid rows: they are neither valid nor
  rejected here, and count nowhere. `payloads`: each row's raw payload, for explain."""
  n = raw.num_rows
  check_columns(raw.schema)
  stats = DayStats(rows_in=n if skip is None else n - int(skip.sum()))
  col = {name: raw.column(name) if name in raw.schema.names else pa.nulls(n)   # optional, absent
         for name in IMPORT_SCHEMA.names}
  failures: list[tuple[Reason, np.ndarray]] = []

  maps, bad_map, bad_text = {}, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
  for name in MAP_COLUMNS:
    as_map, bad, unreadable = coerce.to_map(col[name], name)
    maps[name], dropped = normalize.lower_map_keys(as_map)
    if dropped and skip is not None:   # only the entries of the rows validated here count
      dropped = int((_entries(as_map) - _entries(maps[name]))[~skip].sum())
    stats.flags[Flag.KEY_COLLISION.value] += dropped
    bad_map |= bad
    bad_text |= unreadable
  insert_id, unreadable = coerce.valid_utf8(coerce.to_string(col['insert_id'], 'insert_id'))
  bad_text |= unreadable
  event_key, unreadable = coerce.valid_utf8(coerce.to_string(col['event_key'], 'event_key'))
  bad_text |= unreadable
  failures.append((Reason.INVALID_TEXT, bad_text))
  failures.append((Reason.INVALID_MAP, bad_map))

  insert_id = normalize.lower_uuid(insert_id)
  failures.append((Reason.MISSING_INSERT_ID, _blank(insert_id)))
  failures.append((Reason.INVALID_INSERT_ID, ~np.asarray(
      pc.fill_null(pc.match_substring_regex(insert_id, UUID_PATTERN), False))))
  failures.append((Reason.MISSING_EVENT_KEY, _blank(event_key)))

  ts, bad_ts = coerce.to_timestamp(col['ts'])
  failures.append((Reason.MISSING_TS, np.asarray(ts.is_null()) & ~bad_ts))
  failures.append((Reason.INVALID_TS, bad_ts))
  for name, keys in REQUIRED_KEYS.items():
    for present, missing in zip(_has_keys(maps[name], keys), _MISSING_KEY_REASONS[name],
                                strict=True):
      failures.append((missing, ~present))

  metric, bad_metric, big_metric, rounded = coerce.to_metric(col['metric_value'])
  failures.append((Reason.INVALID_METRIC_VALUE, bad_metric))
  failures.append((Reason.METRIC_VALUE_OUT_OF_RANGE, big_metric))

  reason = np.full(n, -1, dtype=np.int16)
  for reason_code, mask in reversed(failures):
    reason[mask] = _REASONS.index(reason_code)
  if skip is not None:
    reason[skip] = _SKIPPED
  ok = reason == -1

  null_metric = np.asarray(metric.is_null()) & ok
  stats.flags[Flag.METRIC_VALUE_DEFAULTED.value] += int(null_metric.sum())
  stats.flags[Flag.METRIC_VALUE_ROUNDED.value] += int((rounded & ok).sum())
  metric = pc.fill_null(metric, pa.scalar(0, coerce.METRIC_TYPE))
  if day is not None:
    start = int(datetime.datetime(day.year, day.month, day.day,
                                  tzinfo=datetime.timezone.utc).timestamp() * 1000)
    ms = ts.cast(pa.int64())
    outside = pc.or_(pc.less(ms, start - _DAY_MS), pc.greater_equal(ms, start + 2 * _DAY_MS))
    stats.flags[Flag.TS_OUTSIDE_DAY.value] += int(np.asarray(pc.fill_null(outside, False))[ok].sum())

  if isinstance(environment, str):
    environment = constant(environment, n)
  columns = {'ts': ts, 'environment': environment, 'event_key': event_key,
             'identifiers': maps['identifiers'], 'insert_id': insert_id, 'metric_value': metric,
             'user_properties': maps['user_properties'],
             'event_properties': maps['event_properties'],
             'platform_properties': maps['platform_properties']}
  lake = pa.RecordBatch.from_arrays([columns[f.name] for f in LAKE_SCHEMA], schema=LAKE_SCHEMA)
  checked = pa.RecordBatch.from_arrays(
      lake.columns + [raw.column(SOURCE_FILE), raw.column(SOURCE_ROW)],
      names=lake.schema.names + list(LINEAGE))
  bad_rows = np.flatnonzero(reason >= 0)
  rejected = explain(raw, bad_rows, [_REASONS[r] for r in reason[bad_rows]], payloads)
  stats.rows_rejected = len(bad_rows)
  stats.rejected.update(r.value for r in (_REASONS[i] for i in reason[bad_rows]))
  return Validated(checked, ok, rejected, stats)


def _json_default(value):
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='backslashreplace')
  return str(value)


def _original(row: dict) -> str:
  if PAYLOAD in row:
    return _text(row[PAYLOAD])
  return json.dumps({k: v for k, v in row.items() if k not in LINEAGE},
                    default=_json_default, ensure_ascii=False)


_COLUMN_OF = {
    Reason.MISSING_INSERT_ID: 'insert_id', Reason.INVALID_INSERT_ID: 'insert_id',
    Reason.MISSING_EVENT_KEY: 'event_key', Reason.MISSING_TS: 'ts', Reason.INVALID_TS: 'ts',
    Reason.MISSING_ID: 'identifiers', Reason.MISSING_DEVICE_ID: 'identifiers',
    Reason.MISSING_OSNAME: 'platform_properties', Reason.MISSING_APPVERSION: 'platform_properties',
    Reason.INVALID_METRIC_VALUE: 'metric_value', Reason.METRIC_VALUE_OUT_OF_RANGE: 'metric_value',
}


def explain(raw: pa.RecordBatch, rows: np.ndarray, reasons: list[Reason],
            payloads: typing.Sequence[bytes] | None = None) -> pa.RecordBatch:
  """The rejected rows: original values (the payload as it arrived: the batch's PAYLOAD column,
  or `payloads`, one per row of `raw`; else the row as JSON), reason code, and what was found
  where."""
  if len(rows) == 0:
    return pa.RecordBatch.from_pylist([], schema=REJECTED_SCHEMA)
  taken = _undecoded(raw.take(pa.array(rows)))
  if payloads is not None:
    taken = taken.append_column(PAYLOAD, pa.array([payloads[i] for i in rows], pa.large_binary()))
  columns = {}   # column by column: RecordBatch.to_pylist took 4x as long
  for name, column in zip(taken.schema.names, taken.columns):
    values = column.to_pylist()
    if pa.types.is_map(column.type):
      values = [None if v is None else {_text(k): item for k, item in v} for v in values]
    columns[name] = values
  originals = [dict(zip(columns, row)) for row in zip(*columns.values())]
  return pa.RecordBatch.from_arrays([
      pa.array([r.value for r in reasons], pa.string()),
      pa.array([_detail(r, o) for r, o in zip(reasons, originals)], pa.string()),
      pa.array([_text(o[SOURCE_FILE]) for o in originals], pa.string()),
      pa.array([o[SOURCE_ROW] for o in originals], pa.int64()),
      pa.array([_original(o) for o in originals], pa.string()),
  ], schema=REJECTED_SCHEMA)


def _undecoded(batch: pa.RecordBatch) -> pa.RecordBatch:
  """Text columns (and string maps) that hold invalid UTF-8 viewed as bytes, so that their rows
  can still be read out; _json_default shows such bytes with backslash escapes. Valid columns stay
  text, which json encodes without a call of _json_default per value."""
  def view(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string(t):
      return pa.binary()
    if pa.types.is_large_string(t):
      return pa.large_binary()
    if pa.types.is_map(t) and pa.types.is_string(t.key_type):
      return pa.map_(pa.binary(), view(t.item_type))
    return t
  columns = [c.view(view(c.type)) if view(c.type) != c.type and not _valid(c) else c
             for c in batch.columns]
  return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _valid(arr: pa.Array) -> bool:
  try:
    arr.validate(full=True)   # checks UTF-8, map keys and values included
    return True
  except pa.ArrowInvalid:
    return False


def _text(value) -> str:
  return value.decode('utf-8', errors='backslashreplace') if isinstance(value, bytes) else value


def _detail(reason: Reason, row: dict) -> str:
  column = _COLUMN_OF.get(reason)
  if column is None:
    return reason.explanation
  found = json.dumps(row.get(column), default=_json_default, ensure_ascii=False)
  if len(found) > 200:
    found = found[:200] + '...'
  return f'{reason.explanation}; found {column}={found}'


class ValidateBatches(beam.DoFn):
  """(dt, raw batch) -> (dt, lake batch); tagged 'rejected' (dt, rejected batch), 'stats'.
  With `shards` (dt -> shards of the day) one lake batch per shard the rows fall in
  (transforms/kernels/shards.py): the valid rows are copied once, into their shard's batch."""

  def __init__(self, environment: str, flag_outside_day: bool = True,
               shards: dict[str, int] | None = None):
    self._environment = environment
    self._flag_outside_day = flag_outside_day
    self._shards = shards
    self._rejected = {r.value: Metrics.counter('eventferry.validate', f'rejected_{r.value}')
                      for r in Reason}
    self._valid = Metrics.counter('eventferry.validate', 'rows_valid')

  def process(self, element: tuple[str, pa.RecordBatch]):
    dt, raw = element
    day = datetime.date.fromisoformat(dt) if self._flag_outside_day else None
    result = validate_batch(raw, self._environment, day)
    self._valid.inc(int(result.ok.sum()))
    for code, count in result.stats.rejected.items():
      self._rejected[code].inc(count)
    yield beam.pvalue.TaggedOutput('stats', (dt, result.stats))
    if result.rejected.num_rows:
      yield beam.pvalue.TaggedOutput('rejected', (dt, result.rejected))
    shards = self._shards[dt] if self._shards else 1
    for _, part in split_by_shard(result.checked, shards, result.ok):
      yield dt, part


class ValidateEvents(beam.PTransform):
  """Validates and normalizes (dt, batch) elements; outputs 'main', 'rejected' and 'stats'.
  `shards`: see ValidateBatches."""

  def __init__(self, environment: str, flag_outside_day: bool = True,
               shards: dict[str, int] | None = None):
    super().__init__()
    self._fn = ValidateBatches(environment, flag_outside_day, shards)

  def expand(self, batches):
    return batches | beam.ParDo(self._fn).with_output_types(
        tuple[str, pa.RecordBatch]).with_outputs('rejected', 'stats', main='main')
