"""The object stores' own clients, for the few things Beam's filesystems cannot do:

- a 0-byte object on S3 (`_SUCCESS`): Beam writes every S3 object as a multipart upload, and S3
  refuses an upload with no parts;
- create-if-absent (locks): S3 `If-None-Match: *`, GCS `if_generation_match=0`, Azure
  `If-None-Match: *`, SFTP `O_EXCL`;
- customer-managed encryption on GCS (a Cloud KMS key per object) and Azure (an encryption scope
  per blob): Beam 2.77's gcsio and blobstorageio take neither, so every gs:// and azfs:// write,
  copy and lock goes through the writers here;
- bounded memory on Azure: Beam's writer spools a whole file and uploads it in one request;
  `AzureBlockWriter` stages 8 MiB blocks and commits the block list.

The clients are the ones Beam's filesystems use (same options, same credentials; for S3 the one
transforms/stores/s3.py builds), so a path Beam can read is a path these can write. Options come from
`FileSystems.set_options` (fs.configure at launch; Beam's worker harness does the same on
workers).
"""
import functools
import io
import os
import re
import shutil
import time

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.compat import credentials
from transforms.compat import options as compat_options
from transforms.stores import s3, sftp

__all__ = ['BLOCK', 'GCS_CHUNK', 'KMS_KEY', 'EncryptionOptions', 'flag_problem', 'options',
           'use_emulator_credentials', 's3_client', 'bucket_and_key', 'StoreError',
           'require_s3_bucket', 's3_delete', 's3_rename', 'azure_exists', 'open_write',
           'AzureBlockWriter', 'gcs_rename', 'azure_rename', 'put', 'SECRET_OPTIONS', 'secrets',
           'redact', 'explain']

BLOCK = 8 << 20   # upload block (Azure), largest write handed to any store
GCS_CHUNK = 16 << 20   # resumable upload chunk, as Beam's writer: half the requests of 8 MiB
KMS_KEY = re.compile(r'projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+')


class EncryptionOptions(PipelineOptions):
  """Customer-managed encryption of every object written on GCS and Azure (S3: transforms/stores/s3.py)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--gcs_kms_key_name', default=None,
                        help='Cloud KMS key that encrypts every gs:// object written '
                        '(projects/P/locations/L/keyRings/R/cryptoKeys/K; default: the '
                        "bucket's default key)")
    parser.add_argument('--azure_encryption_scope', default=None,
                        help='encryption scope of every azfs:// blob written (default: the '
                        "container's default scope)")


def flag_problem(opts: PipelineOptions) -> str | None:
  """What is wrong with the encryption flags, for a fail-fast usage error; None when nothing."""
  key = opts.view_as(EncryptionOptions).gcs_kms_key_name
  if key is not None and not KMS_KEY.fullmatch(key):
    return (f'--gcs_kms_key_name {key!r} is not a Cloud KMS key name: use '
            'projects/P/locations/L/keyRings/R/cryptoKeys/K (no cryptoKeyVersions)')
  return None


def options() -> PipelineOptions:
  return compat_options.filesystem_options() or PipelineOptions([])


def _encryption() -> EncryptionOptions:
  return options().view_as(EncryptionOptions)


def use_emulator_credentials() -> None:
  """With STORAGE_EMULATOR_HOST set (a GCS emulator), Beam would look for Google credentials for
  about 27 s per process before it connects anonymously; an emulator needs none."""
  if os.environ.get('STORAGE_EMULATOR_HOST'):
    credentials.skip_google_credentials()


@functools.lru_cache(maxsize=8)
def _gcs(opts_id: int):
  from apache_beam.io.gcp import gcsio
  return gcsio.create_storage_client(options())


@functools.lru_cache(maxsize=8)
def _azure(opts_id: int):
  from apache_beam.io.azure import blobstorageio
  return blobstorageio.BlobStorageIO(pipeline_options=options()).client


def s3_client():
  return s3._cached(options())


def bucket_and_key(path: str) -> tuple[str, str]:
  """s3://b/k, gs://b/k -> (b, k); azfs://account/container/k -> (container, k)."""
  rest = path.split('://', 1)[1]
  if path.startswith('azfs://'):
    rest = rest.split('/', 1)[1]
  bucket, _, key = rest.partition('/')
  return bucket, key


class StoreError(OSError):
  """A store refused or lacks something (a bucket, a permission); the message names the store,
  the path and what is missing. An OSError, as a failed local file operation is."""


