"""A crash in the middle of the partition commit never leaves a published day with missing,
partial or stale files, and a rerun gives the same bytes as a clean run."""
import datetime
import hashlib
import json
import os

import apache_beam as beam
import pytest

from pipelines import import_events, samples
from transforms import storage

DAY = datetime.date(2023, 1, 1)


def day_files(lake):
  directory = os.path.join(lake, 'dt=2023-01-01')
  return {n: open(os.path.join(directory, n), 'rb').read() for n in sorted(os.listdir(directory))
          if n.startswith('part-')}


def assert_consistent(lake):
  """If the day says it is published, it holds exactly its manifest's files, byte for byte."""
  directory = os.path.join(lake, 'dt=2023-01-01')
  if not os.path.exists(os.path.join(directory, '_SUCCESS')):
    return
  manifest = json.load(open(os.path.join(directory, '_manifest.json')))
  on_disk = sorted(n for n in os.listdir(directory) if not n.startswith('_'))
  assert on_disk == sorted(f['name'] for f in manifest['files'])
  for f in manifest['files']:
    data = open(os.path.join(directory, f['name']), 'rb').read()
    assert hashlib.sha256(data).hexdigest() == f['sha256'] and len(data) == f['bytes']


def run_import(bucket, lake, shards):
  options = import_events.ImportOptions(['--source', bucket, '--date', str(DAY), '--lake', lake,
                                         '--shards', str(shards), '--runner', 'FnApiRunner'])
  plan = import_events.plan(options.view_as(import_events.ImportOptions))
  with beam.Pipeline(options=options) as p:
    import_events.build(p, plan)


@pytest.mark.parametrize('fail_at', ['rename', 'manifest'])
def test_crash_mid_commit_then_rerun(tmp_path, monkeypatch, fail_at):
  bucket, clean, lake = str(tmp_path / 'bucket'), str(tmp_path / 'clean'), str(tmp_path / 'lake')
  samples.write_day(bucket, DAY, samples.events(DAY, 3000, seed=11), files=2)
  run_import(bucket, clean, shards=3)
  run_import(bucket, lake, shards=5)            # an older version of the day, with more shards

  real_rename, real_write = storage.rename, storage.write_bytes

  def crash_after_one(sources, destinations):
    if '_rejected' in destinations[0]:
      return real_rename(sources, destinations)
    real_rename(sources[:1], destinations[:1])
    raise OSError('injected crash during promotion')

  def crash_on_manifest(path, data):
    if path.endswith('_manifest.json') and '_rejected' not in path:
      raise OSError('injected crash before the manifest')
    real_write(path, data)

  if fail_at == 'rename':
    monkeypatch.setattr(storage, 'rename', crash_after_one)
  else:
    monkeypatch.setattr(storage, 'write_bytes', crash_on_manifest)
  with pytest.raises(Exception, match='injected crash'):
    run_import(bucket, lake, shards=3)
  monkeypatch.undo()
  assert not os.path.exists(os.path.join(lake, 'dt=2023-01-01', '_SUCCESS')), \
      'a half-committed day must not look published'
  assert_consistent(lake)

  run_import(bucket, lake, shards=3)
  assert_consistent(lake)
  assert day_files(lake) == day_files(clean)
  assert os.path.exists(os.path.join(lake, 'dt=2023-01-01', '_SUCCESS'))
