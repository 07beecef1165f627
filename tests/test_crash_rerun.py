"""A crash in the middle of the partition commit never leaves a published day with missing,
partial or stale files, and a rerun gives the same bytes as a clean run."""
import datetime
import hashlib
import json
import os
import re

import apache_beam as beam
import pytest

from pipelines import import_events, samples
from transforms.stores import fs

pytestmark = pytest.mark.process

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


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
  """Built once for the module, only read by its tests: the customer day, its clean import (3
  shards), a lake imported with 2 shards, and that lake's clean exports, by the command (1000
  rows a file) and by a pipeline run here (`run_export`)."""
  root = tmp_path_factory.mktemp('clean')
  paths = {name: str(root / name) for name in ('bucket', 'import', 'lake', 'export', 'export_here')}
  samples.write_day(paths['bucket'], DAY, samples.events(DAY, 3000, seed=11), files=2)
  run_import(paths['bucket'], paths['import'], shards=3)
  run_import(paths['bucket'], paths['lake'], shards=2)
  export_cli(paths['lake'], paths['export'], 1000)
  run_export(paths['lake'], paths['export_here'], 1000)
  return paths


@pytest.mark.parametrize('fail_at', ['rename', 'manifest'])
def test_crash_mid_commit_then_rerun(tmp_path, monkeypatch, fail_at, clean):
  bucket, lake = clean['bucket'], str(tmp_path / 'lake')
  run_import(bucket, lake, shards=5)            # an older version of the day, with more shards

  real_rename, real_write = fs.rename, fs.write_bytes

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
    monkeypatch.setattr(fs, 'rename', crash_after_one)
  else:
    monkeypatch.setattr(fs, 'write_bytes', crash_on_manifest)
  with pytest.raises(Exception, match='injected crash'):
    run_import(bucket, lake, shards=3)
  monkeypatch.undo()
  assert not os.path.exists(os.path.join(lake, 'dt=2023-01-01', '_SUCCESS')), \
      'a half-committed day must not look published'
  assert_consistent(lake)

  run_import(bucket, lake, shards=3)
  assert_consistent(lake)
  assert day_files(lake) == day_files(clean['import'])
  assert os.path.exists(os.path.join(lake, 'dt=2023-01-01', '_SUCCESS'))


# Real SIGKILLs (EVENTFERRY_KILL_AT) at each commit stage; the commands run as users run them.

def export_files(dest):
  directory = os.path.join(dest, 'dt=2023-01-01')
  return {n: open(os.path.join(directory, n), 'rb').read() for n in sorted(os.listdir(directory))
          if not n.startswith('_')}


def export_cli(lake, dest, rows_per_file, *flags, **kw):
  from tests.conftest import run_cli
  return run_cli('pipelines.export_events', '--lake', lake, '--dest', dest, '--date', str(DAY),
                 '--max_rows_per_file', str(rows_per_file), *flags, **kw)


def dead_run_refusal(proc, lock) -> str:
  """The refusal a rerun gets after a killed run: it names the lock, says the holder died and how
  to take over. Returns the dead run's id."""
  assert proc.returncode == 4 and lock in proc.stderr, proc.stderr
  assert 'no longer running: it died' in proc.stderr
  return re.search(r'--break_lock (\S+)\.', proc.stderr).group(1)


@pytest.mark.parametrize('stage', ['staged', 'promoting', 'before_success'])
def test_export_killed_at_each_commit_stage_then_rerun(tmp_path, stage, clean):
  from transforms.lake.commit import KILL_AT
  lake, dest = clean['lake'], str(tmp_path / 'dest')
  export_cli(lake, dest, 400)          # an older export of the day: more, differently cut files
  proc = export_cli(lake, dest, 1000, check=False, env={KILL_AT: stage})
  assert proc.returncode == -9
  # killed before the commit touched the day: the older export is still whole and published
  assert os.path.exists(os.path.join(dest, 'dt=2023-01-01', '_SUCCESS')) == (stage == 'staged')
  assert_consistent(dest)
  dead = dead_run_refusal(export_cli(lake, dest, 1000, check=False), 'dt=2023-01-01.lock')
  refused = export_cli(lake, dest, 1000, '--break_lock', 'some-other-run', check=False)
  assert refused.returncode == 4                   # only the named run's lock is taken over
  export_cli(lake, dest, 1000, '--break_lock', dead)
  assert_consistent(dest)
  assert export_files(dest) == export_files(clean['export'])
  assert not os.listdir(os.path.join(dest, '_eventferry', 'locks'))


