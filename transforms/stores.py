"""The object stores' own clients, for the few things Beam's filesystems cannot do:

- a 0-byte object on S3 (`_SUCCESS`): Beam writes every S3 object as a multipart upload, and S3
  refuses an upload with no parts;
- create-if-absent (locks): S3 `If-None-Match: *`, GCS `if_generation_match=0`, Azure
  `If-None-Match: *`, SFTP `O_EXCL`.

The clients are the ones Beam's filesystems use (same options, same credentials; for S3 the one
transforms/s3.py builds), so a path Beam can read is a path these can write. Options come from `FileSystems.set_options` (storage.configure at launch; Beam's
worker harness does the same on workers).
"""
import functools
import re
import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from transforms import s3, sftp


def options() -> PipelineOptions:
  return FileSystems._pipeline_options or PipelineOptions([])


def use_emulator_credentials() -> None:
  """With STORAGE_EMULATOR_HOST set (a GCS emulator), Beam would look for Google credentials for
  about 27 s per process before it connects anonymously; an emulator needs none."""
  if os.environ.get('STORAGE_EMULATOR_HOST'):
    from apache_beam.internal.gcp import auth
    with auth._Credentials._credentials_lock:
      auth._Credentials._credentials, auth._Credentials._credentials_init = None, True


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
    blob = _gcs(id(options())).bucket(bucket).blob(key)
    try:
      blob.upload_from_string(data, if_generation_match=0 if exclusive else None)
    except exceptions.PreconditionFailed:
      return False
    return True
  if scheme == 'azfs':
    from azure.core import exceptions
    blob = _azure(id(options())).get_blob_client(bucket, key)
    try:
      blob.upload_blob(data, overwrite=not exclusive)   # overwrite=False sends If-None-Match: *
    except exceptions.ResourceExistsError:
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
