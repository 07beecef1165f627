"""One run per partition at a time: a lock file per partition under ROOT/_eventferry/locks/.

Atomic on every store (fs.create_exclusive: O_EXCL on local disk and SFTP, conditional writes
on S3, GCS and Azure). A run that dies keeps its lock: no store can tell a dead run from a slow one
on another machine. The refusal names the holder (and, on the holder's own host, whether its
process still lives); --break_lock RUN_ID then takes over that run's locks and nobody else's.

A run taken over that is in fact still alive (a stalled VM, a zombie bundle) must not commit over
the newer run: every commit step that changes a partition first checks, with one small GET, that
the lock still names its run (Fence), and stops without touching the partition if not.
"""
import dataclasses
import datetime
import json
import os
import socket
import sys
import time
import typing

from transforms.lake.names import LOCK_SUFFIX, LOCKS_DIR, STATE_DIR
from transforms.stores import fs

__all__ = ['LockedError', 'lock_path', 'acquire', 'acquire_all', 'Fence', 'release']


class LockedError(RuntimeError):
  """Another run holds the partition (or died holding it)."""


def lock_path(root: str, partition: str) -> str:
  return fs.join(root, STATE_DIR, LOCKS_DIR, partition.replace('/', '__') + LOCK_SUFFIX)


def acquire(root: str, partition: str, run_id: str, what: str,
            break_lock: str | typing.Collection[str | None] | None = None, wait: float = 0) -> str:
  """Takes the lock of `partition` under `root`; `what` names the activity in the refusal, e.g.
  'import of dt=2023-01-01 into this lake'. A lock held by run `break_lock` (or by one of them)
  is taken over. With `wait`, a lock held by a run that may still finish is waited for, up to
  `wait` seconds, before the refusal."""
  path = lock_path(root, partition)
  owner = json.dumps({'run_id': run_id, 'host': socket.gethostname(), 'pid': os.getpid(),
                      'since': datetime.datetime.now(datetime.timezone.utc).isoformat()}).encode()
  runs = {break_lock} if isinstance(break_lock, str) else set(break_lock or ())
  deadline, told = time.monotonic() + wait, False
  while True:
    if fs.create_exclusive(path, owner):
      return path
    holder = _holder(path)
    if holder.get('run_id') in runs - {None}:
      fs.delete([path])
      if fs.create_exclusive(path, owner):
        print(f'warning: took over {path} from run {holder["run_id"]}', file=sys.stderr)
        return path
      holder = _holder(path)
    if time.monotonic() >= deadline or _died(holder):
      raise LockedError(f'another {what} holds {path}: {_describe(holder)}. Wait for it to '
                        'finish; if it died, rerun with --break_lock '
                        f'{holder.get("run_id", "RUN_ID")}.')
    if not told:
      print(f'waiting up to {wait:.0f} s for {path}: {_describe(holder)}', file=sys.stderr)
      told = True
    time.sleep(0.5)


def acquire_all(root: str, partitions: typing.Iterable[str], run_id: str, what: str,
                break_lock: str | None = None) -> list[str]:
  """Takes the lock of every partition, or of none (LockedError names the held one); `what` is a
  format with {} for the partition, e.g. 'import of {} into this lake'."""
  held: list[str] = []
  try:
    for partition in partitions:
      held.append(acquire(root, partition, run_id, what.format(partition), break_lock))
  except LockedError:
    release(held, run_id)
    raise
  return held


@dataclasses.dataclass(frozen=True)
class Fence:
  """The lock a commit must still hold: `check` before each step that changes the partition."""
  path: str
  run_id: str

  def check(self, step: str, target: str) -> None:
    holder = _holder(self.path)
    if holder.get('run_id') != self.run_id:
      raise LockedError(
          f'run {self.run_id} no longer holds {self.path} ('
          + (f'now held by {_describe(holder)}' if holder else 'the lock is gone')
          + f'): it was taken over, so this run stopped before {step} and changes nothing more '
          f'in {target}. Nothing to do if the other run publishes it; otherwise rerun.')


def _holder(path: str) -> dict:
  try:
    holder = json.loads(fs.read_bytes(path))
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}


def _describe(holder: dict) -> str:
  """Who holds a lock, and whether that process still lives when it ran on this host."""
  if not holder:
    return 'unreadable lock'
  text = f'run {holder.get("run_id")} on host {holder.get("host")} since {holder.get("since")}'
  if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
    alive = _alive(holder['pid'])
    text += f', pid {holder["pid"]}, ' + ('still running' if alive else 'no longer running: it died')
  return text


def _died(holder: dict) -> bool:
  """Whether the holder ran on this host and its process is gone (then waiting is pointless)."""
  return (holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int)
          and not _alive(holder['pid']))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def release(paths: list[str], run_id: str | None = None) -> None:
  """Deletes the locks (with `run_id`, only those that still name that run: a run taken over
  never releases the lock of the run that took over); a failure is reported, not raised, so that
  it never hides the error that ended the run (the lock then stays, and the next run's refusal
  says which file to delete)."""
  if run_id is not None:
    paths = [p for p in paths if _holder(p).get('run_id') == run_id]
  try:
    fs.delete(paths)
  except OSError as e:
    print(f'warning: could not release {", ".join(paths)}: {e}', file=sys.stderr)
