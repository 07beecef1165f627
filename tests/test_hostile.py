"""Hostile input corpus: every case has one defined outcome, and the accounting holds.

Each case builds a customer day in a fresh bucket (made here, no binary blobs), runs the real
import command in-process and expects one of:
  refused   exit 3; stderr names the file (or the marker) and says what to do; no lake day
  imported  exit 0; rejected rows by reason and flags exactly as listed
and, whenever rows were read, rows_in = written + rejected + duplicate = the rows in the files.
Hostile event names in export paths: tests/test_export_e2e.py (hostile_event_names).
"""
import datetime
import decimal
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import import_events, options
from tests.conftest import SCHEMA, event, table, uuid, write_file
from transforms.stores import fs

pytestmark = pytest.mark.engine

UTC = datetime.timezone.utc


def _invalid_utf8(n: int, type_=pa.string()) -> pa.Array:
  return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(
      np.arange(0, 3 * (n + 1), 3, dtype=np.int32).tobytes()), pa.py_buffer(b'\xff\xfe!' * n)])


def _with_column(t: pa.Table, name: str, values: pa.Array) -> pa.Table:
  return t.set_column(t.schema.get_field_index(name), name, values)


def _retyped(name: str, type_: pa.DataType) -> pa.Schema:
  return SCHEMA.set(SCHEMA.get_field_index(name), pa.field(name, type_))


# Builders: (day folder) -> rows in the data files. They write their own _SUCCESS or not.

