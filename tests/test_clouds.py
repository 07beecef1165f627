"""End to end on each real store (tests/servers.py): the customer's day, the lake and the export
all on S3 (moto), GCS (gcp-storage-emulator), Azure Blob (Azurite) or SFTP (asyncssh), through the
real commands; what lands is read back and must equal a local run of the same commands."""
import datetime
import io
import posixpath
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import samples
from tests.conftest import SFTP_PASSWORD, parquet_rows, run_cli, run_process, running_cli, wait_for
from tests.test_ingest import event
from transforms.stores import fs

pytestmark = pytest.mark.process

DAY = datetime.date(2023, 1, 1)
EVENTS = samples.events(DAY, 3000, seed=11)


def import_day(source, lake, *flags, env=None, check=True, run=run_cli):
  return run('pipelines.import_events', '--source', source, '--date', DAY.isoformat(),
                 '--lake', lake, *flags, env=env, check=check)


def export_day(lake, dest, *flags, env=None, check=True, run=run_cli):
  return run('pipelines.export_events', '--lake', lake, '--date', DAY.isoformat(),
                 '--dest', dest, *flags, env=env, check=check)


def read_day(directory: str) -> pa.Table:
  """Every Parquet file of a committed day, in name order, read with pyarrow."""
  files = sorted(p for p in fs.list_files(directory) if p.endswith('.parquet'))
  return pa.concat_tables(pq.read_table(io.BytesIO(fs.read_bytes(p))) for p in files)


def names(directory: str) -> list[str]:
  return sorted(posixpath.relpath(p, directory) for p in fs.list_files(directory))


@pytest.fixture(scope='module')
def local_run(tmp_path_factory):
  """The same commands on local disk: the reference."""
  root = tmp_path_factory.mktemp('local')
  samples.write_day(str(root / 'src'), DAY, EVENTS, files=2)
  import_day(str(root / 'src'), str(root / 'lake'), '--shards', '2')
  export_day(str(root / 'lake'), str(root / 'dest'))
  return {'lake': read_day(str(root / 'lake' / 'dt=2023-01-01')),
          'export': read_day(str(root / 'dest' / 'dt=2023-01-01'))}


def test_import_and_export_on_the_store_equal_a_local_run(store, local_run):
  samples.write_day(store.url('src'), DAY, EVENTS, files=2)
  src, lake, dest = store.url('src'), store.url('lake'), store.url('dest')
  import_day(src, lake, '--shards', '3', *store.flags, env=store.env)
  import_day(src, lake, '--shards', '2', *store.flags, env=store.env)   # replaces 3 shards by 2
  export_day(lake, dest, *store.flags, env=store.env)

  day = fs.partition_dir(lake, '2023-01-01')
  assert names(day) == ['_SUCCESS', '_manifest.json', 'part-00000-of-00002.parquet',
                        'part-00001-of-00002.parquet']
  assert fs.read_bytes(fs.join(day, '_SUCCESS')) == b''
  assert read_day(day).equals(local_run['lake'])
  assert read_day(fs.partition_dir(dest, '2023-01-01')).equals(local_run['export'])
  assert not fs.list_files(fs.join(lake, '_staging'))
  assert not fs.list_files(fs.join(lake, '_eventferry', 'locks'))


def test_storage_helpers_behave_alike_on_every_store(store):
  base = store.url('helpers')
  lock = fs.join(base, 'locks', 'a.lock')
  assert fs.create_exclusive(lock, b'first')
  if store.name != 'gcs':   # gcp-storage-emulator ignores ifGenerationMatch (real GCS honours it)
    assert not fs.create_exclusive(lock, b'second')
    assert fs.read_bytes(lock) == b'first'
  fs.write_bytes(fs.join(base, 'd', '_SUCCESS'), b'')
  fs.write_bytes(fs.join(base, 'd', 'a'), b'old')
  fs.write_bytes(fs.join(base, 'd1', 'x'), b'sibling')
  fs.write_bytes(fs.join(base, 'staged'), b'new')
  assert fs.exists(fs.join(base, 'd', '_SUCCESS'))
  assert not fs.exists(fs.join(base, 'd', 'missing'))
  assert names(fs.join(base, 'd')) == ['_SUCCESS', 'a']        # not d1/
  fs.rename([fs.join(base, 'staged')], [fs.join(base, 'd', 'a')])
  assert fs.read_bytes(fs.join(base, 'd', 'a')) == b'new'
  fs.delete_tree(fs.join(base, 'd'))
  assert fs.list_files(fs.join(base, 'd')) == {}
  assert names(fs.join(base, 'd1')) == ['x']


