"""The writer matrix: one customer day written by each real tool (pyarrow, pandas, Polars, DuckDB,
Spark), generated here, imported with the real import and read back with DuckDB.

The expected lake rows come from the values each test handed its writer, with the contract's rules
applied here (`expect`): lower-cased keys, ts floored to UTC milliseconds, metric rounded to 6
decimals HALF_UP from the decimal (for a float: its shortest text, Python's repr), missing, null and
empty maps as {}, and the dedupe rule (earliest ts, then the file name relative to the day folder,
then the row). Nothing of the project's code computes an expected value.
"""
import datetime
import decimal
import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import import_events, options
from transforms.stores import fs

pytestmark = pytest.mark.engine

UTC = datetime.timezone.utc
SEOUL = datetime.timezone(datetime.timedelta(hours=9))
D = decimal.Decimal
MAP = pa.map_(pa.string(), pa.string())
KV = pa.list_(pa.struct([('key', pa.string()), ('value', pa.string())]))
ABSENT = object()   # a column the file does not have


def uuid(n: int) -> str:
  return f'00000000-0000-4000-8000-{n:012x}'


def spec(day: str, n: int, **over) -> dict:
  """One logical event as a test hands it to a writer; `over` replaces fields."""
  start = datetime.datetime.fromisoformat(day).replace(tzinfo=UTC)
  row = {
      'ts': start + datetime.timedelta(seconds=n, microseconds=333_999),   # floors to .333
      'event_key': f'Event {n}',
      'identifiers': {'Id': f'user-{n}', 'Device_ID': f'DEV-{n}'},
      'insert_id': uuid(n).upper() if n % 2 else uuid(n),
      'metric_value': D('1.5'),
      'user_properties': {'Grade': 'GOLD', 'n': str(n)},
      'event_properties': {'Product_Category': '레저 & <스포츠>'},
      'platform_properties': {'OSName': 'Android', 'AppVersion': '6.9.0'},
  }
  row.update(over)
  return row


def _metric(v) -> D:
  text = repr(v) if isinstance(v, float) else str(v)   # repr: the shortest text of a float
  return D(text).quantize(D('0.000001'), rounding=decimal.ROUND_HALF_UP)


def _map(m) -> dict:
  return {} if m is None or m is ABSENT else {k.lower(): v for k, v in m.items()}