def run_export(lake, dest, rows_per_file):
  from pipelines import export_events
  options = export_events.ExportOptions(['--lake', lake, '--dest', dest, '--date', str(DAY),
                                         '--max_rows_per_file', str(rows_per_file),
                                         '--runner', 'FnApiRunner'])
  plan = export_events.plan(options.view_as(export_events.ExportOptions))
  with beam.Pipeline(options=options) as p:
    export_events.build(p, plan)


def test_export_day_is_whole_after_every_storage_change_and_a_failure_at_each(tmp_path,
                                                                             monkeypatch, clean):
  """Fails the export's commit at its n-th storage change, for every n, checking after every
  change that a day with _SUCCESS holds exactly its manifest's files; each rerun equals clean."""
  lake, dest = clean['lake'], str(tmp_path / 'dest')
  expected = export_files(clean['export_here'])
  day = os.path.join(dest, 'dt=2023-01-01')
  real = {name: getattr(fs, name) for name in ('rename', 'delete', 'write_bytes')}
  n = 0
  while True:
    run_export(lake, dest, 400 + n)    # an older export of the day, cut differently each time
    changes = []

    def checked(name, changes=changes, n=n):   # this pass's: the ops are patched per pass
      def op(first, *args):
        first = [first] if isinstance(first, str) else list(first)
        touched = first + (list(args[0]) if name == 'rename' else [])
        if any(p.startswith(day) for p in touched):
          if len(changes) == n:
            raise OSError(f'injected failure at change {n} ({name})')
          changes.append(name)
        real[name](first if name != 'write_bytes' else first[0], *args)
        assert_consistent(dest)
      return op

    for name in real:
      monkeypatch.setattr(fs, name, checked(name))
    try:
      run_export(lake, dest, 1000)
      failed = False
    except Exception as e:  # noqa: BLE001 - Beam wraps the injected error
      assert 'injected failure' in str(e)
      failed = True
    monkeypatch.undo()
    assert_consistent(dest)
    if not failed:
      break                            # n passed the last change of the commit
    run_export(lake, dest, 1000)
    assert export_files(dest) == expected
    n += 1
  # delete _SUCCESS, one promote per file, the stale files, the manifest, _SUCCESS
  assert n == 1 + len(expected) + 3 and export_files(dest) == expected


VALID = samples.events(DAY, 3000, seed=11, invalid=0)   # resends stay: read back once each


@pytest.fixture(scope='module')
def clean_valid(tmp_path_factory):
  """Built once for the module: a day of VALID events and its clean import by the command."""
  from tests.conftest import run_cli
  root = tmp_path_factory.mktemp('clean-valid')
  bucket, clean = str(root / 'bucket'), str(root / 'clean')
  samples.write_day(bucket, DAY, VALID, files=2)
  run_cli('pipelines.import_events', '--source', bucket, '--date', str(DAY), '--shards', '3',
          '--lake', clean)
  return {'bucket': bucket, 'import': clean}


@pytest.mark.parametrize('stage', ['staged', 'promoting', 'before_success'])
def test_import_killed_at_each_commit_stage_then_rerun(tmp_path, stage, clean_valid):
  """A real SIGKILL inside the commit: a published day is always whole, the rerun's refusal names
  the dead run, and taking over its lock gives a clean run's bytes."""
  from tests.conftest import run_cli
  from transforms.lake.commit import KILL_AT
  from tests.oracle import assert_lake, source_ids
  lake = str(tmp_path / 'lake')
  args = ['pipelines.import_events', '--source', clean_valid['bucket'], '--date', str(DAY),
          '--shards', '3']
  run_cli(*args[:-1], '5', '--lake', lake)     # an older version of the day, with more shards
  proc = run_cli(*args, '--lake', lake, check=False, env={KILL_AT: f'{stage}:lake/dt=2023-01-01'})
  assert proc.returncode == -9
  assert os.path.exists(os.path.join(lake, 'dt=2023-01-01', '_SUCCESS')) == (stage == 'staged')
  assert_consistent(lake)
  dead = dead_run_refusal(run_cli(*args, '--lake', lake, check=False), 'dt=2023-01-01.lock')
  run_cli(*args, '--lake', lake, '--break_lock', dead)
  assert_consistent(lake)
  assert day_files(lake) == day_files(clean_valid['import'])
  assert_lake(lake, {str(DAY): source_ids(VALID)})   # every row once, nothing left behind


