"""forget end to end: customer days written by pyarrow and pandas, imported, exported in several
layouts and formats to local disk (tests/test_forget_clouds.py: to S3 and GCS too), then two users
forgotten with the command a user runs. Every lake, dead-letter and destination file is read back with readers
that are not the project's (pyarrow, pandas' writer's counterpart, fastavro, csv, json,
xml.etree: tests/exportkit.py) and its bytes grepped (gzip undone) for the ids; every other row
must be as before. Expected rows come from the rows the test wrote, filtered here."""
import collections
import datetime
import decimal
import gzip
import hashlib
import io
import json
import os
import re
import shutil

import fastavro
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import export_events, import_events
from tests import exportkit
from tests.conftest import SCHEMA, run_cli, uuid
from transforms.lake.commit import KILL_AT

pytestmark = pytest.mark.engine

ALICE, BOB = 'forget-alice-91x', 'forget-bob-37y'
NEAR = 'forget-alice-9'                 # a prefix of ALICE's id: another user, kept
IDS = (ALICE, BOB)
DAYS = ['2023-01-01', '2023-01-02', '2023-01-03', '2023-01-04']
ALICE_DAYS, BOB_DAYS = {DAYS[0], DAYS[1]}, {DAYS[1], DAYS[2]}
CT = ['--layout', 'clevertap', '--format', 'jsonl', '--request_id', '1700000000123',
      '--database_id', 'W8R-6K4-5W7Z']
UTC = datetime.timezone.utc


def day_rows(dt: str) -> list[dict]:
  base = DAYS.index(dt) * 1000
  start = datetime.datetime.fromisoformat(dt).replace(tzinfo=UTC)
  rows = []
  for n in range(240):
    uid = f'u{base + n}'
    if dt in ALICE_DAYS and n % 41 == 0:
      uid = ALICE
    elif dt in BOB_DAYS and n % 53 == 5:
      uid = BOB
    elif n % 31 == 0:
      uid = NEAR
    ids = [('id', f'user-{base + n}'), ('device_id', f'DEV-{base + n}'), ('user_id', uid)]
    if dt == DAYS[2] and uid == BOB:
      ids = [('id', BOB), ('device_id', f'DEV-{base + n}')]      # under another key
    rows.append({'ts': start + datetime.timedelta(seconds=37 * n, microseconds=250_000),
                 'event_key': ['purchase', 'view', 'login'][n % 3], 'identifiers': ids,
                 'insert_id': uuid(base + n), 'metric_value': decimal.Decimal(f'{n}.250000'),
                 'user_properties': [('grade', 'GOLD' if n % 2 else 'SILVER')],
                 'event_properties': [('product_category', '레저 & <스포츠>')],
                 'platform_properties': [('osname', 'Android'), ('appversion', '6.9.0')]})
  if dt == DAYS[0]:   # dead letters: one of ALICE, one of a stranger
    rows.append({**rows[1], 'insert_id': 'not-a-uuid', 'identifiers': [('id', 'x'),
                 ('device_id', 'y'), ('user_id', ALICE)]})
    rows.append({**rows[2], 'insert_id': 'not-a-uuid-2'})
  if dt == DAYS[1]:
    rows.append({**rows[3], 'identifiers': [('id', 'z'), ('user_id', BOB)]})   # no device_id
  return rows


def write_bucket(bucket: str) -> None:
  """Days 1 and 3 by pyarrow (day 3 in two files), days 2 and 4 by pandas."""
  for i, dt in enumerate(DAYS):
    folder = os.path.join(bucket, f'dt={dt}')
    os.makedirs(folder)
    rows = day_rows(dt)
    if i % 2 == 0:
      half = len(rows) // 2 if i == 2 else len(rows)
      pq.write_table(pa.Table.from_pylist(rows[:half], schema=SCHEMA), f'{folder}/a.parquet')
      if half < len(rows):
        pq.write_table(pa.Table.from_pylist(rows[half:], schema=SCHEMA), f'{folder}/b.parquet')
    else:
      pd.DataFrame(rows).to_parquet(f'{folder}/part-0.parquet', schema=SCHEMA, index=False)
    open(f'{folder}/_SUCCESS', 'w').close()