def expect(files: dict[str, list[dict]]) -> dict[str, tuple]:
  """insert_id -> the lake row the contract asks for, from what the writer was given."""
  best = {}
  for name, rows in files.items():
    for i, r in enumerate(rows):
      ms = (r['ts'] - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(milliseconds=1)
      key = r['insert_id'].strip().lower()
      row = (ms, r['event_key'], _map(r['identifiers']),
             _metric(r['metric_value']) if r['metric_value'] is not None else D('0.000000'),
             _map(r.get('user_properties', ABSENT)), _map(r.get('event_properties', ABSENT)),
             _map(r['platform_properties']))
      rank = (ms, name, i)
      if key not in best or rank < best[key][0]:
        best[key] = (rank, row)
  return {k: row for k, (_, row) in best.items()}


def lake(lake_dir: str, day: str) -> dict[str, tuple]:
  con = duckdb.connect()
  rows = con.execute(
      f"select insert_id, epoch_ms(ts), event_key, identifiers, metric_value, user_properties, "
      f"event_properties, platform_properties from read_parquet('{lake_dir}/dt={day}/*.parquet')"
  ).fetchall()
  return {r[0]: (r[1], r[2], dict(r[3]), r[4], dict(r[5]), dict(r[6]), dict(r[7])) for r in rows}


def run_import(tmp_path, source: str, day: str, capsys) -> tuple[int, dict, str]:
  lake_dir, report = str(tmp_path / 'lake'), str(tmp_path / 'report.json')
  code = options.main_guard(import_events.run, [
      '--source', source, '--date', day, '--lake', lake_dir, '--report', report])
  err = capsys.readouterr().err
  return code, (json.load(open(report)) if os.path.exists(report) else {}), err


def check_day(tmp_path, source: str, day: str, files: dict[str, list[dict]], capsys,
              ignored: list[str] = ()) -> None:
  code, report, err = run_import(tmp_path, source, day, capsys)
  assert code == 0, err
  want = expect(files)
  got = lake(str(tmp_path / 'lake'), day)
  assert got == want
  d = report['days'][0]
  rows_in = sum(len(rows) for rows in files.values())
  assert (d['rows_in'], d['rows_written'], d['rows_rejected']) == (rows_in, len(want), 0)
  assert d['rows_duplicate'] == rows_in - len(want)
  manifest = json.load(open(tmp_path / 'lake' / f'dt={day}' / '_manifest.json'))
  assert sorted(manifest['source_files']) == sorted(files)
  directory = fs.partition_dir(source, day)
  assert sorted(report['ignored_files']) == sorted(f'{directory}/{n}' for n in ignored)


def _columns(rows: list[dict], names=None) -> dict[str, list]:
  names = names or [n for n in rows[0] if rows[0][n] is not ABSENT]
  return {n: [r[n] for r in rows] for n in names}


def _arrow(rows: list[dict], types: dict[str, pa.DataType], convert=None) -> pa.Table:
  """A pyarrow table of `rows` (ABSENT columns left out), each column built as `types` says."""
  convert = convert or {}
  cols = {}
  for name, values in _columns(rows).items():
    values = [convert[name](v) if name in convert and v is not None else v for v in values]
    t = types[name]   # pa.array builds every dictionary with int32 indices: cast instead
    cols[name] = pa.array(values, t.value_type).cast(t) if pa.types.is_dictionary(t) else \
        pa.array(values, t)
  return pa.table(cols)


def _items(m):
  return None if m is None else list(m.items())


def _kv(m):
  return None if m is None else [{'key': k, 'value': v} for k, v in m.items()]


def _naive(ts):
  return ts.astimezone(UTC).replace(tzinfo=None)


# pyarrow: every text encoding, timestamp unit and zone, decimal, int, float and text metrics, and
# maps as map, list of key/value structs, JSON text and structs; sub-folders, a file without an
# extension and side files (also in side folders) that must not be read.

def test_pyarrow_day(tmp_path, capsys):
  day, source = '2023-01-01', str(tmp_path / 'bucket')
  folder = os.path.join(source, f'dt={day}')
  base = dict(identifiers=MAP, user_properties=MAP, event_properties=MAP, platform_properties=MAP)
  files = {
      'part-a.parquet': (
          [spec(day, n, ts=whole(day, n), metric_value=m) for n, m in
           ((1, D('12.34')), (2, D('-0.05')))]
          + [spec(day, 3, ts=whole(day, 3), event_key='tie, sorts after hour=01', metric_value=D('7'))],
          dict(base, ts=pa.timestamp('s'), event_key=pa.string(), insert_id=pa.large_string(),
               metric_value=pa.decimal128(9, 2)),
          {'ts': _naive, 'identifiers': _items,
           'user_properties': _items, 'event_properties': _items, 'platform_properties': _items}),
      'hour=01/part-b.parquet': (
          [spec(day, 3, ts=whole(day, 3), metric_value=D('1.234566500')),   # ties part-a's: wins
           spec(day, 4, metric_value=D('-1.234566500'), user_properties={}),
           spec(day, 5, metric_value=D('12345678901234567.123456789'), user_properties=None)],
          dict(ts=pa.timestamp('us', tz='Asia/Seoul'), event_key=pa.string_view(),
               insert_id=pa.dictionary(pa.uint32(), pa.string()), metric_value=pa.decimal128(38, 9),
               identifiers=KV, user_properties=KV, event_properties=KV, platform_properties=KV),
          {'ts': lambda t: t.astimezone(SEOUL), 'identifiers': _kv, 'user_properties': _kv,
           'event_properties': _kv, 'platform_properties': _kv}),
      'hour=02/deep/000000000000': (   # BigQuery's name, no extension; event_properties absent
          [spec(day, 6, metric_value=42, event_properties=ABSENT),
           spec(day, 7, metric_value=-3, event_properties=ABSENT, user_properties=None)],
          dict(ts=pa.timestamp('ns'), event_key=pa.dictionary(pa.int32(), pa.string()),
               insert_id=pa.string(), metric_value=pa.int64(), identifiers=pa.string(),
               user_properties=pa.large_string(), platform_properties=pa.string()),
          {'ts': _naive, 'identifiers': json.dumps, 'user_properties': json.dumps,
           'platform_properties': json.dumps}),
      'part-c.parquet': (
          [spec(day, 8, metric_value=1.2345665), spec(day, 9, metric_value=0.1 + 0.2),
           spec(day, 10, metric_value=2.675, user_properties={'Grade': 'X'})],   # n: null field
          dict(ts=pa.timestamp('ms', tz='UTC'), event_key=pa.string(), insert_id=pa.string(),
               metric_value=pa.float64(),
               identifiers=pa.struct([('Id', pa.string()), ('Device_ID', pa.string())]),
               user_properties=pa.struct([('Grade', pa.string()), ('n', pa.string())]),
               event_properties=pa.struct([('Product_Category', pa.string())]),
               platform_properties=pa.struct([('OSName', pa.string()), ('AppVersion', pa.string())])),
          {'ts': lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)}),
      'part-d.snappy.parquet': (
          [spec(day, 11, metric_value='12.3456785'), spec(day, 12, metric_value=' -0.0000005 '),
           spec(day, 13, metric_value=None, user_properties=None, event_properties={})],
          dict(base, ts=pa.int64(), event_key=pa.large_string(),
               insert_id=pa.dictionary(pa.int8(), pa.string()), metric_value=pa.string()),
          {'ts': lambda t: (t - datetime.datetime(1970, 1, 1, tzinfo=UTC))
                           // datetime.timedelta(milliseconds=1),
           'identifiers': _items, 'user_properties': _items, 'event_properties': _items,
           'platform_properties': _items}),
  }
  for name, (rows, types, convert) in files.items():
    pq.write_table(_arrow(rows, types, convert), os.path.join(_mkdirs(folder, name), name))
  side = {'_temporary/0/part-x.parquet': [spec(day, 99)], 'hour=01/.hidden/part-y.parquet': [spec(day, 98)]}
  for name, rows in side.items():
    pq.write_table(_arrow(rows, dict(base, ts=pa.timestamp('ms', tz='UTC'), event_key=pa.string(),
                                     insert_id=pa.string(), metric_value=pa.decimal128(9, 2)),
                          {k: _items for k in base}), os.path.join(_mkdirs(folder, name), name))
  for name in ('hour=01/_SUCCESS', '.part-a.parquet.crc', 'hour=02/_committed_7', '_SUCCESS'):
    open(os.path.join(_mkdirs(folder, name), name), 'wb').close()
  stored = pq.read_metadata(os.path.join(folder, 'hour=01/part-b.parquet')).schema.to_arrow_schema()
  assert stored.field('insert_id').type == pa.dictionary(pa.uint32(), pa.string())
  check_day(tmp_path, source, day, {n: rows for n, (rows, _, _) in files.items()}, capsys,
            ignored=['.part-a.parquet.crc', '_temporary/0/part-x.parquet',
                     'hour=01/.hidden/part-y.parquet', 'hour=01/_SUCCESS', 'hour=02/_committed_7'])


