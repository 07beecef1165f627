"""What a run imports before a row moves (`python -X importtime`): a local run loads no store
client it does not use, neither the project's nor those Beam's import would load
(transforms/compat/startup.py), and each store still gets its filesystem on its first path."""
import csv
import datetime
import subprocess
import sys

import pytest

from pipelines import samples
from tests.conftest import ROOT, run_process

pytestmark = pytest.mark.process   # what a fresh interpreter imports


def imported(stderr: str) -> set[str]:
  """Module names of -X importtime's report."""
  return {line.rsplit('|', 1)[1].strip() for line in stderr.splitlines()
          if line.startswith('import time:') and line.count('|') == 2}


def test_a_local_import_loads_no_sftp_client(tmp_path):
  day = datetime.date(2023, 1, 1)
  samples.write_day(str(tmp_path / 'bucket'), day, samples.events(day, 50, seed=2), files=2)
  proc = run_process('pipelines.import_events', '--source', str(tmp_path / 'bucket'),
                     '--date', str(day), '--lake', str(tmp_path / 'lake'),
                     env={'PYTHONPROFILEIMPORTTIME': '1'})
  names = imported(proc.stderr)
  assert 'transforms.stores.sftp' in names and 'pyarrow' in names   # the report is read right
  assert not {n for n in names if n.split('.')[0] in ('asyncssh', 'paramiko')}


# What the clients' packages load once they are imported (-X importtime also lists an import
# that was refused, so the refused names themselves prove nothing).
CLIENTS = ('google.cloud.storage.', 'azure.storage.blob.', 'google.cloud.pubsub_v1.',
           'google.cloud.bigquery.', 'google.cloud.dataflow_v1beta3', 'pandas.',
           'apache_beam.io.gcp.gcsio', 'apache_beam.io.aws.s3io', 'apache_beam.io.azure.blobstorageio',
           'boto3.', 'botocore.', 'apache_beam.io.aws.clients.s3.boto3_client')


def test_a_local_export_loads_no_cloud_client_nor_pandas(tmp_path):
  from tests.exportkit import lake_day, lake_row
  lake_day(str(tmp_path / 'lake'), '2023-01-01', [[lake_row(i) for i in range(5)]])
  proc = run_process('pipelines.export_events', '--lake', str(tmp_path / 'lake'), '--date', '2023-01-01',
                     '--dest', str(tmp_path / 'out'), '--format', 'csv',
                     env={'PYTHONPROFILEIMPORTTIME': '1'})
  names = imported(proc.stderr)
  assert 'apache_beam' in names and 'pyarrow' in names   # the report is read right
  assert not [n for n in names if n.startswith(CLIENTS)]
  with open(tmp_path / 'out' / 'dt=2023-01-01' / 'part-00000-of-00001.csv') as f:
    assert len(list(csv.reader(f))) == 1 + 5   # the header and the rows, read back by csv


def python(code: str) -> str:
  """What a fresh interpreter prints: the start-up hooks act once, before Beam's import."""
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        check=True, timeout=300).stdout.strip()


@pytest.mark.parametrize('path,filesystem', [('gs://bucket/a', 'GCSFileSystem'),
                                             ('s3://bucket/a', 'S3FileSystem'),
                                             ('azfs://account/container/a', 'BlobStorageFileSystem')])
def test_a_store_left_out_of_beams_import_gets_its_filesystem_on_its_first_path(path, filesystem):
  out = python('from transforms.compat import startup\n'
               'from apache_beam.io.filesystems import FileSystems\n'
               'before = sorted(startup.deferred_schemes())\n'
               f'print(before, type(FileSystems.get_filesystem({path!r})).__name__,\n'
               f'      {path.split(":")[0]!r} in startup.deferred_schemes())')
  assert out == f"['azfs', 'gs', 'hdfs', 's3'] {filesystem} False"


def test_the_dataflow_api_is_imported_when_a_dataflow_job_is_launched():
  out = python('import transforms\n'
               'from apache_beam.options.pipeline_options import PipelineOptions\n'
               'from apache_beam.runners.dataflow import dataflow_runner as d\n'
               'print(d.dataflow_api)\n'
               'try:\n'
               '  d.DataflowRunner().run_pipeline(None, PipelineOptions([]))\n'
               'except Exception:\n'
               '  pass   # no pipeline to launch: what matters is what was imported first\n'
               'print(d.dataflow_api.__name__, d.dataflow_api.JobState.__name__)')
  assert out.splitlines() == ['None', 'google.cloud.dataflow JobState']
