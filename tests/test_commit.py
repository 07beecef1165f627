"""The partition commit: stale files removed, manifest and _SUCCESS last, exact replacement."""
import hashlib
import json
import os

import pytest

from schemas.events import LAKE_SCHEMA
from transforms.stores import fs
from transforms.lake.commit import commit_partition, manifest_for, write_parquet
from transforms.lake.commit import stage as commit_stage   # `stage` is this file's helper


def stage(tmp_path, names):
  return [write_parquet(LAKE_SCHEMA.empty_table(), str(tmp_path / 'staging' / n), n) for n in names]


def commit(tmp_path, names):
  staged = stage(tmp_path, names)
  target = str(tmp_path / 'lake' / 'dt=2023-01-01')
  commit_partition(target, staged, manifest_for(staged, run_id='r', pipeline='t', source='s',
                                                partition=target, schema=LAKE_SCHEMA))
  return target


def test_rerun_with_fewer_shards_leaves_nothing_stale(tmp_path):
  commit(tmp_path, [f'part-{i:05d}-of-00004.parquet' for i in range(4)])
  target = commit(tmp_path, [f'part-{i:05d}-of-00002.parquet' for i in range(2)])
  assert sorted(os.listdir(target)) == ['_SUCCESS', '_manifest.json', 'part-00000-of-00002.parquet',
                                        'part-00001-of-00002.parquet']
  manifest = json.loads(fs.read_bytes(os.path.join(target, '_manifest.json')))
  assert [f['name'] for f in manifest['files']] == ['part-00000-of-00002.parquet',
                                                    'part-00001-of-00002.parquet']
  assert os.path.getsize(os.path.join(target, '_SUCCESS')) == 0


def test_success_is_deleted_first_and_written_after_everything_else(tmp_path, monkeypatch):
  commit(tmp_path, ['part-00000-of-00001.parquet'])   # a day to replace
  calls = []
  for name in ('write_bytes', 'rename', 'delete'):   # every change the commit makes on the store
    def spy(*args, _name=name, _real=getattr(fs, name), **kwargs):
      paths = args[1] if _name == 'rename' else args[0]
      calls.extend((_name, os.path.basename(p)) for p in ([paths] if isinstance(paths, str) else paths))
      return _real(*args, **kwargs)
    monkeypatch.setattr(fs, name, spy)
  commit(tmp_path, ['part-00000-of-00002.parquet', 'part-00001-of-00002.parquet'])
  assert calls[0] == ('delete', '_SUCCESS') and calls[-1] == ('write_bytes', '_SUCCESS')
  assert calls.index(('write_bytes', '_manifest.json')) == len(calls) - 2
  assert ('delete', 'part-00000-of-00001.parquet') in calls
  assert not os.listdir(tmp_path / 'staging')


def test_staged_file_records_the_size_and_sha256_of_what_was_written(tmp_path):
  path = str(tmp_path / 'staging' / 'part-00000-of-00001.parquet')
  data = os.urandom(3 * fs.clients.BLOCK + 5)   # more than one upload block
  staged = commit_stage(data, path, 'part-00000-of-00001.parquet', 7)
  with open(path, 'rb') as f:
    assert f.read() == data
  assert (staged.bytes, staged.sha256, staged.rows) == (len(data), hashlib.sha256(data).hexdigest(), 7)


def test_scratch_upload_without_checksum_refuses_to_give_one(tmp_path):
  with fs.open_write(str(tmp_path / 'scratch'), checksum=False) as f:
    f.write(b'spill')
  assert f.bytes == 5
  with pytest.raises(ValueError, match='checksum=False'):
    _ = f.sha256