def require_s3_bucket(path: str) -> None:
  """Beam lists a missing S3 bucket as empty (it ignores 404s); an empty listing is checked here
  so that a wrong bucket name is an error, not a day without data. A one-key listing of the same
  prefix needs only the ListBucket permission the seeds grant (HeadBucket would need more)."""
  import botocore.exceptions
  bucket, key = bucket_and_key(path)
  try:
    s3_client().list_objects_v2(Bucket=bucket, Prefix=key.rstrip('/') + '/', MaxKeys=1)
  except botocore.exceptions.ClientError as e:
    if e.response.get('Error', {}).get('Code') == 'NoSuchBucket':
      raise StoreError(f'S3 bucket {bucket!r} does not exist (path {path}): check the bucket '
                       'name, the region and --s3_endpoint_url') from None
    raise


def s3_delete(paths: list[str]) -> None:
  """One DeleteObject per key: Beam's batch DeleteObjects reports per-key failures in a 200
  reply, and moto with IAM on checks it against the bucket instead of each key."""
  for path in paths:
    s3_client().delete_object(Bucket=bucket_and_key(path)[0], Key=bucket_and_key(path)[1])


def s3_rename(sources: list[str], destinations: list[str]) -> None:
  """Copy (multipart for big objects, with the encryption settings), then delete the source."""
  for src, dst in zip(sources, destinations):
    (sb, sk), (db, dk) = bucket_and_key(src), bucket_and_key(dst)
    s3_client().copy({'Bucket': sb, 'Key': sk}, db, dk)
  s3_delete(sources)


def azure_exists(path: str) -> bool:
  return _azure(id(options())).get_blob_client(*bucket_and_key(path)).exists()


def _gcs_blob(path: str):
  """The blob at a gs:// path, carrying --gcs_kms_key_name for whatever creates it."""
  bucket, key = bucket_and_key(path)
  return _gcs(id(options())).bucket(bucket).blob(
      key, kms_key_name=_encryption().gcs_kms_key_name)


def _azure_scope() -> dict:
  scope = _encryption().azure_encryption_scope
  return {'encryption_scope': scope} if scope else {}


def open_write(path: str, content_type: str = 'application/octet-stream'):
  """A file object writing gs:// or azfs:// `path` in chunks (GCS_CHUNK) or blocks (BLOCK), with
  the requested encryption. As a context manager it publishes the object on success; after an
  exception nothing becomes visible (the upload is cancelled or its blocks left uncommitted)."""
  if path.startswith('gs://'):
    from google.cloud.storage.fileio import BlobWriter
    from google.cloud.storage.retry import DEFAULT_RETRY
    return BlobWriter(_gcs_blob(path), chunk_size=GCS_CHUNK, content_type=content_type,
                      ignore_flush=True, retry=DEFAULT_RETRY)   # resumable: safe to retry
  if path.startswith('azfs://'):
    return AzureBlockWriter(path, content_type)
  raise ValueError(f'no streaming writer of ours for {path}')


class AzureBlockWriter(io.RawIOBase):
  """Streams a block blob: every BLOCK bytes become one Put Block, closing commits the block
  list (Put Block List), so memory holds one block, never the file. Both requests carry
  --azure_encryption_scope, as Azure requires."""

  def __init__(self, path: str, content_type: str):
    from azure.storage.blob import ContentSettings
    super().__init__()
    self._blob = _azure(id(options())).get_blob_client(*bucket_and_key(path))
    self._settings = ContentSettings(content_type=content_type)
    self._pending = bytearray()
    self._blocks: list[str] = []

  def writable(self) -> bool:
    return True

  def write(self, data) -> int:
    view = memoryview(data).cast('B')
    size = len(view)
    if self._pending:   # top up the block a previous write began
      take = BLOCK - len(self._pending)
      self._pending += view[:take]
      view = view[take:]
      if len(self._pending) < BLOCK:
        return size
      self._stage(bytes(self._pending))
      self._pending.clear()
    while len(view) >= BLOCK:
      self._stage(view[:BLOCK].tobytes())
      view = view[BLOCK:]
    self._pending += view
    return size

  def _stage(self, block: bytes) -> None:
    block_id = f'{len(self._blocks):06d}'   # equal lengths, as Azure requires per blob
    self._blob.stage_block(block_id, block, length=len(block), **_azure_scope())
    self._blocks.append(block_id)

  def close(self) -> None:
    if not self.closed:
      if self._pending:
        self._stage(bytes(self._pending))
        self._pending.clear()
      self._blob.commit_block_list(self._blocks, content_settings=self._settings,
                                   **_azure_scope())
    super().close()

  def __exit__(self, kind, error, tb):
    if kind is None:
      self.close()
    else:   # leave the staged blocks uncommitted: Azure drops them after a week
      self._pending.clear()
      super().close()


def gcs_rename(sources: list[str], destinations: list[str]) -> None:
  """Server-side rewrite with the KMS key (Beam's copy cannot pass one), then delete the source.
  A rewrite of a big object may take several calls; each continues with the previous token."""
  for src, dst in zip(sources, destinations):
    source, target, token = _gcs_blob(src), _gcs_blob(dst), None
    while True:
      token, _, _ = target.rewrite(source, token=token)
      if token is None:
        break
  FileSystems.delete(sources)


