"""Customer-managed encryption on GCS (--gcs_kms_key_name) and Azure (--azure_encryption_scope),
and uploads in blocks. Neither emulator keeps the setting (gcp-storage-emulator drops
`kmsKeyName`, Azurite ignores `x-ms-encryption-scope`), so a recording proxy in front of each
(tests/servers.py) captures what the real commands send: every request that creates an object
must carry the key or scope, and every object left in the bucket must have been created so."""
import datetime
import os
import re
import urllib.parse

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import samples
from tests import servers
from tests.conftest import run_cli
from transforms.stores import azure, clients, fs, gcs

pytestmark = pytest.mark.engine

DAY = datetime.date(2023, 1, 1)
KMS_KEY = 'projects/acme/locations/asia-northeast3/keyRings/lake/cryptoKeys/events'
SCOPE = 'acme-lake-scope'


def write_everything(tmp_path, root: str, flags: list[str], env: dict | None = None) -> None:
  """Every kind of object eventferry writes: an import with rejected rows (spills, staged and
  moved shards, manifest, _SUCCESS, lock, run report, rejected rows), an export of it (plus the
  export history) and a preflight probe."""
  src = str(tmp_path / 'src')
  samples.write_day(src, DAY, samples.events(DAY, 2000, seed=5, invalid=0.03), files=2)
  lake, dest = f'{root}/lake', f'{root}/dest'
  run_cli('pipelines.import_events', '--source', src, '--date', DAY.isoformat(), '--lake', lake,
          '--shards', '2', *flags, env=env)
  run_cli('pipelines.export_events', '--lake', lake, '--date', DAY.isoformat(), '--dest', dest,
          *flags, env=env)
  run_cli('pipelines.check', '--dest', dest, *flags, env=env)


def assert_every_kind_was_created(names: set[str]) -> None:
  for kind in ('.parquet', '/_manifest.json', '/_SUCCESS', '.lock', 'export_history.json',
               '_rejected/', '_runs/', '.probe', '_shuffle/'):
    assert any(kind in n for n in names), (kind, sorted(names))


def gcs_creations(seen) -> list[tuple[str, str | None]]:
  """(object name, KMS key asked for) of every request that creates a GCS object: uploads
  (simple, multipart, resumable start) and rewrites. Beam's copy (copyTo, also inside batch
  requests) cannot carry a key, so none may be sent."""
  created = []
  for method, path, _, body in seen:
    assert 'copyTo' not in path and b'copyTo' not in body, path
    url = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(url.query)
    if method == 'POST' and url.path.startswith('/upload/') and 'upload_id' not in query:
      name = (query.get('name') or [re.search(rb'"name":\s*"([^"]+)"', body).group(1).decode()])[0]
      created.append((name, (query.get('kmsKeyName') or [None])[0]))
    elif '/rewriteTo/' in url.path:
      name = urllib.parse.unquote(url.path.split('/rewriteTo/b/', 1)[1].split('/o/', 1)[1])
      created.append((name, (query.get('destinationKmsKeyName') or [None])[0]))
  return created


def test_every_gcs_object_written_carries_the_kms_key(gcs_store, tmp_path):
  from google.cloud import storage as gcs
  proxy = servers.RecordingProxy(gcs_store.server.port)
  try:
    write_everything(tmp_path, 'gs://ferry/kms', ['--gcs_kms_key_name', KMS_KEY],
                     {'STORAGE_EMULATOR_HOST': proxy.endpoint})
  finally:
    proxy.stop()
  created = gcs_creations(proxy.seen)
  assert {key for _, key in created} == {KMS_KEY}, [c for c in created if c[1] != KMS_KEY]
  names = {name for name, _ in created}
  assert_every_kind_was_created(names)
  client = gcs.Client.create_anonymous_client()   # the emulator itself, not the proxy
  left = {b.name for b in client.list_blobs('ferry', prefix='kms/')}
  assert any(n.endswith('/_SUCCESS') for n in left) and left <= names, left - names


def azure_creations(seen) -> list[tuple[str, str, str | None]]:
  """(blob name, operation, encryption scope sent) of every request that writes blob data: Put
  Blob, Put Block, Put Block List. Azure's server-side Copy Blob cannot set a scope, so none
  may be sent."""
  created = []
  for method, path, headers, _ in seen:
    assert 'x-ms-copy-source' not in headers, path
    url = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(url.query)
    comp = (query.get('comp') or ['put'])[0]
    if method == 'PUT' and 'restype' not in query and comp in ('put', 'block', 'blocklist'):
      name = urllib.parse.unquote(url.path).split('/', 3)[3]   # /account/container/name
      created.append((name, comp, headers.get('x-ms-encryption-scope')))
  return created


