"""The portable path (pipeline proto, separate job service, SDK harness), as Flink, Spark and
Dataflow v2 run it: import, export and backfill through Beam's local job service give the same
files, byte for byte, as the default in-process runner."""
import datetime
import hashlib
import json
import os
import sys

import pytest

from pipelines import samples
from tests import servers
from tests.conftest import run_cli

pytestmark = pytest.mark.engine

DAYS = [datetime.date(2023, 1, 1), datetime.date(2023, 1, 2)]


@pytest.fixture(scope='module')
def portable(tmp_path_factory):
  """Beam's job service on loopback (a child that dies with pytest); the flags that send a
  pipeline to it."""
  workdir = tmp_path_factory.mktemp('jobs')
  server = servers.start([sys.executable, '-m',
                          'apache_beam.runners.portability.local_job_service_main',
                          '--port', '{port}', '--staging_dir', str(workdir)],
                         str(workdir), 'job-service', servers.tcp_open)
  try:
    yield ['--runner=PortableRunner', f'--job_endpoint=localhost:{server.port}',
           '--environment_type=LOOPBACK']
  finally:
    server.stop()


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
  root = tmp_path_factory.mktemp('bucket')
  for i, day in enumerate(DAYS):
    samples.write_day(str(root), day, samples.events(day, 3000, seed=i), files=2)
  return str(root)


def files(root) -> dict[str, str]:
  """Every data file under root (not reports, manifests or state) -> sha256 of its bytes."""
  out = {}
  for directory, _, names in os.walk(root):
    for name in names:
      if name.startswith('part-'):
        path = os.path.join(directory, name)
        out[os.path.relpath(path, root)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


def import_range(bucket, lake, *flags):
  return run_cli('pipelines.import_events', '--source', bucket, '--lake', str(lake),
                 '--from_date', str(DAYS[0]), '--to_date', str(DAYS[-1]), '--shards', '2', *flags)


def report(lake) -> dict:
  runs = os.path.join(lake, '_runs')
  (name,) = os.listdir(runs)
  return json.loads(open(os.path.join(runs, name)).read())


def test_import_and_export_through_the_job_service_equal_the_default_runner(
    portable, bucket, tmp_path):
  import_range(bucket, tmp_path / 'lake')
  import_range(bucket, tmp_path / 'lake-portable', *portable)
  expected = files(tmp_path / 'lake')
  assert len(expected) == 2 * 2 + 2       # two shards and one rejected file per day
  assert files(tmp_path / 'lake-portable') == expected
  default, other = report(tmp_path / 'lake'), report(tmp_path / 'lake-portable')
  assert [d['rows_written'] for d in other['days']] == [d['rows_written'] for d in default['days']]
  assert other['metrics']['eventferry.read.rows_in'] == sum(d['rows_in'] for d in other['days'])
  assert other['metrics'] == default['metrics']

  for fmt in ('parquet', 'csv'):
    for name, flags in (('default', []), ('portable', portable)):
      run_cli('pipelines.export_events', '--lake', str(tmp_path / 'lake'), '--dest',
              str(tmp_path / f'{fmt}-{name}'), '--from_date', str(DAYS[0]), '--to_date',
              str(DAYS[-1]), '--format', fmt, *flags)
    assert files(tmp_path / f'{fmt}-portable') == files(tmp_path / f'{fmt}-default') != {}


def test_backfill_through_the_job_service_equals_the_default_runner(portable, bucket, tmp_path):
  import_range(bucket, tmp_path / 'lake')
  proc = run_cli('pipelines.backfill', 'import', '--source', bucket, '--lake',
                 str(tmp_path / 'lake-portable'), '--from_date', str(DAYS[0]), '--to_date',
                 str(DAYS[-1]), '--shards', '2', '--days_per_job', '1', *portable)
  assert '2 published, 0 skipped' in proc.stdout
  assert files(tmp_path / 'lake-portable') == files(tmp_path / 'lake')