def whole(day: str, n: int) -> datetime.datetime:
  return spec(day, n)['ts'].replace(microsecond=0)


def _mkdirs(folder: str, name: str) -> str:
  os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
  return folder


# pandas: dicts in object columns (to_parquet writes structs) and ArrowDtype maps.

def test_pandas_day(tmp_path, capsys):
  pd = pytest.importorskip('pandas')
  day, source = '2023-01-02', str(tmp_path / 'bucket')
  folder = os.path.join(source, f'dt={day}')
  os.makedirs(folder)
  dicts = [spec(day, 1, metric_value=1.0000005), spec(day, 2, metric_value=-2.5, user_properties=None),
           spec(day, 3, user_properties={'Tier': 'b'}, metric_value=3.25),   # other keys: null fields
           spec(day, 1, ts=spec(day, 0)['ts'], event_key='earlier duplicate', metric_value=9.0)]
  frame = pd.DataFrame(_columns(dicts))
  frame['ts'] = pd.to_datetime(frame['ts'], utc=True)
  frame.to_parquet(os.path.join(folder, 'dicts.parquet'))
  maps = [spec(day, 4, user_properties=ABSENT, metric_value=D('0.1234565')),
          spec(day, 5, user_properties=ABSENT, event_properties={}, metric_value=None)]
  arrow_map = pd.ArrowDtype(MAP)
  columns = _columns(maps)
  frame = pd.DataFrame({
      'ts': pd.to_datetime([_naive(t) for t in columns['ts']]).as_unit('us'),
      'event_key': columns['event_key'], 'insert_id': columns['insert_id'],
      'metric_value': pd.array(columns['metric_value'], dtype=pd.ArrowDtype(pa.decimal128(10, 7))),
      **{n: pd.Series([_items(m) for m in columns[n]], dtype=arrow_map)
         for n in ('identifiers', 'event_properties', 'platform_properties')}})
  frame.to_parquet(os.path.join(folder, 'maps.parquet'), index=False)
  open(os.path.join(folder, '_SUCCESS'), 'wb').close()
  assert pa.types.is_struct(pq.read_schema(os.path.join(folder, 'dicts.parquet')).field(
      'user_properties').type)
  check_day(tmp_path, source, day, {'dicts.parquet': dicts, 'maps.parquet': maps}, capsys)


