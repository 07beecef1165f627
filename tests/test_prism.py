"""Prism, Beam's Go runner, built by run.sh at the pinned Beam version into .tools/bin/prism: the
batch pipelines (import, export, batch ingest, backfill) give the same files, byte for byte, as
the default in-process runner. Prism runs the pipeline as a separate job service with the SDK
harness in this process (LOOPBACK), the path Flink and Dataflow v2 take."""
import json
import os

import pytest

from tests import servers
from tests.conftest import ROOT, run_cli
from tests import test_portable
from tests.test_portable import DAYS, files, import_range, report

pytestmark = [pytest.mark.prism, pytest.mark.process]

bucket = test_portable.bucket   # the same customer days, as a fixture of this module

PRISM = os.path.join(ROOT, '.tools', 'bin', 'prism')


@pytest.fixture(scope='module')
def prism(tmp_path_factory):
  """One Prism job service on loopback for the module (a child that dies with pytest)."""
  assert os.access(PRISM, os.X_OK), f'{PRISM} is missing: ./run.sh test builds it with go install'
  workdir = tmp_path_factory.mktemp('prism')
  server = servers.start([PRISM, '--job_port', '{port}', '--serve_http=false'], str(workdir),
                         'prism', servers.tcp_open)
  try:
    yield ['--runner=PortableRunner', f'--job_endpoint=localhost:{server.port}',
           '--environment_type=LOOPBACK']
  finally:
    server.stop()


def test_import_with_the_prism_runner_flag_equals_the_default_runner(bucket, tmp_path):
  """As a user runs it: --runner PrismRunner --prism_location (Prism started for the job)."""
  import_range(bucket, tmp_path / 'lake')
  import_range(bucket, tmp_path / 'lake-prism', '--runner', 'PrismRunner', '--prism_location',
               PRISM)
  expected = files(tmp_path / 'lake')
  assert len(expected) == 2 * 2 + 2       # two shards and one rejected file per day
  assert files(tmp_path / 'lake-prism') == expected
  default, other = report(tmp_path / 'lake'), report(tmp_path / 'lake-prism')
  assert [d['rows_written'] for d in other['days']] == [d['rows_written'] for d in default['days']]
  assert other['metrics'] == default['metrics']


def test_export_on_prism_equals_the_default_runner(prism, bucket, tmp_path):
  import_range(bucket, tmp_path / 'lake')
  for fmt, layout in (('parquet', 'hive'), ('csv', 'hourly'), ('jsonl', 'hive')):
    for name, flags in (('default', []), ('prism', prism)):
      run_cli('pipelines.export_events', '--lake', str(tmp_path / 'lake'), '--dest',
              str(tmp_path / f'{fmt}-{name}'), '--from_date', str(DAYS[0]), '--to_date',
              str(DAYS[-1]), '--format', fmt, '--layout', layout, *flags)
    assert files(tmp_path / f'{fmt}-prism') == files(tmp_path / f'{fmt}-default') != {}


def test_batch_ingest_on_prism_equals_the_default_runner(prism, tmp_path):
  archive = tmp_path / 'archive'
  archive.mkdir()
  for f in range(2):
    with open(archive / f'events-{f}.jsonl', 'w') as out:
      for n in range(500):
        i = f * 500 + n
        out.write(json.dumps({
            'insert_id': f'00000000-0000-4000-8000-{i % 900:012x}',   # some duplicates
            'event_key': 'purchase' if i % 3 else 'view', 'ts': 1672531200000 + i * 60_000,
            'identifiers': {'id': f'u{i}', 'device_id': f'd{i}'},
            'metric_value': '1.25' if i % 7 else 'oops',                # some rejected
            'hackle_properties': {'osname': 'iOS', 'appversion': '1.0'},
            'event_properties': {'n': i}}) + '\n')
  for name, flags in (('default', []), ('prism', prism)):
    run_cli('pipelines.ingest', '--input', str(archive / '*.jsonl'), '--lake',
            str(tmp_path / f'lake-{name}'), *flags)
  def content(lake):   # file names carry the run id: compare each folder's file contents
    return sorted((os.path.dirname(k), sha) for k, sha in files(lake).items())
  expected = content(tmp_path / 'lake-default')
  assert any(k.startswith('_rejected') for k, _ in expected) and len(expected) >= 2
  assert content(tmp_path / 'lake-prism') == expected


def test_backfill_on_prism_equals_the_default_runner(prism, bucket, tmp_path):
  import_range(bucket, tmp_path / 'lake')
  proc = run_cli('pipelines.backfill', 'import', '--source', bucket, '--lake',
                 str(tmp_path / 'lake-prism'), '--from_date', str(DAYS[0]), '--to_date',
                 str(DAYS[-1]), '--shards', '2', '--days_per_job', '1', *prism)
  assert '2 published, 0 skipped' in proc.stdout
  assert files(tmp_path / 'lake-prism') == files(tmp_path / 'lake')