def truncated(d):
  write_file(f'{d}/a.parquet', table([event(1), event(2)]))
  data = open(f'{d}/a.parquet', 'rb').read()
  fs.write_bytes(f'{d}/a.parquet', data[:len(data) // 2])


def corrupt_pages(d):
  """A readable footer over garbage pages: only reading the rows finds out."""
  write_file(f'{d}/a.parquet', table([event(i) for i in range(50)]), compression='zstd')
  data = bytearray(open(f'{d}/a.parquet', 'rb').read())
  data[4:400] = b'\xff' * 396
  fs.write_bytes(f'{d}/a.parquet', bytes(data))


def zero_bytes(d):
  write_file(f'{d}/a.parquet', table([event(1)]))
  fs.write_bytes(f'{d}/b.parquet', b'')


def success_only(d):
  return 0


def side_files(d):
  write_file(f'{d}/part-0.parquet', table([event(1), event(2)]))
  for name in ('.part-0.parquet.crc', '_committed_123', '_started_123', '.DS_Store'):
    fs.write_bytes(f'{d}/{name}', b'junk')
  return 2


def missing_column(d):
  write_file(f'{d}/a.parquet', table([event(1)]).drop_columns(['insert_id']))


def extra_column(d):
  t = table([event(1), event(2)])
  write_file(f'{d}/a.parquet', t.append_column('surprise', pa.array([1, 2])))
  return 2


def mistyped_column(d):
  write_file(f'{d}/a.parquet', table([event(1, ts=5.5)], _retyped('ts', pa.float64())))


def metric_as_bad_text(d):
  write_file(f'{d}/a.parquet', table([event(1, metric_value='2.5'), event(2, metric_value='abc')],
                                     _retyped('metric_value', pa.string())))
  return 2


def invalid_utf8_string(d):
  t = table([event(1), event(2)])
  bad = pa.concat_arrays([t['event_key'].chunk(0).slice(0, 1), _invalid_utf8(1)])
  write_file(f'{d}/a.parquet', _with_column(t, 'event_key', bad))
  return 2


def invalid_utf8_binary(d):
  """A binary column (as some writers type text) with bytes that are not UTF-8."""
  t = table([event(1), event(2)])
  good = t['insert_id'].chunk(0).slice(0, 1).cast(pa.binary())
  write_file(f'{d}/a.parquet', _with_column(t, 'insert_id', pa.concat_arrays(
      [good, _invalid_utf8(1, pa.binary())])))
  return 2


def nul_bytes(d):
  write_file(f'{d}/a.parquet', table([event(1, event_key='nul\x00key',
                                            event_properties=[('k\x00', 'v\x00v')])]))
  return 1


def huge_map(d):
  write_file(f'{d}/a.parquet', table([event(1, event_properties=[(f'k{i}', 'v')
                                                                 for i in range(10_000)])]))
  return 1


def huge_value(d):
  write_file(f'{d}/a.parquet', table([event(1, user_properties=[('big', 'x' * (1 << 20))])]))
  return 1


def keys_differing_by_case(d):
  write_file(f'{d}/a.parquet', table([event(1, user_properties=[('Grade', 'A'), ('GRADE', 'B'),
                                                                ('grade', 'C')])]))
  return 1


def extreme_timestamps(d):
  write_file(f'{d}/a.parquet', table([
      event(1, ts=datetime.datetime(1, 1, 1, tzinfo=UTC)),
      event(2, ts=datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))]))
  return 2


def bad_floats(d):
  values = [-5.5, float('nan'), float('inf'), -float('inf')]
  write_file(f'{d}/a.parquet', table([event(i, metric_value=v) for i, v in enumerate(values)],
                                     _retyped('metric_value', pa.float64())))
  return 4


def duplicates_across_files(d):
  write_file(f'{d}/a.parquet', table([event(1), event(2)]))
  write_file(f'{d}/b.parquet', table([event(2, insert_id=uuid(2).upper()), event(3)]))
  return 4


REFUSED, IMPORTED = 'refused', 'imported'
CASES = [
    # builder, _SUCCESS written, outcome, stderr words or {reason: n}, {flag: n}, duplicates
    (truncated, True, REFUSED, ['a.parquet', 'cannot be read as Parquet', 'Rewrite the file']),
    (corrupt_pages, True, REFUSED, ['a.parquet', 'cannot be read', 'Rewrite the file']),
    (zero_bytes, True, REFUSED, ['b.parquet is empty (0 bytes)', 'Remove it or rewrite it']),
    (success_only, True, IMPORTED, {}, {}, 0),
    (side_files, False, REFUSED, ['_SUCCESS does not exist', '--wait_for_success']),
    (side_files, True, IMPORTED, {}, {}, 0),
    (missing_column, True, REFUSED, ['a.parquet', "column 'insert_id'", 'missing',
                                     './run.sh schema import']),
    (extra_column, True, IMPORTED, {}, {}, 0),
    (mistyped_column, True, REFUSED, ['a.parquet', "column 'ts' is double", 'epoch milliseconds']),
    (metric_as_bad_text, True, IMPORTED, {'invalid_metric_value': 1}, {}, 0),
    (invalid_utf8_string, True, IMPORTED, {'invalid_text': 1}, {}, 0),
    (invalid_utf8_binary, True, IMPORTED, {'invalid_text': 1}, {}, 0),
    (nul_bytes, True, IMPORTED, {}, {}, 0),
    (huge_map, True, IMPORTED, {}, {}, 0),
    (huge_value, True, IMPORTED, {}, {}, 0),
    (keys_differing_by_case, True, IMPORTED, {}, {'map_key_collision': 2}, 0),
    (extreme_timestamps, True, IMPORTED, {}, {'ts_outside_day': 2}, 0),
    (bad_floats, True, IMPORTED, {'invalid_metric_value': 3}, {}, 0),
    (duplicates_across_files, True, IMPORTED, {}, {}, 1),
]


def _id(case):
  return case[0].__name__ + ('' if case[1] else '_without_success')


@pytest.mark.parametrize('case', CASES, ids=_id)
def test_hostile_input_has_its_defined_outcome(case, tmp_path, capsys):
  builder, success, outcome, *expected = case
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  day = os.path.join(bucket, 'dt=2023-01-01')
  os.makedirs(day)
  rows = builder(day)
  if success:
    fs.write_bytes(os.path.join(day, '_SUCCESS'), b'')
  code = options.main_guard(import_events.run, [
      '--source', bucket, '--date', '2023-01-01', '--lake', lake, '--max_rejected_ratio', '1',
      '--report', str(tmp_path / 'report.json')])
  err = capsys.readouterr().err
  if outcome == REFUSED:
    assert code == 3, err
    for words in expected[0]:
      assert words in err
    assert not os.path.exists(os.path.join(lake, 'dt=2023-01-01', '_SUCCESS'))
    return
  reasons, flags, duplicates = expected
  assert code == 0, err
  report = json.load(open(tmp_path / 'report.json'))
  d = report['days'][0]
  assert d['status'] == 'published'
  assert d['rows_in'] == rows == sum(
      pq.ParquetFile(os.path.join(day, n)).metadata.num_rows for n in os.listdir(day)
      if n.endswith('.parquet'))
  assert d['rows_in'] == d['rows_written'] + d['rows_rejected'] + d['rows_duplicate']
  assert d['rejected_by_reason'] == reasons and d['rows_duplicate'] == duplicates
  assert {k: v for k, v in d['flags'].items() if k in flags} == flags
  written = pq.read_table(os.path.join(lake, 'dt=2023-01-01')).num_rows
  rejected = pq.read_table(os.path.join(lake, '_rejected', 'dt=2023-01-01')).num_rows
  assert (written, rejected) == (d['rows_written'], d['rows_rejected'])


def test_extreme_values_survive_the_import_exactly(tmp_path, capsys):
  """What the kept cases hold reaches the lake unchanged (no truncation of keys or values)."""
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  day = os.path.join(bucket, 'dt=2023-01-01')
  rows = [event(1, event_key='nul\x00key', user_properties=[('big', 'x' * (1 << 20))]),
          event(2, event_properties=[(f'k{i}', 'v') for i in range(10_000)]),
          event(3, ts=datetime.datetime(1, 1, 1, tzinfo=UTC)),
          event(4, ts=datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                metric_value=decimal.Decimal('-5.5'))]
  write_file(f'{day}/a.parquet', table(rows))
  fs.write_bytes(f'{day}/_SUCCESS', b'')
  assert options.main_guard(import_events.run, ['--source', bucket, '--date', '2023-01-01',
                                                '--lake', lake]) == 0
  got = pq.read_table(os.path.join(lake, 'dt=2023-01-01')).sort_by('insert_id').to_pylist()
  assert got[0]['event_key'] == 'nul\x00key' and dict(got[0]['user_properties'])['big'] == 'x' * (1 << 20)
  assert len(got[1]['event_properties']) == 10_000
  assert got[2]['ts'] == datetime.datetime(1, 1, 1, tzinfo=UTC)
  assert got[3]['ts'].year == 9999 and got[3]['metric_value'] == decimal.Decimal('-5.5')
