"""The ways customers hand us access besides keys: an Azure container SAS token (Adobe's Data
Landing Zone is an Azure container reached by SAS) and an SFTP private key. Real servers
(Azurite, asyncssh); the real commands; secrets checked out of every output."""
import datetime
import os

import pytest

from pipelines import samples
from tests import servers
from tests.conftest import run_cli, run_process
from transforms.stores import fs

pytestmark = pytest.mark.process

DAY = datetime.date(2023, 1, 1)


@pytest.fixture(scope='module')
def lake(tmp_path_factory):
  root = tmp_path_factory.mktemp('access')
  samples.write_day(str(root / 'src'), DAY, samples.events(DAY, 500, seed=5), files=1)
  run_cli('pipelines.import_events', '--source', str(root / 'src'), '--date', str(DAY),
          '--lake', str(root / 'lake'))
  return str(root / 'lake')


def export(lake, dest, *flags, check=True):
  """A real process: the tests look for secrets in all it prints."""
  return run_process('pipelines.export_events', '--lake', lake, '--date', str(DAY), '--dest', dest,
                 '--format', 'jsonl', *flags, check=check)


def sas_connection_string(server, container: str, permission: str) -> tuple[str, str]:
  """A connection string holding only a container SAS (no account key), and its signature."""
  from azure.storage.blob import ContainerSasPermissions, generate_container_sas
  token = generate_container_sas(
      'devstoreaccount1', container, account_key=servers.AZURITE_KEY,
      permission=ContainerSasPermissions.from_string(permission),
      expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
  signature = dict(p.split('=', 1) for p in token.split('&'))['sig']
  return (f'BlobEndpoint={server.endpoint}/devstoreaccount1;SharedAccessSignature={token}',
          signature)


def test_export_to_an_azure_container_reached_by_a_sas_token(azure_store, lake):
  from azure.storage.blob import BlobServiceClient
  BlobServiceClient.from_connection_string(
      servers.azurite_connection_string(azure_store.server.port)).create_container('landing')
  conn, signature = sas_connection_string(azure_store.server, 'landing', 'racwdl')
  dest = 'azfs://devstoreaccount1/landing/eventferry'
  runs = [export(lake, dest, '--azure_connection_string', conn),
          run_process('pipelines.check', '--dest', dest, '--azure_connection_string', conn, check=False)]
  assert runs[1].returncode == 0 and runs[1].stdout.count('OK') == 4, runs[1].stdout
  from apache_beam.options.pipeline_options import PipelineOptions
  fs.configure(PipelineOptions(azure_store.flags))   # read back with the account key
  day = fs.partition_dir(dest, str(DAY))
  files = fs.list_files(day)
  assert [p.rsplit('/', 1)[1] for p in sorted(files)] == [
      '_SUCCESS', '_manifest.json', 'part-00000-of-00001.jsonl']
  assert fs.read_bytes(fs.join(day, 'part-00000-of-00001.jsonl')).count(b'\n') > 400

  # A read-and-list-only token (what a customer may hand out by mistake): refused, named, no secret.
  read_only, signature2 = sas_connection_string(azure_store.server, 'landing', 'rl')
  runs.append(export(lake, 'azfs://devstoreaccount1/landing/other', '--azure_connection_string',
                     read_only, check=False))
  assert runs[-1].returncode == 5, runs[-1].stderr[-1500:]
  assert 'azfs://devstoreaccount1/landing/other' in runs[-1].stderr
  assert 'Traceback' not in runs[-1].stderr
  for text in [r.stdout + r.stderr for r in runs]:
    assert signature not in text and signature2 not in text


def test_export_to_sftp_with_a_private_key_and_no_password(tmp_path, lake):
  import asyncssh
  key = str(tmp_path / 'id_ed25519')
  private = asyncssh.generate_private_key('ssh-ed25519')
  private.write_private_key(key)
  private.write_public_key(key + '.pub')
  workdir = str(tmp_path / 'server')
  os.makedirs(workdir)
  server = servers.sftp(workdir, 'keyuser', 'password-not-given-sftp-3c9e', client_key=key)
  try:
    known = ['--sftp_known_hosts', os.path.join(workdir, 'known_hosts')]
    dest = f'sftp://keyuser@{servers.HOST}:{server.port}/out'
    export(lake, dest, '--sftp_private_key', key, *known)
    landed = os.path.join(workdir, 'sftp-root', 'out', 'dt=2023-01-01')
    assert sorted(os.listdir(landed)) == ['_SUCCESS', '_manifest.json', 'part-00000-of-00001.jsonl']

    other = asyncssh.generate_private_key('ssh-ed25519')   # a key the server does not know
    other.write_private_key(str(tmp_path / 'other'))
    proc = export(lake, dest + '2', '--sftp_private_key', str(tmp_path / 'other'), *known,
                  check=False)
    assert proc.returncode == 5, proc.stderr[-1500:]
    assert dest + '2' in proc.stderr and 'Traceback' not in proc.stderr
    assert not os.path.exists(os.path.join(workdir, 'sftp-root', 'out2', 'dt=2023-01-01'))
  finally:
    server.stop()
