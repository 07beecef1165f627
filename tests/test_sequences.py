"""Usage sequences as operators run them (real subprocesses), each checked with the "no row lost"
oracle (tests/oracle.py): every row that should be in the lake is there exactly once, read back
with DuckDB, and nothing outside a published day is left behind. SIGKILL at each commit stage is
in test_crash_rerun.py (which uses the same oracle)."""
import datetime
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import samples
from tests.conftest import ROOT, run_cli
from tests.oracle import assert_lake, source_ids
from transforms.lake.commit import STOP_AT

pytestmark = pytest.mark.process

DAY = datetime.date(2023, 1, 1)


def rows(day: datetime.date, n: int, seed: int):
  """Valid, distinct events (the oracle counts every one of them)."""
  return samples.events(day, n, seed=seed, invalid=0, duplicates=0)


def import_args(bucket: str, lake: str, day: datetime.date = DAY, *flags: str) -> list[str]:
  return ['pipelines.import_events', '--source', bucket, '--lake', lake, '--date', str(day),
          *flags]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-m', *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def is_stopped(proc: subprocess.Popen) -> bool:
  try:
    with open(f'/proc/{proc.pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] == 'T'
  except FileNotFoundError:
    return False


def wait_stopped_or_done(proc: subprocess.Popen, seconds: float = 300) -> bool:
  """True once `proc` stopped itself (STOP_AT), False if it exited first."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if is_stopped(proc):
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.2)
  proc.kill()
  raise AssertionError('the run neither stopped nor finished')


def wait_one_stopped(procs: list[subprocess.Popen], seconds: float = 300) -> subprocess.Popen | None:
  """The first of `procs` to stop itself (STOP_AT), or None if all exited first."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    for p in procs:
      if is_stopped(p):
        return p
    if all(p.poll() is not None for p in procs):
      return None
    time.sleep(0.2)
  for p in procs:
    p.kill()
  raise AssertionError('no run stopped or finished')


@pytest.mark.parametrize('stage', ['staged', 'promoting'])
def test_stalled_run_taken_over_cannot_commit_over_the_newer_run(tmp_path, stage):
  """Run A stalls inside its commit; run B takes over A's lock (--break_lock) and publishes a new
  delivery of the day; then A wakes up: it must stop with exit 4, leaving B's day intact."""
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  samples.write_day(bucket, DAY, rows(DAY, 3000, seed=1), files=2)
  a = start(import_args(bucket, lake, DAY, '--shards', '3', '--run_id', 'run-a'),
            env={STOP_AT: f'{stage}:lake/dt=2023-01-01'})
  try:
    assert wait_stopped_or_done(a), a.communicate()
    newer = rows(DAY, 2500, seed=2)             # the customer re-delivered the day
    samples.write_day(bucket, DAY, newer, files=2)
    b = run_cli(*import_args(bucket, lake, DAY, '--shards', '3', '--break_lock', 'run-a'))
    assert 'took over' in b.stderr
  finally:
    os.kill(a.pid, signal.SIGCONT)
  _, err = a.communicate(timeout=300)
  assert a.returncode == 4, err
  assert 'run run-a no longer holds' in err and 'Traceback' not in err, err
  assert_lake(lake, {str(DAY): source_ids(newer)})


def test_two_imports_of_one_day_at_once_one_refuses(tmp_path):
  """Started together: whichever takes the day's lock first publishes; the other exits 4 and
  names the lock. Both pause inside their commit, so the one that took the lock holds it until
  the other has exited, however the machine schedules them."""
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  table = rows(DAY, 2000, seed=3)
  samples.write_day(bucket, DAY, table, files=2)
  runs = [start(import_args(bucket, lake), env={STOP_AT: 'staged:lake/dt=2023-01-01'})
          for _ in range(2)]
  try:
    holder = wait_one_stopped(runs)
    for p in runs:
      if p is not holder:
        p.wait(300)                             # it must refuse while the lock is held
  finally:
    for p in runs:
      if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
  outs = {}
  for p in runs:
    _, err = p.communicate(timeout=300)
    outs[p.returncode] = err
  assert sorted(outs) == [0, 4], outs
  assert 'dt=2023-01-01.lock' in outs[4] and 'Traceback' not in outs[4]
  assert_lake(lake, {str(DAY): source_ids(table)})


def test_several_days_imported_in_one_minute(tmp_path):
  """A cron that fired late starts one import per day at once: each day is its own lock, all
  publish, each holds its own rows once."""
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  days = [DAY + datetime.timedelta(days=i) for i in range(3)]
  tables = {d: rows(d, 1500, seed=10 + i) for i, d in enumerate(days)}
  for d, t in tables.items():
    samples.write_day(bucket, d, t, files=2)
  procs = [start(import_args(bucket, lake, d)) for d in days]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
  assert_lake(lake, {str(d): source_ids(t) for d, t in tables.items()})


def test_import_reruns(tmp_path):
  """Reruns of an unchanged source and after a new delivery, with other file and shard counts: the
  day always holds the latest delivery's rows once each."""
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  first = rows(DAY, 2000, seed=4)
  samples.write_day(bucket, DAY, first, files=3)
  run_cli(*import_args(bucket, lake, DAY, '--shards', '4'))
  run_cli(*import_args(bucket, lake, DAY, '--shards', '2'))     # unchanged source, fewer shards
  assert_lake(lake, {str(DAY): source_ids(first)})
  second = rows(DAY, 1200, seed=5)
  for f in os.listdir(os.path.join(bucket, f'dt={DAY}')):
    os.remove(os.path.join(bucket, f'dt={DAY}', f))
  samples.write_day(bucket, DAY, second, files=1)
  run_cli(*import_args(bucket, lake, DAY, '--shards', '2'))
  assert_lake(lake, {str(DAY): source_ids(second)})