@pytest.mark.parametrize('where', ['local', 'sftp'])
def test_pruning_staging_keeps_another_runs_folder_made_a_moment_ago(where, tmp_path, request):
  # Two runs of different days share DEST/_staging. One finishes while the other has made its
  # folder but written nothing yet: the shared parent must stay, the other's folder too.
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  if where == 'sftp':
    store = request.getfixturevalue('sftp_store')
    fs.configure(PipelineOptions(store.flags))
    base = store.url('prune')
  else:
    base = str(tmp_path)
  mine, theirs = fs.join(base, '_staging', 'run-a'), fs.join(base, '_staging', 'run-b')
  fs.write_bytes(fs.join(mine, 'part-0.parquet'), b'x')
  FileSystems.mkdirs(theirs)
  fs.delete_tree(mine, prune_parent=True)
  assert not fs.exists(mine)
  assert fs.exists(theirs)
  fs.write_bytes(fs.join(theirs, 'part-0.parquet'), b'y')   # the other run goes on writing
  fs.delete_tree(theirs, prune_parent=True)
  assert not fs.exists(fs.join(base, '_staging'))            # the last one out removes it


def check(*flags, env=None, run=run_cli):
  return run('pipelines.check', *flags, env=env, check=False)


def test_check_passes_every_permission_on_every_store(store):
  samples.write_day(store.url('checksrc'), DAY, EVENTS.slice(0, 10), files=1)
  proc = check('--dest', store.url('checkdest'), '--source', store.url('checksrc'), *store.flags,
               env=store.env)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for permission in ('PUT', 'GET', 'LIST', 'DELETE'):
    assert f'  {permission:<7} OK' in proc.stdout
  assert proc.stdout.count('verdict: usable') == 2
  assert not fs.list_files(store.url('checkdest'))   # the probe is gone


def unusable(store):
  """A location on the store this run cannot write: a missing bucket, or a wrong password."""
  if store.name == 'sftp':
    flags = [f if f != SFTP_PASSWORD else 'sftp-WRONG-SECRET-2a7c' for f in store.flags]
    return store.url('x'), flags
  missing = {'s3': 's3://no-such-bucket/x', 'gcs': 'gs://no-such-bucket/x',
             'azure': 'azfs://devstoreaccount1/no-such-container/x'}[store.name]
  return missing, store.flags


def test_check_fails_naming_the_permission_and_the_stores_reason(store):
  dest, flags = unusable(store)
  proc = check('--dest', dest, *flags, env=store.env)
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert '  PUT     FAILED' in proc.stdout and '  LIST    FAILED' in proc.stdout
  assert 'verdict: NOT usable as dest' in proc.stdout


def test_a_missing_bucket_stops_the_run_naming_store_path_and_permission(s3_store, tmp_path):
  from apache_beam.options.pipeline_options import PipelineOptions
  fs.configure(PipelineOptions(s3_store.flags))
  samples.write_day(str(tmp_path / 'src'), DAY, EVENTS.slice(0, 100), files=1)
  proc = import_day(str(tmp_path / 'src'), 's3://no-such-bucket/lake', *s3_store.flags,
                    check=False)
  assert proc.returncode == 5, proc.stderr
  assert 'S3 refused to create s3://no-such-bucket/lake/' in proc.stderr
  assert 'NoSuchBucket' in proc.stderr and 'PUT permission' in proc.stderr
  assert 'Traceback' not in proc.stderr
  proc = import_day('s3://no-such-bucket/src', str(tmp_path / 'lake'), *s3_store.flags,
                    check=False)
  assert proc.returncode == 5 and "S3 bucket 'no-such-bucket' does not exist" in proc.stderr
  assert not (tmp_path / 'lake' / 'dt=2023-01-01').exists()


def store_secrets(store) -> list[str]:
  """The secret values in the store's flags, and the parts of a connection string that are."""
  values = dict(zip(store.flags[::2], store.flags[1::2]))
  found = [values.get(f) for f in ('--s3_secret_access_key', '--sftp_password',
                                   '--azure_connection_string')]
  conn = values.get('--azure_connection_string', '')
  found += [p.split('=', 1)[1] for p in conn.split(';') if p.startswith('AccountKey=')]
  return [s for s in found if s]


