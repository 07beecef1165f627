"""UTC millisecond timestamps as ISO 8601 text (2023-01-01T00:01:02.333Z), vectorized.

Arrow's strftime formats every value on its own, about 2 s per million on one core, most of a
CSV export's encoding. Here each distinct day is formatted once by that same strftime and the
time of day is written as digits with numpy, into one buffer of fixed-width values: the same
text, at about a fiftieth of the cost. Values it does not cover (nulls, other units or zones,
years strftime does not write with four digits) go through strftime as before.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['MS_PER_DAY', 'iso_millis']

MS_PER_DAY = 86_400_000
_DATE = 10                 # YYYY-MM-DD
_DAYS_AT_ONCE = 100_000    # a wider span of days is formatted per distinct day instead


def _digits(count: int, width: int) -> np.ndarray:
  """Rows of `width` ASCII digits for 0..count-1."""
  n = np.arange(count)
  return np.stack([n // 10 ** (width - 1 - i) % 10 + ord('0') for i in range(width)], 1).astype(np.uint8)


_SECOND = np.arange(86_400)
# "HH:MM:SS" of each second of a day, and "mmm" of each millisecond
_CLOCK = np.concatenate([_digits(24, 2)[_SECOND // 3600], np.full((86_400, 1), ord(':'), np.uint8),
                         _digits(60, 2)[_SECOND // 60 % 60], np.full((86_400, 1), ord(':'), np.uint8),
                         _digits(60, 2)[_SECOND % 60]], 1)
_MILLIS = _digits(1000, 3)


def _by_strftime(ts: pa.Array, quote: str) -> pa.Array:
  text = pc.strftime(ts, format='%Y-%m-%dT%H:%M:%S')   # %S carries the milliseconds
  return pc.binary_join_element_wise(quote, text, 'Z' + quote, '')


def _day_texts(days: np.ndarray) -> np.ndarray | None:
  """YYYY-MM-DD of each day number as rows of 10 bytes (Arrow's strftime), or None when some
  year is not written with four digits."""
  stamps = pa.array(days * MS_PER_DAY, pa.timestamp('ms', tz='UTC'))
  text = pc.strftime(stamps, format='%Y-%m-%d')
  offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]
  if offsets[-1] - offsets[0] != _DATE * len(text):
    return None
  data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
  return data.reshape(len(text), _DATE)


def iso_millis(ts: pa.Array, quote: str = '') -> pa.Array:
  """Each timestamp as 2023-01-01T00:01:02.333Z (UTC, milliseconds), between `quote`s."""
  unit, zone = ts.type.unit, ts.type.tz
  if not len(ts) or ts.null_count or unit != 'ms' or zone not in (None, 'UTC', '+00:00'):
    return _by_strftime(ts, quote)
  ms = np.asarray(ts.view(pa.int64()))
  day, of_day = np.divmod(ms, MS_PER_DAY)
  first, last = int(day.min()), int(day.max())
  if last - first < _DAYS_AT_ONCE:
    days, which = np.arange(first, last + 1), day - first
  else:
    days, which = np.unique(day, return_inverse=True)
  dates = _day_texts(days)
  q = len(quote.encode())
  width = q + _DATE + 14 + q   # "T00:01:02.333Z"
  if dates is None or len(ts) * width >= 2**31:
    return _by_strftime(ts, quote)
  out = np.empty((len(ts), width), dtype=np.uint8)
  if q:
    out[:, :q] = out[:, width - q:] = np.frombuffer(quote.encode(), dtype=np.uint8)
  out[:, q:q + _DATE] = dates[which]
  second, milli = np.divmod(of_day, 1000)
  at = q + _DATE
  out[:, at] = ord('T')
  out[:, at + 1:at + 9] = _CLOCK[second]
  out[:, at + 9] = ord('.')
  out[:, at + 10:at + 13] = _MILLIS[milli]
  out[:, at + 13] = ord('Z')
  offsets = np.arange(0, (len(ts) + 1) * width, width, dtype=np.int32)
  return pa.StringArray.from_buffers(len(ts), pa.py_buffer(offsets), pa.py_buffer(out))
