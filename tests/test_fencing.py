"""Fencing, in process: a commit whose lock was taken over stops at whichever step it had reached,
and the run that took over keeps its day (read back with DuckDB). tests/test_sequences.py does the
same with a real stalled process; here the takeover happens before each step of the partition
commit and of the batch ingest commit in turn."""
import collections
import datetime
import decimal

import pyarrow as pa
import pytest

from schemas.events import LAKE_SCHEMA
from tests.oracle import lake_ids
from transforms import ingest
from transforms.lake import locks
from transforms.stores import fs
from transforms.lake.commit import commit_partition, manifest_for, write_parquet
from transforms.ingest import WriteDays, WriteSettings

DT = '2023-01-01'
TS = datetime.datetime(2023, 1, 1, 12, tzinfo=datetime.timezone.utc)


def lake_rows(first: int, n: int) -> pa.Table:
  return pa.Table.from_pylist([
      {'ts': TS, 'environment': 'production', 'event_key': 'purchase', 'identifiers': [],
       'insert_id': f'00000000-0000-4000-8000-{i:012x}', 'metric_value': decimal.Decimal(i),
       'user_properties': [], 'event_properties': [], 'platform_properties': []}
      for i in range(first, first + n)], schema=LAKE_SCHEMA)


def ids(first: int, n: int) -> collections.Counter:
  return collections.Counter(f'00000000-0000-4000-8000-{i:012x}' for i in range(first, first + n))


def stage(lake: str, run: str, first: int, files: int, rows: int):
  out = []
  for i in range(files):
    name = f'part-{i:05d}-of-{files:05d}.parquet'
    out.append(write_parquet(lake_rows(first + i * rows, rows),
                             fs.join(lake, '_staging', run, name), name))
  return out


class TakenOverAt(locks.Fence):
  """Run A's real fence; just before its check number `at`, run B takes the lock over (as
  --break_lock does) and commits its own version of the day in full."""

  def __init__(self, path, run_id, at, takeover):
    super().__init__(path, run_id)
    object.__setattr__(self, 'state', {'checks': 0, 'at': at, 'takeover': takeover})

  def check(self, step, target):
    if self.state['checks'] == self.state['at']:
      self.state['takeover']()
    self.state['checks'] += 1
    super().check(step, target)


def b_takes_over(lake: str, target: str):
  def takeover():
    locks.acquire(lake, f'dt={DT}', 'run-b', 'import', break_lock='run-a')
    staged = stage(lake, 'run-b', 10_000, 2, 50)
    commit_partition(target, staged, manifest_for(staged, run_id='run-b', pipeline='t', source='s',
                                                  partition=target, schema=LAKE_SCHEMA),
                     fence=locks.Fence(locks.lock_path(lake, f'dt={DT}'), 'run-b'))
  return takeover


# 3 new files over a day of 4: delete _SUCCESS, 3 promotions, stale files, manifest, _SUCCESS.
@pytest.mark.parametrize('at', range(7))
def test_partition_commit_taken_over_before_each_step(tmp_path, at):
  lake = str(tmp_path / 'lake')
  target = fs.partition_dir(lake, DT)
  old = stage(lake, 'run-0', 0, 4, 20)     # an earlier version of the day
  commit_partition(target, old, manifest_for(old, run_id='run-0', pipeline='t', source='s',
                                             partition=target, schema=LAKE_SCHEMA))
  locks.acquire(lake, f'dt={DT}', 'run-a', 'import')
  mine = stage(lake, 'run-a', 5_000, 3, 30)
  fence = TakenOverAt(locks.lock_path(lake, f'dt={DT}'), 'run-a', at, b_takes_over(lake, target))
  with pytest.raises(locks.LockedError, match='run run-a no longer holds .*now held by run run-b'):
    commit_partition(target, mine, manifest_for(mine, run_id='run-a', pipeline='t', source='s',
                                                partition=target, schema=LAKE_SCHEMA), fence=fence)
  assert fence.state['checks'] == at + 1      # it stopped at the very step it had reached
  assert lake_ids(lake, DT) == ids(10_000, 100)
  assert fs.exists(fs.join(target, '_SUCCESS'))
  locks.release([locks.lock_path(lake, f'dt={DT}')], 'run-a')   # a taken-over run releases nothing
  assert fs.exists(locks.lock_path(lake, f'dt={DT}'))


def test_batch_ingest_commit_stops_when_its_lock_was_taken_over(tmp_path):
  lake = str(tmp_path / 'lake')
  target = fs.partition_dir(lake, DT)
  settings = WriteSettings(lake=lake, zone='UTC', run_id='run-a', allowed_lateness_ms=0,
                           flush_interval_s=None, flush_rows=10**6, max_rows_per_file=10**6,
                           batch=True, replace=True)
  writer = WriteDays(settings)
  locks.acquire(lake, f'dt={DT}', 'run-a', 'ingest')
  b_takes_over(lake, target)()
  with pytest.raises(locks.LockedError, match='run run-a no longer holds'):
    writer._write(lake_rows(5_000, 10), target, 'lake', 0)
  with pytest.raises(locks.LockedError, match='run run-a no longer holds'):
    ingest.CommitDays(settings)._commit(target, 'lake', [], LAKE_SCHEMA, replace=True)
  assert lake_ids(lake, DT) == ids(10_000, 100)
  assert fs.exists(fs.join(target, '_SUCCESS'))
