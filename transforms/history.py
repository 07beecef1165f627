"""Export state kept at the destination (or --state), never in process memory: which lake commit
of each day was exported last.

Like the Snowflake/dbt recipe's export-history table: `--since_last_export` exports a day only when
its lake commit (the import run that last replaced it) is newer than the one exported before.
"""
import json

from transforms import storage
from transforms.locks import STATE_DIR

HISTORY = 'export_history.json'


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
