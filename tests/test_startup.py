"""What a run imports before a row moves (`python -X importtime`): a local run loads no store
client of its own that it does not use. (Beam's own import loads boto3 and google-cloud-storage
for its filesystems whatever the paths: that is Beam's floor, not ours.)"""
import datetime

import pytest

from pipelines import samples
from tests.conftest import run_process

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
