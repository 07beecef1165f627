"""Export state kept at the destination (or --state), never in process memory: which lake commit
of each day was exported last, and a lock per day being exported.

Like the Snowflake/dbt recipe's export-history table: `--since_last_export` exports a day only when
its lake commit (the import run that last replaced it) is newer than the one exported before.
"""
import datetime
import json
import socket

from transforms import storage

STATE_DIR = '_eventferry'
HISTORY = 'export_history.json'


class LockedError(RuntimeError):
  """Another export of the same day to the same destination is running (or died holding it)."""


def _dir(state_root: str) -> str:
  return storage.join(state_root, STATE_DIR)


def load(state_root: str) -> dict:
  path = storage.join(_dir(state_root), HISTORY)
  return json.loads(storage.read_bytes(path)) if storage.exists(path) else {}


def record(state_root: str, exported: dict[str, dict]) -> None:
  """Adds {dt: {lake_run_id, lake_committed_at, export_run_id, exported_at}} to the history."""
  history = load(state_root)
  history.update(exported)
  storage.write_bytes(storage.join(_dir(state_root), HISTORY),
                      json.dumps(dict(sorted(history.items())), indent=2).encode())


def changed_since_export(history: dict, dt: str, lake_manifest: dict) -> bool:
  last = history.get(dt)
  return last is None or last['lake_committed_at'] < lake_manifest['committed_at']


def lock_path(state_root: str, partition: str) -> str:
  return storage.join(_dir(state_root), 'locks', partition.replace('/', '__') + '.lock')


def acquire(state_root: str, partition: str, run_id: str) -> str:
  path = lock_path(state_root, partition)
  owner = json.dumps({'run_id': run_id, 'host': socket.gethostname(),
                      'since': datetime.datetime.now(datetime.timezone.utc).isoformat()})
  if not storage.create_exclusive(path, owner.encode()):
    holder = storage.read_bytes(path).decode(errors='replace')
    raise LockedError(f'another export of {partition} to this destination holds {path} '
                      f'({holder}). Wait for it to finish; if no export is running (it died), '
                      f'delete {path} and rerun.')
  return path


def release(paths: list[str]) -> None:
  storage.delete(paths)