def azure_rename(sources: list[str], destinations: list[str]) -> None:
  """Copy, wait until Azure says the copy succeeded, then delete the sources. Beam's rename
  deletes the source right after *starting* Copy Blob, which Azure may finish asynchronously.
  With an encryption scope the copy streams through AzureBlockWriter: Copy Blob cannot set a
  scope, and Copy Blob From URL (which can) needs a SAS for the source and stops at 256 MiB."""
  client = _azure(id(options()))
  for src, dst in zip(sources, destinations):
    if _encryption().azure_encryption_scope:
      with FileSystems.open(src, compression_type=CompressionTypes.UNCOMPRESSED) as r, \
          open_write(dst) as w:
        shutil.copyfileobj(r, w, BLOCK)
      continue
    target = client.get_blob_client(*bucket_and_key(dst))
    status = target.start_copy_from_url(client.get_blob_client(*bucket_and_key(src)).url)
    status = status['copy_status']
    while status == 'pending':
      time.sleep(0.2)
      status = target.get_blob_properties().copy.status
    if status != 'success':
      raise OSError(f'Azure copy of {src} to {dst} ended {status}')
  FileSystems.delete(sources)


def put(path: str, data: bytes, exclusive: bool = False) -> bool:
  """Writes `data` to the object store path in one request; with `exclusive`, only if no object
  is there (False then). Schemes: s3, gs, azfs, sftp."""
  scheme = FileSystems.get_scheme(path)
  if scheme == 'sftp':
    if exclusive:
      return sftp.create_exclusive(path, data, options())
    with FileSystems.create(path) as f:
      f.write(data)
    return True
  bucket, key = bucket_and_key(path)
  if scheme == 's3':
    import botocore.exceptions
    try:
      s3_client().put_object(Bucket=bucket, Key=key, Body=data,
                             **({'IfNoneMatch': '*'} if exclusive else {}))
    except botocore.exceptions.ClientError as e:
      if e.response.get('Error', {}).get('Code') in ('PreconditionFailed', '412'):
        return False
      raise
    return True
  if scheme == 'gs':
    from google.api_core import exceptions
    blob = _gcs_blob(path)
    try:
      blob.upload_from_string(data, if_generation_match=0 if exclusive else None)
    except exceptions.PreconditionFailed:
      return False
    return True
  if scheme == 'azfs':
    import azure.core.exceptions
    blob = _azure(id(options())).get_blob_client(bucket, key)
    try:
      # overwrite=False sends If-None-Match: *
      blob.upload_blob(data, overwrite=not exclusive, **_azure_scope())
    except azure.core.exceptions.ResourceExistsError:
      return False
    return True
  raise ValueError(f'no store client for {path}')


SECRET_OPTIONS = ('s3_secret_access_key', 's3_session_token', 'azure_connection_string',
                  'sftp_password')
_SECRET_PATTERNS = re.compile(r'(AccountKey=|SharedAccessSignature=|[?&]sig=)[^;&\s\'"]+')


def secrets(opts: PipelineOptions | None = None) -> list[str]:
  """The secret values the store options hold, longest first (a connection string contains its
  key). Environment fallbacks count too."""
  values = (opts or options()).get_all_options()
  found = [values.get(name) for name in SECRET_OPTIONS]
  found += [os.environ.get(v) for v in ('SFTP_PASSWORD', 'AWS_SECRET_ACCESS_KEY',
                                        'AWS_SESSION_TOKEN', 'AZURE_STORAGE_CONNECTION_STRING')]
  parts = [p.split('=', 1)[1] for s in found if s and ';' in s for p in s.split(';') if '=' in p
           and p.split('=', 1)[0] in ('AccountKey', 'SharedAccessSignature')]
  return sorted({s for s in found + parts if s and len(s) >= 6}, key=len, reverse=True)


def redact(text: str, opts: PipelineOptions | None = None) -> str:
  for secret in secrets(opts):
    text = text.replace(secret, '***')
  return _SECRET_PATTERNS.sub(r'\1***', text)


def explain(e: BaseException) -> str:
  """One line for a storage error: the innermost cause as the store said it (its code names the
  missing permission or bucket: AccessDenied, NoSuchBucket, ...), secrets removed."""
  while True:
    details = getattr(e, 'exception_details', None)
    if isinstance(details, dict) and details:
      e = next(iter(details.values()))
    elif e.__cause__ is not None:
      e = e.__cause__
    else:
      break
  return redact(f'{type(e).__name__}: {e}'.splitlines()[0])[:400].rstrip('. ')
