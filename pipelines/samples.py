"""Realistic synthetic customer data: a day of events as customers' tools write it.

Vectorized (numpy + Arrow) so that a million events take about a second. `writer` imitates
  'pyarrow'  - timestamp[us, UTC], map columns, files part-N.parquet
  'spark'    - INT96 timestamps, part-...-c000.snappy.parquet names, .crc side files
  'bigquery' - 000000000000.parquet names, identifiers as JSON text, other maps as
               repeated key/value structs (BigQuery has no map type)
About `invalid` of the rows are broken in one of several ways, and `duplicates` of them are resent
later with the same insert_id.
"""
import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.lake.names import SUCCESS
from transforms.stores import fs

__all__ = ['events', 'write_day', 'raw_events']

_HEX = np.frombuffer(b'0123456789abcdef', dtype=np.uint8)
_EVENTS = ['purchase', 'signup', 'view_item', 'add_to_cart', '$session_start', '장바구니_담기']
_CATEGORIES = ['LEISURE', 'FOOD', '레저', '도서', 'a,b "quoted"', 'line\nbreak <&>']


def _uuids(rng: np.random.Generator, n: int, upper: bool = False) -> pa.Array:
  raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
  raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
  raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
  hexes = np.empty((n, 32), dtype=np.uint8)
  hexes[:, 0::2] = _HEX[raw >> 4]
  hexes[:, 1::2] = _HEX[raw & 0x0F]
  out = np.full((n, 36), ord('-'), dtype=np.uint8)
  for dst, src in ((slice(0, 8), slice(0, 8)), (slice(9, 13), slice(8, 12)),
                   (slice(14, 18), slice(12, 16)), (slice(19, 23), slice(16, 20)),
                   (slice(24, 36), slice(20, 32))):
    out[:, dst] = hexes[:, src]
  if upper:
    out = np.where(out >= ord('a'), out - 32, out).astype(np.uint8)
  offsets = pa.py_buffer(np.arange(0, 36 * (n + 1), 36, dtype=np.int32).tobytes())
  return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(out.tobytes())])


def _pick(rng, values: list[str], n: int) -> pa.Array:
  return pa.DictionaryArray.from_arrays(
      pa.array(rng.integers(0, len(values), n, dtype=np.int32)), pa.array(values)).cast(pa.string())


def _map(keys: list[str], values: list[pa.Array]) -> pa.MapArray:
  n, k = len(values[0]), len(keys)
  flat_values = pa.concat_arrays(values).take(pa.array((np.arange(n)[:, None] + np.arange(k) * n).ravel()))
  flat_keys = pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(k, dtype=np.int32), n)),
                                             pa.array(keys)).cast(pa.string())
  return pa.MapArray.from_arrays(pa.array(np.arange(0, k * (n + 1), k, dtype=np.int32)),
                                 flat_keys, flat_values)


def _rename_key(m: pa.MapArray, rows: np.ndarray, old: str, new: str) -> pa.MapArray:
  """Renames key `old` to `new` in the given rows (to break or mixed-case them)."""
  if len(rows) == 0:
    return m
  offsets = np.asarray(m.offsets)
  in_rows = np.zeros(len(m.keys), dtype=bool)
  for r in rows:
    in_rows[offsets[r]:offsets[r + 1]] = True
  hit = np.asarray(pc.equal(m.keys, old)) & in_rows
  keys = pc.if_else(pa.array(hit), new, m.keys)
  return pa.MapArray.from_arrays(m.offsets, keys, m.items)


