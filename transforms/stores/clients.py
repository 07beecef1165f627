"""The object stores' own clients, for the few things Beam's filesystems cannot do (one module
per store: transforms/stores/s3.py, gcs.py, azure.py, sftp.py; this one holds what they share:
the options, encryption flags, errors, secrets, and the dispatch of `put` and `open_write`):

- a 0-byte object on S3 (`_SUCCESS`): Beam writes every S3 object as a multipart upload, and S3
  refuses an upload with no parts;
- create-if-absent (locks): S3 `If-None-Match: *`, GCS `if_generation_match=0`, Azure
  `If-None-Match: *`, SFTP `O_EXCL`;
- customer-managed encryption on GCS (a Cloud KMS key per object) and Azure (an encryption scope
  per blob): Beam 2.77's gcsio and blobstorageio take neither, so every gs:// and azfs:// write,
  copy and lock goes through the writers here;
- bounded memory on Azure: Beam's writer spools a whole file and uploads it in one request;
  `azure.BlockWriter` stages 8 MiB blocks and commits the block list.

The clients are the ones Beam's filesystems use (same options, same credentials; for S3 the one
transforms/stores/s3.py builds), so a path Beam can read is a path these can write. Options come from
`FileSystems.set_options` (fs.configure at launch; Beam's worker harness does the same on
workers).
"""
import os
import re

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.compat import credentials
from transforms.compat import options as compat_options
from transforms.stores import s3, sftp

__all__ = ['BLOCK', 'KMS_KEY', 'EncryptionOptions', 'flag_problem', 'options', 'encryption',
           'use_emulator_credentials', 'bucket_and_key', 'StoreError', 'open_write', 'put',
           'SECRET_OPTIONS', 'secrets', 'redact', 'explain']

BLOCK = 8 << 20   # upload block (Azure), largest write handed to any store
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


def encryption() -> EncryptionOptions:
  return options().view_as(EncryptionOptions)


def use_emulator_credentials() -> None:
  """With STORAGE_EMULATOR_HOST set (a GCS emulator), Beam would look for Google credentials for
  about 27 s per process before it connects anonymously; an emulator needs none."""
  if os.environ.get('STORAGE_EMULATOR_HOST'):
    credentials.skip_google_credentials()


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


def open_write(path: str, content_type: str = 'application/octet-stream'):
  """A file object writing gs:// or azfs:// `path` in chunks or blocks, with the requested
  encryption. As a context manager it publishes the object on success; after an exception
  nothing becomes visible (the upload is cancelled or its blocks left uncommitted)."""
  from transforms.stores import azure, gcs
  if path.startswith('gs://'):
    return gcs.open_write(path, content_type)
  if path.startswith('azfs://'):
    return azure.BlockWriter(path, content_type)
  raise ValueError(f'no streaming writer of ours for {path}')


def put(path: str, data: bytes, exclusive: bool = False) -> bool:
  """Writes `data` to the object store path in one request; with `exclusive`, only if no object
  is there (False then). Schemes: s3, gs, azfs, sftp."""
  from transforms.stores import azure, gcs
  scheme = FileSystems.get_scheme(path)
  if scheme == 'sftp':
    if exclusive:
      return sftp.create_exclusive(path, data, options())
    with FileSystems.create(path) as f:
      f.write(data)
    return True
  stores = {'s3': s3.put, 'gs': gcs.put, 'azfs': azure.put}
  if scheme not in stores:
    raise ValueError(f'no store client for {path}')
  return stores[scheme](path, data, exclusive)


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
