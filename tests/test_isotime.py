"""ISO 8601 text of millisecond timestamps equals the standard library's datetime, for any year
from 1 to 9999, sliced arrays, one day or many, and what the fast path leaves to strftime."""
import datetime

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.kernels.isotime import iso_millis

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
FIRST = int((datetime.datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds() * 1000)
LAST = int((datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - EPOCH).total_seconds() * 1000)
DAY = 86_400_000
START = 1_672_531_200_000   # 2023-01-01


def oracle(ms: int, quote: str = '') -> str:
  t = EPOCH + datetime.timedelta(milliseconds=ms)
  return quote + t.isoformat(timespec='milliseconds').replace('+00:00', 'Z') + quote


millis = st.one_of(st.integers(FIRST, LAST), st.integers(START, START + DAY - 1),
                   st.sampled_from([0, -1, 1, 999, -DAY, FIRST, LAST, START - 1, START + DAY]))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(millis, min_size=1, max_size=40), start=st.integers(0, 5),
       quote=st.sampled_from(['', '"']), zone=st.sampled_from(['UTC', None]))
def test_iso_text_equals_datetimes(values, start, quote, zone):
  arr = pa.array(values, pa.timestamp('ms', tz=zone)).slice(min(start, len(values) - 1))
  assert iso_millis(arr, quote).to_pylist() == [oracle(v, quote) for v in arr.cast(pa.int64()).to_pylist()]


def test_a_day_of_a_million_values():
  values = list(range(START, START + DAY, DAY // 1_000_000))
  got = iso_millis(pa.array(values, pa.timestamp('ms', tz='UTC')))
  assert len(got) == len(values)
  assert [got[i].as_py() for i in (0, 1, 123_457, len(values) - 1)] == \
      [oracle(values[i]) for i in (0, 1, 123_457, len(values) - 1)]


@pytest.mark.parametrize('arr', [
    pa.array([START, None], pa.timestamp('ms', tz='UTC')),        # a null: strftime's text
    pa.array([START * 1000], pa.timestamp('us', tz='UTC')),       # another unit
    pa.array([], pa.timestamp('ms', tz='UTC'))])
def test_what_the_fast_path_leaves_to_strftime_keeps_its_text(arr):
  expected = [None if v is None else v.strftime('%Y-%m-%dT%H:%M:%S.') + f'{v.microsecond:06d}'[
      :3 if arr.type.unit == 'ms' else 6] + 'Z' for v in arr.to_pylist()]
  assert iso_millis(arr).to_pylist() == expected
