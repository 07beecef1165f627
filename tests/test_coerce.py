"""Reading what customers produce as the contract's types (pure functions)."""
import datetime
import decimal

import pyarrow as pa
import pytest

from transforms import coerce

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