# Clouds: S3 and GCS objects read, written and deleted with their own clients.

def s3_client(s3_store):
  import boto3
  from tests import servers
  return boto3.client('s3', endpoint_url=s3_store.server.endpoint, region_name='us-east-1',
                      aws_access_key_id=servers.MOTO_KEY, aws_secret_access_key=servers.MOTO_SECRET)


def cloud_objects(stores, name: str) -> dict[str, bytes]:
  """{url: bytes} of every object under the test's prefix of store `name`."""
  if name == 's3':
    s3, out = s3_client(stores['s3']), {}
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket='ferry', Prefix='forget/'):
      for o in page.get('Contents', []):
        out[f's3://ferry/{o["Key"]}'] = s3.get_object(Bucket='ferry', Key=o['Key'])['Body'].read()
    return out
  from google.cloud import storage as gcs
  bucket = gcs.Client.create_anonymous_client().bucket('ferry')
  return {f'gs://ferry/{b.name}': b.download_as_bytes() for b in bucket.list_blobs(prefix='forget/')}


def restore_cloud(stores, name: str, objects: dict[str, bytes]) -> None:
  if name == 's3':
    s3 = s3_client(stores['s3'])
    for url in cloud_objects(stores, 's3'):
      s3.delete_object(Bucket='ferry', Key=url[len('s3://ferry/'):])
    for url, data in objects.items():
      s3.put_object(Bucket='ferry', Key=url[len('s3://ferry/'):], Body=data)
    return
  from google.cloud import storage as gcs
  bucket = gcs.Client.create_anonymous_client().bucket('ferry')
  for blob in bucket.list_blobs(prefix='forget/'):
    blob.delete()
  for url, data in objects.items():
    bucket.blob(url[len('gs://ferry/'):]).upload_from_string(data)


def mirror(objects: dict[str, bytes], root: str, into: str) -> str:
  """The objects under `root` as local files under `into` (for the readers)."""
  shutil.rmtree(into, ignore_errors=True)
  for url, data in objects.items():
    if url.startswith(root + '/'):
      path = os.path.join(into, url[len(root) + 1:])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      open(path, 'wb').write(data)
  return into


# The state before: built once per module, restored before each test.

def build(work: str, s3_flags: list[str] | None) -> dict[str, tuple[str, str]]:
  """Imports the bucket and exports it; returns {name: (dest, format)}."""
  bucket, lake = f'{work}/bucket', f'{work}/lake'
  write_bucket(bucket)
  assert import_events.run(['--source', bucket, '--lake', lake, '--from_date', DAYS[0],
                            '--to_date', DAYS[-1], '--shards', '8']) == 0
  clouds = s3_flags is not None
  dests = {'hive': (f'{work}/dest-hive', 'parquet'), 'hourly': (f'{work}/dest-hourly', 'csv'),
           'xml': (f'{work}/dest-xml', 'xml'),
           'clevertap': ('gs://ferry/forget/ct' if clouds else f'{work}/dest-ct', 'jsonl'),
           # not on GCS: its emulator ignores if_generation_match=0, so Adobe's folder claims
           # (atomic on real GCS) are not exclusive there
           'adobe': ('s3://ferry/forget/adobe' if clouds else f'{work}/dest-adobe', 'avro')}
  flags = s3_flags or []
  span = ['--from_date', DAYS[0], '--to_date', DAYS[-1]]
  export = export_events.run
  assert export(['--lake', lake, '--dest', dests['hive'][0], *span, *flags]) == 0
  assert export(['--lake', lake, '--dest', dests['hourly'][0], *span, '--format', 'csv',
                 '--compression', 'gzip', '--layout', 'hourly', *flags]) == 0
  assert export(['--lake', lake, '--dest', dests['xml'][0], '--date', DAYS[2], '--format', 'xml',
                 *flags]) == 0
  for dt in DAYS:
    assert export(['--lake', lake, '--dest', dests['clevertap'][0], '--date', dt, *CT, *flags]) == 0
    assert export(['--lake', lake, '--dest', dests['adobe'][0], '--date', dt, '--layout', 'adobe',
                   '--format', 'avro', '--max_rows_per_file', '100', *flags]) == 0
  return dests