def events(day: datetime.date, n: int, seed: int = 7, invalid: float = 0.01,
           duplicates: float = 0.02) -> pa.Table:
  """n distinct events of `day` plus about n*duplicates resends, in the import contract's types."""
  rng = np.random.default_rng(seed)
  start = int(datetime.datetime(day.year, day.month, day.day,
                                tzinfo=datetime.timezone.utc).timestamp() * 1_000_000)
  ts = pa.array(start + rng.integers(0, 86_400_000_000, n), pa.int64()).cast(
      pa.timestamp('us', tz='UTC'))
  cents = pa.array(rng.integers(0, 5_000_000, n) * (rng.random(n) < 0.3), pa.int64())
  metric = pc.divide(cents.cast(pa.decimal128(22, 0)).cast(pa.decimal128(24, 6)),
                     pa.scalar(100, pa.decimal128(3, 0))).cast(pa.decimal128(24, 6))
  users = pa.array(rng.integers(1, 50_000, n)).cast(pa.string())
  ids = _uuids(rng, n)
  identifiers = _map(['id', 'device_id', 'user_id'], [ids, _uuids(rng, n, upper=True), users])
  platform = _map(['osname', 'appversion', 'language', 'devicemodel'],
                  [_pick(rng, ['Android', 'iOS'], n), _pick(rng, ['6.9.0', '6.9.3', '7.0.1'], n),
                   _pick(rng, ['ko', 'ko-KR', 'en-US'], n),
                   _pick(rng, ['SM-S908N', 'iPhone14,2', 'Pixel 8'], n)])
  user_props = _map(['grade', 'date_signed'], [_pick(rng, ['GOLD', 'SILVER', '브론즈'], n),
                                               _pick(rng, ['2022-07-01', '2023-01-17'], n)])
  event_props = _map(['product_id', 'product_category', 'order_id'],
                     [pa.array(rng.integers(1, 99_999, n)).cast(pa.string()),
                      _pick(rng, _CATEGORIES, n),
                      pa.array(rng.integers(1, 10**9, n)).cast(pa.string())])
  insert_id = _uuids(rng, n)
  event_key = _pick(rng, _EVENTS, n)

  mixed = np.flatnonzero(rng.random(n) < 0.01)
  event_props = _rename_key(event_props, mixed, 'product_id', 'Product_ID')
  broken = np.flatnonzero(rng.random(n) < invalid)
  kinds = rng.integers(0, 6, len(broken))
  insert_id = pc.if_else(_mask(n, broken[kinds == 0]), 'not-a-uuid', insert_id)
  event_key = pc.if_else(_mask(n, broken[kinds == 1]), '', event_key)
  ts = pc.if_else(_mask(n, broken[kinds == 2]), pa.scalar(None, ts.type), ts)
  identifiers = _rename_key(identifiers, broken[kinds == 3], 'device_id', 'device')
  platform = _rename_key(platform, broken[kinds == 4], 'osname', 'os')
  metric = pc.if_else(_mask(n, broken[kinds == 5]),
                      pa.scalar(10**17, pa.decimal128(24, 6)), metric)  # fits; see below
  table = pa.table({'ts': ts, 'event_key': event_key, 'identifiers': identifiers,
                    'insert_id': insert_id, 'metric_value': metric,
                    'user_properties': user_props, 'event_properties': event_props,
                    'platform_properties': platform})
  table = _out_of_range(table, broken[kinds == 5])
  dup = np.flatnonzero(rng.random(n) < duplicates)
  resent = table.take(pa.array(dup))
  later = pc.add(resent['ts'].cast(pa.int64()), pa.array(rng.integers(1, 5_000_000, len(dup))))
  resent = resent.set_column(0, 'ts', later.cast(resent.schema.field('ts').type))
  return pa.concat_tables([table, resent])


def _mask(n: int, rows: np.ndarray) -> pa.Array:
  m = np.zeros(n, dtype=bool)
  m[rows] = True
  return pa.array(m)


def _out_of_range(table: pa.Table, rows: np.ndarray) -> pa.Table:
  """metric_value 10^19 does not fit decimal(24,6); such files carry a wider decimal column."""
  wide = table['metric_value'].cast(pa.decimal128(30, 6))
  wide = pc.if_else(_mask(table.num_rows, rows), pa.scalar(10**19, pa.decimal128(30, 6)), wide)
  return table.set_column(table.schema.get_field_index('metric_value'), 'metric_value', wide)


