"""Reading what customers produce as the contract's types (pure functions)."""
import datetime
import decimal

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pytest

from transforms.kernels import coerce

D = decimal.Decimal
UTC = datetime.timezone.utc


@pytest.mark.parametrize('values,type_,expected,bad,big', [
    ([D('1.2345665'), D('-1.2345665'), D('0.0000005')], pa.decimal128(30, 7),
     ['1.234567', '-1.234567', '0.000001'], [0, 0, 0], [0, 0, 0]),
    ([D('12.5'), None], pa.decimal128(5, 1), ['12.500000', None], [0, 0], [0, 0]),
    ([D('999999999999999999.999999')], pa.decimal128(24, 6),
     ['999999999999999999.999999'], [0], [0]),
    ([D('1e18')], pa.decimal128(38, 0), [None], [0], [1]),
    ([D('123456789012345678901234567890.5')], pa.decimal128(38, 1), [None], [0], [1]),
    ([1, -7, 2**62], pa.int64(), ['1.000000', '-7.000000', None], [0, 0, 0], [0, 0, 1]),
    ([0.1, float('nan'), float('inf'), -float('inf'), 1e19, 2.5e-7], pa.float64(),
     ['0.100000', None, None, None, None, '0.000000'], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]),
    (['1.5', ' 3 ', '1e3', 'abc', 'NaN', '1.0000005', None], pa.string(),
     ['1.500000', '3.000000', '1000.000000', None, None, '1.000001', None],
     [0, 0, 0, 1, 1, 0, 0], [0] * 7),
])
def test_metric_rounding_and_rejection(values, type_, expected, bad, big):
  out, invalid, too_big, _ = coerce.to_metric(pa.array(values, type_))
  assert out.type == pa.decimal128(24, 6)
  assert [None if v is None else str(v) for v in out.to_pylist()] == expected
  assert invalid.tolist() == [bool(b) for b in bad]
  assert too_big.tolist() == [bool(b) for b in big]


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(st.decimals(allow_nan=False, allow_infinity=False).map(str)
                           | st.sampled_from(['1e400', '-1E999', '1e18', '999999999999999999.9999995',
                                              '999999999999999999.9999994', '1E-400']), min_size=1, max_size=8))
def test_numeric_text_of_any_size_is_rounded_or_out_of_range_by_the_decimal_module(texts):
  """Text metrics (a string column in a customer's Parquet) against Python's decimal module."""
  def model(text: str) -> decimal.Decimal | None:
    value = D(text).quantize(D('0.000001'), decimal.ROUND_HALF_UP, decimal.Context(prec=2000))
    return None if abs(value) >= 10 ** 18 else value
  out, invalid, too_big, _ = coerce.to_metric(pa.array(texts, pa.string()))
  want = [model(t) for t in texts]
  assert out.to_pylist() == want
  assert too_big.tolist() == [w is None for w in want] and not invalid.any()


def test_metric_that_fits_is_never_changed():
  values = [D('0'), D('-0.000001'), D('123.456789'), D('-999999999999999999.999999')]
  out, *_ = coerce.to_metric(pa.array(values, pa.decimal128(24, 6)))
  assert out.to_pylist() == values