def tree(root: str) -> dict[str, bytes]:
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      out[os.path.relpath(os.path.join(d, f), root)] = open(os.path.join(d, f), 'rb').read()
  return out


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  root = tmp_path_factory.mktemp('forget-local')
  work = str(root / 'work')
  dests = build(work, None)
  pristine = str(root / 'pristine')
  shutil.copytree(work, pristine)
  return {'work': work, 'pristine': pristine, 'dests': dests}


@pytest.fixture
def local(base):
  shutil.rmtree(base['work'])
  shutil.copytree(base['pristine'], base['work'])
  return base


def forget_cli(state, *flags, check=True, env=None):
  extra = state['stores']['s3'].flags if 'stores' in state else []
  return run_cli('pipelines.forget', '--lake', f'{state["work"]}/lake', '--user_id', ALICE,
                 '--user_id', BOB, *extra, *flags, check=check, env=env)


# What the test knows independently.

def holds(row_ids) -> bool:
  values = row_ids.values() if isinstance(row_ids, dict) else [v for _, v in row_ids or []]
  return any(v in IDS for v in values)


def dead_letter_holds(original: str) -> bool:
  ids = json.loads(original).get('identifiers') or {}
  return holds(ids if isinstance(ids, dict) else [tuple(p) for p in ids])


def lake_files(work: str, sub: str = '') -> dict[str, list[dict]]:
  """{relative path: rows} of the Parquet files committed days' manifests list, read by pyarrow."""
  out = {}
  root = os.path.join(work, 'lake', sub)
  for dt in sorted(os.listdir(root)):
    if dt.startswith('dt=') and os.path.exists(os.path.join(root, dt, '_SUCCESS')):
      for f in json.load(open(os.path.join(root, dt, '_manifest.json')))['files']:
        out[f'{dt}/{f["name"]}'] = pq.read_table(os.path.join(root, dt, f['name'])).to_pylist()
  return out


def local_dest(state, name: str, into: str) -> str:
  dest, _ = state['dests'][name]
  if dest.startswith(('s3://', 'gs://')):
    kind = 's3' if dest.startswith('s3://') else 'gcs'
    return mirror(cloud_objects(state['stores'], kind), dest, into)
  return dest


def dest_rows(folder: str, fmt: str) -> list[str]:
  rows = []
  for path in exportkit.committed_files(folder):
    rows += [json.dumps(r, sort_keys=True, default=str) for r in exportkit.read_export(path, fmt)]
  return sorted(rows)


def no_trace(name: str, data: bytes) -> None:
  """Neither id in the bytes, in the gunzipped bytes, or in what Parquet and Avro readers give."""
  texts = [data]
  if name.endswith('.gz'):
    texts.append(gzip.decompress(data))
  if name.endswith('.parquet'):
    texts.append(str(pq.read_table(io.BytesIO(data)).to_pylist()).encode())
  if name.endswith('.avro'):
    texts.append(str(list(fastavro.reader(io.BytesIO(data)))).encode())
  for text in texts:
    for i in IDS:
      assert i.encode() not in text, f'{name} holds an id'


def snapshot(state, tmp) -> dict:
  out = {'lake': lake_files(state['work']), 'rejected': lake_files(state['work'], '_rejected')}
  for name, (_, fmt) in state['dests'].items():
    out[name] = dest_rows(local_dest(state, name, f'{tmp}/{name}'), fmt)
  return out


def everything(state) -> dict[str, bytes]:
  """Every file of the lake and the destinations (not the customer's own bucket)."""
  out = {f'{k}': v for k, v in tree(state['work']).items() if not k.startswith('bucket/')}
  for name in state.get('stores', {}):
    out.update(cloud_objects(state['stores'], name))
  return out