def test_every_azure_blob_written_carries_the_encryption_scope(azure_store, tmp_path):
  from azure.storage.blob import BlobServiceClient
  proxy = servers.RecordingProxy(azure_store.server.port)
  conn = servers.azurite_connection_string(proxy.port)
  try:
    write_everything(tmp_path, 'azfs://devstoreaccount1/ferry/scope',
                     ['--azure_connection_string', conn, '--azure_encryption_scope', SCOPE])
  finally:
    proxy.stop()
  created = azure_creations(proxy.seen)
  assert {scope for _, _, scope in created} == {SCOPE}, [c for c in created if c[2] != SCOPE]
  names = {name for name, comp, _ in created if comp != 'block'}
  assert_every_kind_was_created(names)
  container = BlobServiceClient.from_connection_string(
      servers.azurite_connection_string(azure_store.server.port)).get_container_client('ferry')
  left = {b.name for b in container.list_blobs(name_starts_with='scope/')}
  assert any(n.endswith('/_SUCCESS') for n in left) and left <= names, left - names


def test_a_kms_key_that_is_not_a_key_name_is_refused_naming_the_flag():
  proc = run_cli('pipelines.check', '--dest', 'gs://ferry/x', '--gcs_kms_key_name',
                 'projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1', check=False)
  assert proc.returncode == 2, proc.stderr
  assert '--gcs_kms_key_name' in proc.stderr and 'projects/P/locations/L' in proc.stderr


BIG = os.urandom(1 << 20) * 20 + b'tail'   # 20 MiB and 4 bytes, in one write_bytes call


def through_proxy(name: str, store, proxy, monkeypatch) -> list[str]:
  """The store's flags with the proxy in place of the server, for this process's helpers."""
  if name == 'gcs':
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', proxy.endpoint)
    return []
  if name == 'azure':
    return ['--azure_connection_string', servers.azurite_connection_string(proxy.port)]
  return [f if f != store.server.endpoint else proxy.endpoint for f in store.flags]


@pytest.mark.parametrize('name', ['s3', 'gcs', 'azure'])
def test_a_big_write_reaches_the_store_in_blocks(name, request, monkeypatch):
  """One 20 MiB write_bytes call becomes several requests of at most 8 MiB each (S3 multipart
  parts, Azure blocks; GCS resumable chunks: 16 MiB), never one whole-file request."""
  store = request.getfixturevalue(f'{name}_store')
  proxy = servers.RecordingProxy(store.server.port)
  gcs._client.cache_clear()
  azure._client.cache_clear()
  try:
    fs.configure(PipelineOptions(through_proxy(name, store, proxy, monkeypatch)))
    path = store.url('blocks', 'big.bin')
    fs.write_bytes(path, BIG)
    assert fs.read_bytes(path) == BIG
  finally:
    proxy.stop()
    gcs._client.cache_clear()
    azure._client.cache_clear()
  sizes = [int(h.get('content-length') or 0) for m, _, h, _ in proxy.seen if m in ('PUT', 'POST')]
  data = [s for s in sizes if s > 1 << 20]
  limit = gcs.CHUNK if name == 'gcs' else clients.BLOCK
  assert len(data) >= 2 and max(sizes) <= limit + 4096, sizes
  fs.configure(PipelineOptions(store.flags))


@pytest.mark.parametrize('name', ['gcs', 'azure'])
def test_a_write_that_fails_midway_leaves_no_object(name, request):
  """An exception inside open_write after a block was sent: the GCS resumable upload is
  cancelled, the Azure blocks stay uncommitted; nothing appears at the path."""
  store = request.getfixturevalue(f'{name}_store')
  fs.configure(PipelineOptions(store.flags))
  path = store.url('aborted', 'part.bin')
  with pytest.raises(RuntimeError, match='encoder broke'):
    with fs.open_write(path) as f:
      f.write(BIG[:clients.BLOCK + 1])
      raise RuntimeError('encoder broke')
  assert not fs.exists(path)


def test_help_lists_the_store_flags_and_steers_the_password_to_the_environment():
  out = ' '.join(run_cli('pipelines.export_events', '--help').stdout.split())
  for flag in ('--gcs_kms_key_name', '--azure_encryption_scope', '--s3_sse', '--sftp_password'):
    assert flag in out
  assert 'Prefer the environment variable SFTP_PASSWORD' in out