@pytest.mark.parametrize('unit', ['s', 'ms', 'us', 'ns'])
@pytest.mark.parametrize('tz', [None, 'UTC', 'Asia/Seoul'])
def test_timestamps_any_unit_and_zone_become_utc_millis(unit, tz):
  instant = datetime.datetime(2023, 1, 1, 0, 1, 2, 333999, tzinfo=UTC)
  ns = int(instant.timestamp()) * 10**9 + 333_999_000
  per = {'s': 10**9, 'ms': 10**6, 'us': 10**3, 'ns': 1}[unit]
  arr = pa.array([ns // per, None], pa.int64()).cast(pa.timestamp(unit, tz=tz))
  out, bad = coerce.to_timestamp(arr)
  expected_ms = (ns // per) * per // 10**6
  assert out.type == pa.timestamp('ms', tz='UTC')
  assert out.cast(pa.int64()).to_pylist() == [expected_ms, None]
  assert not bad.any()


def test_timestamps_before_1970_floor_to_the_millisecond():
  arr = pa.array([-1], pa.int64()).cast(pa.timestamp('us'))   # 1969-12-31 23:59:59.999999
  out, _ = coerce.to_timestamp(arr)
  assert out.cast(pa.int64()).to_pylist() == [-1]


def test_iso_text_timestamps_and_garbage():
  out, bad = coerce.to_timestamp(pa.array(['2023-01-01T00:01:02.333Z',
                                           '2023-01-01 09:01:02.333+09:00', 'garbage', None]))
  assert out.to_pylist()[:2] == [datetime.datetime(2023, 1, 1, 0, 1, 2, 333000, tzinfo=UTC)] * 2
  assert bad.tolist() == [False, False, True, False]


def test_map_from_json_text_and_bigquery_key_value_structs():
  text = pa.array(['{"Id": "a", "n": 1, "nested": {"x": [1]}}', '[1]', 'not json', None, ''])
  out, bad, _ = coerce.to_map(text, 'identifiers')
  assert out.to_pylist()[0] == [('Id', 'a'), ('n', '1'), ('nested', '{"x": [1]}')]
  assert bad.tolist() == [False, True, True, False, False]
  kv = pa.array([[{'key': 'a', 'value': 'b'}], None],
                pa.list_(pa.struct([('key', pa.string()), ('value', pa.string())])))
  out, bad, _ = coerce.to_map(kv, 'user_properties')
  assert out.to_pylist() == [[('a', 'b')], []]


def test_map_values_of_other_scalar_types_become_text():
  m = pa.array([[('a', 1)]], pa.map_(pa.string(), pa.int64()))
  assert coerce.to_map(m, 'x')[0].to_pylist() == [[('a', '1')]]


@pytest.mark.parametrize('func,arr', [
    (coerce.to_timestamp, pa.array([1.5], pa.float64())),
    (coerce.to_metric, pa.array([True])),
    (lambda a: coerce.to_map(a, 'identifiers'), pa.array([[1]])),
    (lambda a: coerce.to_map(a, 'identifiers'), pa.array([{'a': {'b': 'c'}}])),
    (lambda a: coerce.to_string(a, 'event_key'), pa.array([1])),
])
def test_unreadable_column_types_name_what_was_found(func, arr):
  with pytest.raises(coerce.ContractError) as e:
    func(arr)
  assert str(arr.type) in str(e.value) and 'expected' in str(e.value)


def _half_up(text: str) -> decimal.Decimal:
  return D(text).quantize(D('0.000001'), rounding=decimal.ROUND_HALF_UP)


_FEW_DECIMALS = st.decimals(min_value=-10**12, max_value=10**12, places=6).map(float)   # prices


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.floats(min_value=-1e17, max_value=1e17, allow_nan=False)
                           | _FEW_DECIMALS, max_size=40))
def test_floats_round_half_up_from_their_shortest_decimal_text(values):
  """The oracle is Python's repr (the shortest text that reads back as the float; Polars and
  DuckDB print the same) and the decimal module, not the project's code."""
  out, invalid, big, rounded = coerce.to_metric(pa.array(values, pa.float64()))
  expected = [_half_up(repr(v)) for v in values]
  assert out.to_pylist() == expected
  assert rounded.tolist() == [e != D(repr(v)) for e, v in zip(expected, values)]
  assert not invalid.any() and not big.any()


def test_float_rounding_examples_of_the_readme():
  out, *_ = coerce.to_metric(pa.array([1.2345665, -1.2345665, 0.1 + 0.2, 2.675, 5e-7, 4.9e-7]))
  assert [str(v) for v in out.to_pylist()] == ['1.234567', '-1.234567', '0.300000', '2.675000',
                                               '0.000001', '0.000000']


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=40))
def test_float32_rounds_from_the_float32_shortest_text(values):
  out, _, big, _ = coerce.to_metric(pa.array(values, pa.float32()))
  texts = [str(np.float32(v)) for v in values]   # numpy prints a float32's shortest text
  expected = [None if abs(D(t)) >= 10**18 else _half_up(t) for t in texts]
  assert out.to_pylist() == expected
  assert big.tolist() == [e is None for e in expected]


@pytest.mark.parametrize('index', [pa.int8(), pa.int32(), pa.uint8(), pa.uint32(), pa.int64(),
                                   pa.uint64()])
def test_dictionary_text_of_any_index_type(index):
  words = pa.array(['Purchase', None, 'Purchase', 'view'])
  arr = words.cast(pa.dictionary(index, pa.string()))
  assert coerce.to_string(arr, 'event_key').to_pylist() == words.to_pylist()
  out, _, _ = coerce.to_map(pa.array([[('k', 'v')], None], pa.map_(
      pa.string(), pa.dictionary(index, pa.string()))), 'user_properties')
  assert out.to_pylist() == [[('k', 'v')], []]


def test_struct_of_scalars_is_a_map_without_its_null_fields():
  """What pyarrow and pandas write for Python dicts: one struct field per key seen in any row."""
  rows = [{'Grade': 'GOLD', 'n': None}, None, {'Grade': None, 'n': None}, {'Grade': 'x', 'n': 3}]
  arr = pa.array(rows, pa.struct([('Grade', pa.string()), ('n', pa.int64())]))
  out, bad, unreadable = coerce.to_map(arr, 'user_properties')
  assert out.to_pylist() == [[('Grade', 'GOLD')], [], [], [('Grade', 'x'), ('n', '3')]]
  assert not bad.any() and not unreadable.any()
  sliced, _, _ = coerce.to_map(arr.slice(2), 'user_properties')
  assert sliced.to_pylist() == [[], [('Grade', 'x'), ('n', '3')]]


def test_struct_with_nested_fields_is_refused_saying_how_to_write_maps_from_pandas():
  arr = pa.array([{'a': {'b': 'c'}}])
  with pytest.raises(coerce.ContractError, match=r'pa\.map_\(pa\.string\(\), pa\.string\(\)\)'):
    coerce.to_map(arr, 'event_properties')


def test_integer_ts_is_epoch_millis_and_beyond_year_9999_is_invalid():
  arr = pa.array([1672531262333, -1, None, 253_402_300_800_000, 2**63 - 1], pa.int64())
  out, bad = coerce.to_timestamp(arr)
  assert out.to_pylist()[:3] == [datetime.datetime(2023, 1, 1, 0, 1, 2, 333000, tzinfo=UTC),
                                 datetime.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                                 None]
  assert bad.tolist() == [False, False, False, True, True]
  out, bad = coerce.to_timestamp(pa.array([1672531262333, 2**64 - 1], pa.uint64()))
  assert out.cast(pa.int64()).to_pylist() == [1672531262333, None] and bad.tolist() == [False, True]
