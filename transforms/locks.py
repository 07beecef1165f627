"""One run per partition at a time: a lock file per partition under ROOT/_eventferry/locks/.

Atomic on every store (storage.create_exclusive: O_EXCL on local disk and SFTP, conditional writes
on S3, GCS and Azure). A run that dies keeps its lock; the refusal says which file to delete.
"""
import datetime
import json
import socket
import sys

from transforms import storage

STATE_DIR = '_eventferry'


class LockedError(RuntimeError):
  """Another run holds the partition (or died holding it)."""


def lock_path(root: str, partition: str) -> str:
  return storage.join(root, STATE_DIR, 'locks', partition.replace('/', '__') + '.lock')


def acquire(root: str, partition: str, run_id: str, what: str) -> str:
  """Takes the lock of `partition` under `root`; `what` names the activity in the refusal, e.g.
  'import of dt=2023-01-01 into this lake'."""
  path = lock_path(root, partition)
  owner = json.dumps({'run_id': run_id, 'host': socket.gethostname(),
                      'since': datetime.datetime.now(datetime.timezone.utc).isoformat()})
  if not storage.create_exclusive(path, owner.encode()):
    holder = storage.read_bytes(path).decode(errors='replace')
    raise LockedError(f'another {what} holds {path} ({holder}). Wait for it to finish; if no '
                      f'such run is going on (it died), delete {path} and rerun.')
  return path


def release(paths: list[str]) -> None:
  """Deletes the locks; a failure is reported, not raised, so that it never hides the error that
  ended the run (the lock then stays, and the next run's refusal says which file to delete)."""
  try:
    storage.delete(paths)
  except OSError as e:
    print(f'warning: could not release {", ".join(paths)}: {e}', file=sys.stderr)