def check_forgotten(state, before: dict, tmp) -> None:
  after = snapshot(state, tmp)
  for kind in ('lake', 'rejected'):
    assert after[kind].keys() == before[kind].keys()
    for path, rows in before[kind].items():
      keep = [r for r in rows if not (holds(r['identifiers']) if kind == 'lake'
                                      else dead_letter_holds(r['original']))]
      assert after[kind][path] == keep, path      # same rows, same order
  assert any(NEAR in str(r) for rows in after['lake'].values() for r in rows)
  for name in state['dests']:
    keep = [r for r in before[name] if not any(i in r for i in IDS)]
    assert after[name] == keep, name
    assert len(keep) < len(before[name]), name
  for path, data in everything(state).items():
    no_trace(path, data)


def oracle_counts(before: dict) -> dict:
  counts: dict = collections.defaultdict(dict)
  for kind in ('lake', 'rejected'):
    for path, rows in before[kind].items():
      dt = path.split('/')[0][3:]
      n = sum(holds(r['identifiers']) if kind == 'lake' else dead_letter_holds(r['original'])
              for r in rows)
      if n:
        counts[dt][kind] = counts[dt].get(kind, 0) + n
  return dict(counts)


def audit_of(state) -> dict:
  folder = os.path.join(state['work'], 'lake', '_eventferry', 'forget')
  (name,) = [n for n in os.listdir(folder) if n.endswith('.json')]
  return json.load(open(os.path.join(folder, name)))


def test_dry_run_prints_the_plan_and_changes_nothing(local):
  state = everything(local)
  proc = forget_cli(local, '--dry_run')
  assert everything(local) == state
  assert re.search(r'dt=2023-01-01 .*lake: 6 rows in \d+ files', proc.stdout), proc.stdout
  assert 'rejected: 1 rows in 1 files' in proc.stdout
  assert proc.stdout.count('re-deliver') == 3 + 3 + 1 + 3 + 3
  assert 'dry run: nothing was changed' in proc.stdout
  for i in IDS:
    assert i not in proc.stdout + proc.stderr


RUN_ID = re.compile(r'\d{8}T\d{6}Z-[0-9a-f]{8}')   # Adobe's file names carry the run's id


def comparable(state) -> dict:
  """What a clean and a resumed forget must agree on: lake data files byte for byte, manifests
  but their time and run id, each destination's rows, and the audit's counts."""
  out = {}
  for path, data in tree(os.path.join(state['work'], 'lake')).items():
    if path.endswith('.parquet') and '_staging' not in path:
      out[path] = hashlib.sha256(data).hexdigest()
    elif path.endswith('_manifest.json'):
      m = json.loads(data)
      out[path] = (m['rows'], m['rows_forgotten'], [(f['name'], f['sha256']) for f in m['files']])
    elif '_staging' in path or path.endswith('.lock'):
      out[path] = 'left behind'
  for name, (dest, fmt) in state['dests'].items():
    out[name] = dest_rows(dest, fmt)
    out[f'{name} files'] = sorted(RUN_ID.sub('RUN', p) for p in tree(dest)
                                  if not p.startswith('_eventferry'))
  audit = audit_of(state)
  out['audit'] = (audit['outcome'], audit['days'], sorted(
      (d['target'], d['rows'], d['files']) for d in audit['destinations'].values()))
  return out


@pytest.fixture(scope='module')
def clean_run(base, tmp_path_factory):
  shutil.rmtree(base['work'])
  shutil.copytree(base['pristine'], base['work'])
  forget_cli(base)
  return comparable(base)


@pytest.mark.parametrize('stage', [
    'forget_planned', 'promoting:lake/dt=2023-01-02', 'before_success:lake/_rejected/dt=2023-01-01',
    'forget_lake_done', 'staged:dest-ct', 'promoting:dest-hive/dt=2023-01-03'])
def test_killed_at_each_stage_then_rerun_equals_a_clean_run(clean_run, local, stage):
  killed = forget_cli(local, check=False, env={KILL_AT: stage})
  assert killed.returncode == -9, killed.stderr[-2000:]
  refused = forget_cli(local, check=False)
  assert refused.returncode == 4 and 'no longer running: it died' in refused.stderr
  dead = re.search(r'--break_lock (\S+)\.', refused.stderr).group(1)
  forget_cli(local, '--break_lock', dead)
  assert comparable(local) == clean_run
