"""forget end to end with destinations on S3 and GCS (loopback servers): the state of
tests/test_forget.py built once on the stores, two users forgotten with the command a user runs,
and a destination that cannot be reached, then the rerun. A module of its own, so that a
parallel suite can run it beside the local cases."""
import collections
import getpass
import json
import os
import shutil

import pytest

from tests.conftest import run_cli
from tests.test_forget import (ALICE, ALICE_DAYS, BOB, BOB_DAYS, DAYS, IDS, audit_of, build,
                               check_forgotten, cloud_objects, dead_letter_holds, everything,
                               forget_cli, holds, oracle_counts, restore_cloud, snapshot, tree)

pytestmark = pytest.mark.engine


@pytest.fixture(scope='module')
def cloud_base(tmp_path_factory, s3_store, gcs_store):
  from apache_beam.options.pipeline_options import PipelineOptions
  from transforms.stores import fs
  fs.configure(PipelineOptions(s3_store.flags))
  root = tmp_path_factory.mktemp('forget-clouds')
  work = str(root / 'work')
  stores = {'s3': s3_store, 'gcs': gcs_store}
  dests = build(work, s3_store.flags)
  pristine = str(root / 'pristine')
  shutil.copytree(work, pristine)
  return {'work': work, 'pristine': pristine, 'dests': dests, 'stores': stores,
          'objects': {n: cloud_objects(stores, n) for n in stores}}


@pytest.fixture
def clouds(cloud_base):
  shutil.rmtree(cloud_base['work'])
  shutil.copytree(cloud_base['pristine'], cloud_base['work'])
  for name, objects in cloud_base['objects'].items():
    restore_cloud(cloud_base['stores'], name, objects)
  return cloud_base


def test_forget_two_users_everywhere_on_local_s3_and_gcs(clouds, tmp_path):
  before = snapshot(clouds, tmp_path / 'before')
  lake_before = tree(os.path.join(clouds['work'], 'lake'))
  proc = forget_cli(clouds)
  for i in IDS:
    assert i not in proc.stdout + proc.stderr
  check_forgotten(clouds, before, tmp_path / 'after')

  # only files holding an id were rewritten: the others keep their bytes
  lake_after = tree(os.path.join(clouds['work'], 'lake'))
  touched = {p for p in lake_before if p.endswith('.parquet') and lake_before[p] != lake_after[p]}
  expected = {f'{k}' for k, rows in before['lake'].items()
              if any(holds(r['identifiers']) for r in rows)}
  expected |= {f'_rejected/{k}' for k, rows in before['rejected'].items()
               if any(dead_letter_holds(r['original']) for r in rows)}
  assert touched == expected and not any(DAYS[3] in p for p in touched)
  spared = [p for p in before['lake'] if p not in touched and p[3:13] in ALICE_DAYS | BOB_DAYS]
  assert spared    # affected days hold files without the users: those keep their bytes
  # the day no forgotten user had was not re-delivered: its CleverTap files are as they were
  ct = {u: d for u, d in cloud_objects(clouds['stores'], 'gcs').items() if '20230104' in u}
  assert ct and ct == {u: d for u, d in clouds['objects']['gcs'].items() if '20230104' in u}

  counts = oracle_counts(before)
  audit = audit_of(clouds)
  assert audit['outcome'] == 'finished' and audit['who'] == getpass.getuser()
  assert {dt: {k: v['rows_forgotten'] for k, v in kinds.items()}
          for dt, kinds in audit['days'].items()} == counts
  assert len(audit['id_hashes']) == 2 and not set(IDS) & set(audit['id_hashes'])
  redone = collections.Counter(d['dest'] for d in audit['destinations'].values() if d['done'])
  assert redone == {clouds['dests']['hive'][0]: 3, clouds['dests']['hourly'][0]: 3,
                    clouds['dests']['xml'][0]: 1, clouds['dests']['clevertap'][0]: 3,
                    clouds['dests']['adobe'][0]: 3}
  for dt, kinds in counts.items():
    manifest = json.load(open(f'{clouds["work"]}/lake/dt={dt}/_manifest.json'))
    assert manifest['rows_forgotten'] == kinds.get('lake', 0)

  # a second run of the finished request changes nothing and says so
  state = everything(clouds)
  again = forget_cli(clouds)
  assert 'finished at' in again.stdout and 'nothing to do' in again.stdout
  assert everything(clouds) == state


def test_an_unreachable_destination_is_reported_and_the_rerun_finishes(clouds, tmp_path):
  before = snapshot(clouds, tmp_path / 'before')
  s3 = clouds['stores']['s3'].flags
  at = s3.index('--s3_endpoint_url') + 1
  flags = [*s3[:at], 'http://127.0.0.1:9', *s3[at + 1:]]   # nothing listens there
  proc = run_cli('pipelines.forget', '--lake', f'{clouds["work"]}/lake', '--user_id', ALICE,
                 '--user_id', BOB, *flags, check=False)
  assert proc.returncode == 1, proc.stderr
  assert 'not re-delivered: s3://ferry/forget/adobe/events/exportTime=' in proc.stderr
  assert 'Traceback' not in proc.stderr
  for i in IDS:
    assert i not in proc.stdout + proc.stderr
  assert audit_of(clouds)['outcome'] == 'unfinished'
  forget_cli(clouds)
  assert audit_of(clouds)['outcome'] == 'finished'
  check_forgotten(clouds, before, tmp_path / 'after')