# The flat layout (CleverTap): days side by side in one prefix, each committed on its own.

FLAT = ['--layout', 'clevertap', '--request_id', 'R1', '--format', 'jsonl']


def flat_day(dest, yyyymmdd):
  """The day's data files, by name without the run's time, and its markers."""
  names = [n for n in os.listdir(dest) if n.startswith('R1-') and f'-{yyyymmdd}-' in n]
  files = {n.split('-', 2)[2]: open(os.path.join(dest, n), 'rb').read() for n in names}
  markers = {n for n in os.listdir(dest) if n.endswith(yyyymmdd) or n.endswith(f'{yyyymmdd}.json')}
  return files, markers


def assert_flat_consistent(dest, yyyymmdd):
  """If the day says it is published, the prefix holds exactly its manifest's files of that day."""
  if not os.path.exists(os.path.join(dest, f'_SUCCESS-{yyyymmdd}')):
    return
  manifest = json.load(open(os.path.join(dest, f'_manifest-{yyyymmdd}.json')))
  on_disk = sorted(n for n in os.listdir(dest) if n.startswith('R1-') and f'-{yyyymmdd}-' in n)
  assert on_disk == sorted(f['name'] for f in manifest['files'])
  for f in manifest['files']:
    data = open(os.path.join(dest, f['name']), 'rb').read()
    assert hashlib.sha256(data).hexdigest() == f['sha256'] and len(data) == f['bytes']


DAY2 = DAY + datetime.timedelta(days=1)


def flat_export(lake, out, rows_per_file, *flags, days=('--date', str(DAY)), db='DB1', **kw):
  from tests.conftest import run_cli
  return run_cli('pipelines.export_events', '--lake', lake, '--dest', out, *days, *FLAT,
                 '--database_id', db, '--max_rows_per_file', str(rows_per_file), *flags, **kw)


@pytest.fixture(scope='module')
def clean_flat(tmp_path_factory):
  """Built once for the module, only read by its tests: a lake of two days and their clean flat
  export."""
  from tests.conftest import run_cli
  root = tmp_path_factory.mktemp('clean-flat')
  bucket, lake, clean = str(root / 'bucket'), str(root / 'lake'), str(root / 'clean')
  for day, seed in ((DAY, 11), (DAY2, 12)):
    samples.write_day(bucket, day, samples.events(day, 3000, seed=seed), files=2)
    run_cli('pipelines.import_events', '--source', bucket, '--date', str(day), '--lake', lake,
            '--shards', '2')
  flat_export(lake, clean, 1000, days=('--from_date', str(DAY), '--to_date', str(DAY2)))
  return {'lake': lake, 'export': clean}


@pytest.mark.parametrize('stage', ['staged', 'promoting', 'before_success'])
def test_flat_export_killed_at_each_commit_stage_then_rerun(tmp_path, stage, clean_flat):
  from transforms.lake.commit import KILL_AT
  clean, dest = clean_flat['export'], str(tmp_path / 'dest')

  def export(out, rows_per_file, *flags, **kw):
    return flat_export(clean_flat['lake'], out, rows_per_file, *flags, **kw)

  both = ('--from_date', str(DAY), '--to_date', str(DAY2))
  # an older export of both days: more, differently cut files, none named as the new ones
  export(dest, 400, days=both, db='DB0')
  other_day = flat_day(dest, '20230102')
  proc = export(dest, 1000, check=False, env={KILL_AT: stage})
  assert proc.returncode == -9
  assert os.path.exists(os.path.join(dest, '_SUCCESS-20230101')) == (stage == 'staged')
  assert_flat_consistent(dest, '20230101')
  # published or not, the day's manifest names every file of the day, so the rerun removes them
  listed = {f['name'] for f in json.load(open(os.path.join(dest, '_manifest-20230101.json')))['files']}
  assert {n for n in os.listdir(dest) if '-20230101-' in n} <= listed
  assert flat_day(dest, '20230102') == other_day
  dead = dead_run_refusal(export(dest, 1000, check=False), '20230101.lock')
  export(dest, 1000, '--break_lock', dead)
  assert_flat_consistent(dest, '20230101')
  assert flat_day(dest, '20230101')[0] == flat_day(clean, '20230101')[0]
  assert flat_day(dest, '20230102') == other_day
  assert not os.listdir(os.path.join(dest, '_eventferry', 'locks'))