# Polars: Categorical (dictionary with uint32 indices) and lists of key/value structs.

def test_polars_day(tmp_path, capsys):
  pl = pytest.importorskip('polars')
  day, source = '2023-01-03', str(tmp_path / 'bucket')
  folder = os.path.join(source, f'dt={day}')
  os.makedirs(folder)
  rows = [spec(day, 1, metric_value=0.000001), spec(day, 2, metric_value=123456.7890125),
          spec(day, 3, user_properties={}, event_properties=None, metric_value=-0.0000004),
          spec(day, 3, event_key='later duplicate', ts=spec(day, 9)['ts'], metric_value=1.0)]
  kv = pl.List(pl.Struct({'key': pl.String, 'value': pl.String}))
  columns = _columns(rows)
  frame = pl.DataFrame(
      {**{n: columns[n] for n in ('ts', 'event_key', 'insert_id', 'metric_value')},
       **{n: [_kv(m) for m in columns[n]] for n in ('identifiers', 'user_properties',
                                                    'event_properties', 'platform_properties')}},
      schema={'ts': pl.Datetime('us', 'UTC'), 'event_key': pl.Categorical,
              'insert_id': pl.Categorical, 'metric_value': pl.Float64, 'identifiers': kv,
              'user_properties': kv, 'event_properties': kv, 'platform_properties': kv})
  frame.write_parquet(os.path.join(folder, 'part-0.parquet'))
  open(os.path.join(folder, '_SUCCESS'), 'wb').close()
  assert pq.read_schema(os.path.join(folder, 'part-0.parquet')).field('event_key').type == \
      pa.dictionary(pa.uint32(), pa.string())
  check_day(tmp_path, source, day, {'part-0.parquet': rows}, capsys)


# DuckDB: COPY with MAP and TIMESTAMPTZ, partitioned by hour into sub-folders (hour=0/data_0.parquet).

def test_duckdb_day(tmp_path, capsys):
  day, source = '2023-01-04', str(tmp_path / 'bucket')
  folder = os.path.join(source, f'dt={day}')
  rows = [spec(day, 1, metric_value=D('1.2345675')), spec(day, 2, user_properties=None),
          spec(day, 3, event_properties={}, metric_value=D('-99.9999995')),
          spec(day, 3, ts=spec(day, 3)['ts'] + datetime.timedelta(hours=1), event_key='later')]
  con = duckdb.connect()
  con.execute("SET TimeZone='UTC'")
  con.execute('create table e (hour int, ts timestamptz, event_key varchar, identifiers map(varchar, '
              'varchar), insert_id varchar, metric_value decimal(18, 7), user_properties '
              'map(varchar, varchar), event_properties map(varchar, varchar), platform_properties '
              'map(varchar, varchar))')
  for r in rows:
    micros = (r['ts'] - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(microseconds=1)
    con.execute('insert into e values (?, make_timestamptz(?), ?, ?, ?, ?, ?, ?, ?)',
                [r['ts'].hour, micros, r['event_key'], r['identifiers'], r['insert_id'],
                 r['metric_value'], r['user_properties'], r['event_properties'],
                 r['platform_properties']])
  os.makedirs(source)
  con.execute(f"copy e to '{folder}' (format parquet, partition_by (hour))")
  open(os.path.join(folder, '_SUCCESS'), 'wb').close()
  names = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder)
                 for f in fs if f.endswith('.parquet'))
  assert names == ['hour=0/data_0.parquet', 'hour=1/data_0.parquet']
  files = {n: [r for r in rows if r['ts'].hour == int(n[5])] for n in names}
  check_day(tmp_path, source, day, files, capsys)