def _as_bigquery(table: pa.Table) -> pa.Table:
  kv = pa.list_(pa.struct([('key', pa.string()), ('value', pa.string())]))
  out = table
  for name in ('user_properties', 'event_properties', 'platform_properties'):
    m = table[name].combine_chunks()
    as_list = pa.ListArray.from_arrays(m.offsets, pa.StructArray.from_arrays(
        [m.keys, m.items], names=['key', 'value'])).cast(kv)
    out = out.set_column(out.schema.get_field_index(name), name, as_list)
  ident = pa.array([json.dumps(dict(r), ensure_ascii=False) for r in table['identifiers'].to_pylist()])
  return out.set_column(out.schema.get_field_index('identifiers'), 'identifiers', ident)


def write_day(prefix: str, day: datetime.date, table: pa.Table, files: int = 4,
              writer: str = 'pyarrow', success: bool = True) -> list[str]:
  """Writes `table` as a customer would under PREFIX/dt=DAY/, then _SUCCESS. Returns the paths."""
  directory = fs.partition_dir(prefix, day.isoformat())
  if writer == 'bigquery':
    table = _as_bigquery(table)
  paths = []
  per_file = -(-table.num_rows // files)
  for i in range(files):
    part = table.slice(i * per_file, per_file)
    sink = pa.BufferOutputStream()
    if writer == 'spark':
      name = f'part-{i:05d}-3f2c1b7e-0d4a-4a7e-9a43-0c5d7e1f2a3b-c000.snappy.parquet'
      pq.write_table(part, sink, use_deprecated_int96_timestamps=True, compression='snappy')
    else:
      name = f'{i:012d}.parquet' if writer == 'bigquery' else f'part-{i}.parquet'
      pq.write_table(part, sink, compression='snappy')
    path = fs.join(directory, name)
    fs.write_bytes(path, sink.getvalue().to_pybytes())
    if writer == 'spark':
      fs.write_bytes(fs.join(directory, f'.{name}.crc'), b'crc')
    paths.append(path)
  if success:
    fs.write_bytes(fs.join(directory, SUCCESS), b'')
  return paths


def raw_events(day: datetime.date, n: int, seed: int = 7, malformed: float = 0.005,
               **kwargs) -> list[bytes]:
  """`events()` as raw JSON events (schemas/raw.py) the way SDKs send them: ts as epoch millis
  or ISO text, numbers as JSON numbers, server_ts a little after ts, and about `malformed` of the
  payloads cut short or not objects."""
  table = events(day, n, seed=seed, **kwargs)
  rng = np.random.default_rng(seed + 1)
  start = int(datetime.datetime(day.year, day.month, day.day,
                                tzinfo=datetime.timezone.utc).timestamp() * 1000)
  ts = pc.divide(table['ts'].cast(pa.int64()), 1000)
  server = pc.coalesce(ts, pa.scalar(start, pa.int64())).to_numpy()
  server = np.minimum(server + rng.integers(0, 2000, table.num_rows), start + 86_399_999)
  iso = rng.random(table.num_rows) < 0.5
  out = []
  for i, row in enumerate(table.to_pylist()):
    ts_value = row['ts']
    if ts_value is not None:
      ts_value = ts_value.isoformat() if iso[i] else int(ts_value.timestamp() * 1000)
    metric = row['metric_value']
    event = {'insert_id': row['insert_id'], 'event_key': row['event_key'], 'ts': ts_value,
             'server_ts': int(server[i]), 'identifiers': dict(row['identifiers']),
             'metric_value': None if metric is None else (float(metric) if i % 2 else str(metric)),
             'user_properties': dict(row['user_properties']),
             'event_properties': dict(row['event_properties']),
             'hackle_properties': dict(row['platform_properties'])}
    out.append(json.dumps(event, ensure_ascii=False).encode())
  for i in np.flatnonzero(rng.random(len(out)) < malformed).tolist():
    out[i] = out[i][:len(out[i]) // 2] if i % 2 else b'["not", "an", "object"]'
  return out
