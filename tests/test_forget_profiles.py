"""forget re-delivers profile exports (`--kind profiles`: the latest user_properties per user over
several lake days) whose days held a forgotten user. Days written by pyarrow; the delivered file
read with the json module; the expected profiles computed here from the rows the test wrote."""
import datetime
import glob
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import export_events, import_events
from tests.conftest import SCHEMA, run_cli, uuid

pytestmark = pytest.mark.engine

ALICE = 'forget-profile-alice-3q'
DAYS = ['2023-03-01', '2023-03-02', '2023-03-03']
UTC = datetime.timezone.utc


def rows_of(dt: str) -> list[dict]:
  """30 users seen on several days each; ALICE on the first day only."""
  k = DAYS.index(dt)
  start = datetime.datetime.fromisoformat(dt).replace(tzinfo=UTC)
  out = []
  for n in range(60):
    user = ALICE if (k == 0 and n % 7 == 0) else f'u{(n + k) % 30}'
    out.append({'ts': start + datetime.timedelta(minutes=n), 'event_key': 'view',
                'identifiers': [('id', f'dev-{n}'), ('device_id', f'D{n}'), ('user_id', user)],
                'insert_id': uuid(1000 * k + n), 'metric_value': None,
                'user_properties': [('tier', f'{dt}-{n}')],
                'event_properties': [], 'platform_properties': [('osname', 'iOS'),
                                                                ('appversion', '1.0')]})
  return out


def latest(rows: list[dict]) -> dict[str, dict]:
  """Per user_id: the user_properties of its latest event (the model of a profile export)."""
  best: dict = {}
  for r in rows:
    user = dict(r['identifiers'])['user_id']
    if user not in best or (r['ts'], r['insert_id']) > (best[user]['ts'], best[user]['insert_id']):
      best[user] = r
  return {u: dict(r['user_properties']) for u, r in best.items()}


def delivered(dest: str) -> dict[str, dict]:
  out = {}
  for path in glob.glob(f'{dest}/**/*.jsonl*', recursive=True):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt') as f:
      for line in f:
        row = json.loads(line)
        props = row['user_properties']   # JSON lines carry the map as an object
        out[row['user_key']] = json.loads(props) if isinstance(props, str) else props
  return out


def test_forget_redelivers_a_profile_export_that_read_the_users_day(tmp_path):
  bucket, lake, dest = tmp_path / 'bucket', str(tmp_path / 'lake'), str(tmp_path / 'profiles')
  everything = []
  for dt in DAYS:
    os.makedirs(bucket / f'dt={dt}')
    rows = rows_of(dt)
    everything += rows
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), bucket / f'dt={dt}' / 'a.parquet')
    (bucket / f'dt={dt}' / '_SUCCESS').write_bytes(b'')
  assert import_events.run(['--source', str(bucket), '--lake', lake, '--from_date', DAYS[0],
                            '--to_date', DAYS[-1]]) == 0
  assert export_events.run(['--lake', lake, '--dest', dest, '--date', DAYS[-1], '--kind',
                            'profiles', '--profile_days', '3', '--format', 'jsonl']) == 0
  assert delivered(dest) == latest(everything) and ALICE in delivered(dest)

  proc = run_cli('pipelines.forget', '--lake', lake, '--user_id', ALICE)
  assert 'finished' in proc.stdout
  kept = [r for r in everything if dict(r['identifiers'])['user_id'] != ALICE]
  assert delivered(dest) == latest(kept)
  for path in glob.glob(f'{dest}/**/*', recursive=True):
    if os.path.isfile(path):
      data = open(path, 'rb').read()
      assert ALICE.encode() not in (gzip.decompress(data) if path.endswith('.gz') else data), path