def test_secrets_never_reach_output_reports_manifests_or_errors(store, tmp_path):
  secrets = store_secrets(store)
  if not secrets:
    pytest.skip(f'{store.name}: the emulator takes no secret')
  src, lake, dest = store.url('sec', 'src'), store.url('sec', 'lake'), store.url('sec', 'dest')
  samples.write_day(src, DAY, EVENTS.slice(0, 200), files=1)
  report = tmp_path / 'report.json'
  # real processes: whatever reaches the terminal, also from outside Python's own streams
  runs = [import_day(src, lake, '--report', str(report), *store.flags, env=store.env, run=run_process),
          export_day(lake, dest, *store.flags, env=store.env, run=run_process),
          check('--dest', dest, *store.flags, env=store.env, run=run_process)]
  bad_dest, bad_flags = unusable(store)
  if store.name == 'azure':   # a wrong key: the failure must not echo it either
    wrong = 'AccountKey=' + 'V3JvbmdLZXlXcm9uZ0tleQ==' * 3
    bad_flags = [f.replace(f'AccountKey={secrets[-1]}', wrong) for f in store.flags]
    secrets.append(wrong.split('=', 1)[1])
  runs += [check('--dest', bad_dest, *bad_flags, env=store.env, run=run_process),
           import_day(src, bad_dest, *bad_flags, env=store.env, check=False, run=run_process),
           export_day(lake, bad_dest, *bad_flags, env=store.env, check=False, run=run_process)]
  assert [r.returncode for r in runs[3:]] == [1, 5, 5], [r.stderr[-800:] for r in runs[3:]]
  written = [report.read_text()] + [fs.read_bytes(p).decode(errors='replace')
                                    for root in (lake, dest)
                                    for p in fs.list_files(root) if p.endswith('.json')]
  assert len(written) >= 4   # the report twice (lake and --report), two manifests, history
  for text in [r.stdout for r in runs] + [r.stderr for r in runs] + written:
    for secret in secrets:
      assert secret not in text


RAW = samples.raw_events(DAY, 2000, seed=12)


def test_batch_ingest_reads_json_lines_from_the_store_into_a_lake_on_it(store, tmp_path):
  fs.write_bytes(store.url('raw', 'a.jsonl'), b'\n'.join(RAW[:1000]) + b'\n')
  fs.write_bytes(store.url('raw', 'b.jsonl'), b'\n'.join(RAW[1000:]) + b'\n')
  run_cli('pipelines.ingest', '--input', store.url('raw', '*.jsonl'), '--lake', store.url('ingest'),
          '--run_id', 'c1', *store.flags, env=store.env)
  (tmp_path / 'raw').mkdir()
  (tmp_path / 'raw' / 'a.jsonl').write_bytes(b'\n'.join(RAW) + b'\n')
  run_cli('pipelines.ingest', '--input', str(tmp_path / 'raw' / '*.jsonl'), '--lake',
          str(tmp_path / 'lake'), '--run_id', 'c1')
  day = fs.partition_dir(store.url('ingest'), '2023-01-01')
  assert '_SUCCESS' in names(day)
  key = lambda t: sorted(t.select(['insert_id', 'ts', 'event_key']).to_pylist(), key=str)
  assert key(read_day(day)) == key(read_day(str(tmp_path / 'lake' / 'dt=2023-01-01')))


def test_watch_lands_a_file_that_appears_on_the_store(store, tmp_path):
  now = int(time.time() * 1000)
  today = fs.partition_dir(str(tmp_path / 'lake'), datetime.datetime.fromtimestamp(
      now / 1000, datetime.timezone.utc).date().isoformat())
  with running_cli('pipelines.ingest', '--input', store.url('watched', '*.jsonl'), '--watch', '1s',
                   '--lake', str(tmp_path / 'lake'), '--streaming', '--flush_interval', '1s',
                   *store.flags, log=tmp_path / 'ingest.log', env=store.env) as proc:
    fs.write_bytes(store.url('watched', 'a.jsonl'),
                        b'\n'.join(event(now) for _ in range(200)) + b'\n')
    wait_for(lambda: parquet_rows(today) == 200, proc, 120)
  assert parquet_rows(today) == 200, (tmp_path / 'ingest.log').read_text()[-3000:]
