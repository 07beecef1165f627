"""Export state kept at the destination (or --state), never in process memory: which lake commit
of each day was exported last.

Like the Snowflake/dbt recipe's export-history table: `--since_last_export` exports a day only when
its lake commit (the import run that last replaced it) is newer than the one exported before.

Folder claims: a layout whose folder is new in every run (Adobe's exportTime=, transforms/lake/layout.py
run_scoped) claims each folder for one day before anything is written to it, with an atomic
create, so two days never share a folder, and the day's next export finds (and removes) every
folder an earlier run of the day claimed, also one whose run died before it finished.
"""
import hashlib
import json

from transforms.stores import fs
from transforms.lake.names import CLAIMS_DIR, DELIVERIES_DIR, HISTORY, STATE_DIR

__all__ = ['load', 'record', 'changed_since_export', 'claim', 'claimed', 'unclaim']


def _dir(state_root: str) -> str:
  return fs.join(state_root, STATE_DIR)


def load(state_root: str) -> dict:
  path = fs.join(_dir(state_root), HISTORY)
  return json.loads(fs.read_bytes(path)) if fs.exists(path) else {}


def record(state_root: str, exported: dict[str, dict]) -> None:
  """Adds {dt: {lake_run_id, lake_committed_at, export_run_id, exported_at}} to the history."""
  history = load(state_root)
  history.update(exported)
  fs.write_bytes(fs.join(_dir(state_root), HISTORY),
                      json.dumps(dict(sorted(history.items())), indent=2).encode())


def changed_since_export(history: dict, dt: str, lake_manifest: dict) -> bool:
  last = history.get(dt)
  return last is None or last['lake_committed_at'] < lake_manifest['committed_at']


def _claim_path(state_root: str, folder: str) -> str:
  return fs.join(_dir(state_root), CLAIMS_DIR,
                      hashlib.sha1(folder.encode()).hexdigest()[:24] + '.json')


def claim(state_root: str, folder: str, owner: str, run_id: str) -> bool:
  """Claims `folder` (a full path) for `owner` (the day's commit unit under its destination):
  True when this run may commit there (a new claim, or the owner's own), False when another
  owner (another day, another dataset) holds it."""
  path = _claim_path(state_root, folder)
  mine = json.dumps({'folder': folder, 'owner': owner, 'run_id': run_id}).encode()
  if fs.create_exclusive(path, mine):
    return True
  return json.loads(fs.read_bytes(path))['owner'] == owner


def claimed(state_root: str, owner: str) -> list[str]:
  """Every folder claimed for `owner`, sorted."""
  found = []
  for path in fs.list_files(fs.join(_dir(state_root), CLAIMS_DIR)):
    held = json.loads(fs.read_bytes(path))
    if held['owner'] == owner:
      found.append(held['folder'])
  return sorted(found)


def unclaim(state_root: str, folder: str) -> None:
  fs.delete([_claim_path(state_root, folder)])


# Deliveries, kept in the lake (not at the destination, which forget may no longer reach): one
# small file per delivered day per destination per run, never rewritten, so that `forget` finds
# every destination that received a day, and how to deliver it again.


def record_delivery(lake: str, delivery: dict) -> None:
  """Adds one delivery ({dt, dest, unit, run_id, ...}) under LAKE/_eventferry/deliveries/DT/."""
  key = hashlib.sha1(f'{delivery["dest"]}|{delivery["unit"]}'.encode()).hexdigest()[:16]
  name = f'{key}-{delivery["run_id"]}.json'
  fs.write_bytes(fs.join(_dir(lake), DELIVERIES_DIR, delivery['dt'], name),
                      json.dumps(delivery, indent=2, sort_keys=True).encode())


def deliveries(lake: str) -> list[dict]:
  """The latest delivery of each day to each destination, sorted by day and destination."""
  latest: dict[tuple, dict] = {}
  for path in sorted(fs.list_files(fs.join(_dir(lake), DELIVERIES_DIR))):
    if path.endswith('.json'):
      d = json.loads(fs.read_bytes(path))
      key = (d['dt'], d['dest'], d['unit'])
      if key not in latest or latest[key]['exported_at'] <= d['exported_at']:
        latest[key] = d
  return [latest[k] for k in sorted(latest)]
