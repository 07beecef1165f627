"""Calendar days in a time zone, for partitioning by server date.

A day is [local midnight, next local midnight) converted to UTC, so in America/New_York the day
the clocks spring forward lasts 23 hours and the day they fall back 25: `dt=` always equals the
server date in the zone. Fixed 24-hour windows cannot express that, hence these functions.
"""
import datetime
import zoneinfo

import numpy as np

__all__ = ['day_bounds', 'server_days']

_DAY = datetime.timedelta(days=1)


def day_bounds(dt: str, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
  """[start, end) of local day `dt` in epoch milliseconds."""
  day = datetime.date.fromisoformat(dt)
  start = datetime.datetime.combine(day, datetime.time(), zone)
  end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), zone)
  return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def server_days(ms: np.ndarray, zone: zoneinfo.ZoneInfo) -> tuple[list[str], np.ndarray]:
  """-> (the local dates YYYY-MM-DD spanned, index into them of each epoch-millisecond instant).
  One search over the few day boundaries instead of formatting every row."""
  if len(ms) == 0:
    return [], np.zeros(0, dtype=np.int64)
  utc_days = np.unique(ms // 86_400_000)
  candidates = sorted({datetime.date(1970, 1, 1) + datetime.timedelta(days=int(d) + k)
                       for d in utc_days for k in (-1, 0, 1)})
  days = [d.isoformat() for d in candidates]
  starts = np.array([day_bounds(d, zone)[0] for d in days], dtype=np.int64)
  index = np.searchsorted(starts, ms, side='right') - 1
  used = np.unique(index)
  return [days[i] for i in used], np.searchsorted(used, index)