# Spark: INT96 timestamps, part-...-c000.snappy.parquet, .crc files and its own _SUCCESS, with
# sub-folders from partitionBy. Starting Spark costs about 35 s on a loaded 2-core machine and
# writing once about as much again: one session-scoped fixture writes the day once.

SPARK_DAY = '2023-01-05'


def _spark_rows():
  return [spec(SPARK_DAY, 1, metric_value=D('1.2345665')), spec(SPARK_DAY, 2, user_properties=None),
          spec(SPARK_DAY, 3, user_properties={}, metric_value=D('-123456789012.1234565')),
          spec(SPARK_DAY, 1, event_key='later duplicate',
               ts=spec(SPARK_DAY, 5)['ts'], metric_value=D('2'))]


@pytest.fixture(scope='session')
def spark_day(spark, tmp_path_factory):
  source = str(tmp_path_factory.mktemp('spark') / 'bucket')
  rows = _spark_rows()
  data = [((r['ts'] - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(microseconds=1),
           r['event_key'], r['identifiers'], r['insert_id'],
           None if r['metric_value'] is None else str(r['metric_value']),
           r['user_properties'], r['event_properties'], r['platform_properties'], i % 2)
          for i, r in enumerate(rows)]
  frame = spark.createDataFrame(data, 'micros long, event_key string, identifiers map<string,string>, '
                                'insert_id string, metric string, user_properties map<string,string>, '
                                'event_properties map<string,string>, '
                                'platform_properties map<string,string>, part int')
  frame = frame.selectExpr('timestamp_micros(micros) as ts', 'event_key', 'identifiers',
                           'insert_id', 'cast(metric as decimal(38, 18)) as metric_value',
                           'user_properties', 'event_properties', 'platform_properties', 'part')
  frame.repartition(1).write.partitionBy('part').parquet(os.path.join(source, f'dt={SPARK_DAY}'))
  return source, rows


def test_spark_day(spark_day, tmp_path, capsys):
  source, rows = spark_day
  folder = os.path.join(source, f'dt={SPARK_DAY}')
  listing = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder)
                   for f in fs)
  data = [n for n in listing if n.endswith('.snappy.parquet') and '/.' not in n]
  assert len(data) == 2 and all(n.split('/')[1].startswith('part-00000-') for n in data)
  assert '_SUCCESS' in listing and any(n.endswith('.crc') for n in listing)
  assert pq.ParquetFile(os.path.join(folder, data[0])).schema.column(0).physical_type == 'INT96'
  files = {n: [r for i, r in enumerate(rows) if i % 2 == int(n.split('/')[0][5:])] for n in data}
  check_day(tmp_path, source, SPARK_DAY, files, capsys,
            ignored=[n for n in listing if n not in data and n != '_SUCCESS'])


# A day that cannot be read whole is refused (exit 3) naming the file; nothing is published.

def test_a_stray_file_in_a_sub_folder_refuses_the_day_naming_it(tmp_path, capsys):
  day, source = '2023-01-06', str(tmp_path / 'bucket')
  folder = os.path.join(source, f'dt={day}')
  os.makedirs(os.path.join(folder, 'hour=01'))
  rows = [spec(day, 1)]
  pq.write_table(_arrow(rows, dict(ts=pa.timestamp('ms', tz='UTC'), event_key=pa.string(),
                                   identifiers=MAP, insert_id=pa.string(),
                                   metric_value=pa.decimal128(9, 2), user_properties=MAP,
                                   event_properties=MAP, platform_properties=MAP),
                        {k: _items for k in ('identifiers', 'user_properties', 'event_properties',
                                             'platform_properties')}),
                 os.path.join(folder, 'hour=01', 'part-0.parquet'))
  with open(os.path.join(folder, 'hour=01', 'events.json'), 'w') as f:
    f.write(json.dumps({'insert_id': uuid(2)}) + '\n')
  open(os.path.join(folder, '_SUCCESS'), 'wb').close()
  code, _, err = run_import(tmp_path, source, day, capsys)
  assert code == 3
  assert 'hour=01/events.json cannot be read as Parquet' in err and 'Traceback' not in err
  assert not os.path.exists(tmp_path / 'lake' / f'dt={day}')
