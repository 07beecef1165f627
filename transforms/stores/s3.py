"""S3 access beyond Beam's S3Options: STS AssumeRole with an ExternalId (seed 000: the customer's
role trusts ours only with the ExternalId they chose), refreshed before it expires, and
server-side encryption on every object written (SSE-S3 or SSE-KMS with a key id).

Beam builds its boto3 S3 client from S3Options alone and has no hook for either, so `client()`
builds the one client everything uses, and Beam's client class is pointed at it here (importing
this module arranges it, for when Beam's S3 client module is imported; transforms/stores/fs.py
imports this one, so workers get it too).
"""
import datetime
import functools

from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from transforms.compat import credentials, filesystems
from transforms.stores import clients

__all__ = ['ROLE_SECONDS', 'WRITES', 'S3AccessOptions', 'client', 'require_bucket', 'delete', 'rename', 'put']

ROLE_SECONDS = 3600   # botocore refreshes 15 minutes before expiry, so long jobs never see it
# Requests that create objects: they carry the encryption settings.
WRITES = ('PutObject', 'CreateMultipartUpload', 'CopyObject')


class S3AccessOptions(PipelineOptions):
  """Role and encryption for s3:// paths (keys, endpoint, region: Beam's --s3_* options)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--s3_role_arn', default=None,
                        help='assume this IAM role (STS AssumeRole) for every S3 request')
    parser.add_argument('--s3_external_id', default=None,
                        help="the ExternalId the role's trust policy requires")
    parser.add_argument('--s3_role_session_name', default='eventferry',
                        help='session name recorded in the customer\'s CloudTrail')
    parser.add_argument('--s3_sts_endpoint_url', default=None,
                        help='STS endpoint (default: AWS; tests: the emulator)')
    parser.add_argument('--s3_sse', default=None, choices=['AES256', 'aws:kms'],
                        help='server-side encryption of every object written: AES256 (SSE-S3) '
                        'or aws:kms (SSE-KMS, with --s3_sse_kms_key_id)')
    parser.add_argument('--s3_sse_kms_key_id', default=None,
                        help='KMS key id or ARN for --s3_sse aws:kms')


def _role_credentials(o: S3Options, a: S3AccessOptions):
  """Credentials of the assumed role that renew themselves (AssumeRole again) before expiry."""
  import boto3
  import botocore.credentials
  sts = boto3.client('sts', endpoint_url=a.s3_sts_endpoint_url or None,
                     region_name=o.s3_region_name, aws_access_key_id=o.s3_access_key_id,
                     aws_secret_access_key=o.s3_secret_access_key,
                     aws_session_token=o.s3_session_token)

  def assume():
    kwargs = {'ExternalId': a.s3_external_id} if a.s3_external_id else {}
    c = sts.assume_role(RoleArn=a.s3_role_arn, RoleSessionName=a.s3_role_session_name,
                        DurationSeconds=ROLE_SECONDS, **kwargs)['Credentials']
    expiry = c['Expiration']
    if isinstance(expiry, datetime.datetime):
      expiry = expiry.isoformat()
    return {'access_key': c['AccessKeyId'], 'secret_key': c['SecretAccessKey'],
            'token': c['SessionToken'], 'expiry_time': expiry}

  return botocore.credentials.RefreshableCredentials.create_from_metadata(
      metadata=assume(), refresh_using=assume, method='sts-assume-role')


def _encrypt(a: S3AccessOptions):
  """A request hook adding the encryption parameters to object-creating requests."""
  extra = {'ServerSideEncryption': a.s3_sse}
  if a.s3_sse_kms_key_id:
    extra['SSEKMSKeyId'] = a.s3_sse_kms_key_id

  def add(params, **_):
    params.update(extra)
  return add


def client(options: PipelineOptions):
  """The S3 client for these options: Beam's settings plus role and encryption. boto3 is
  imported here, by the first S3 request: 0.2 s of start-up that a run without s3:// paths skips."""
  import boto3
  import botocore.session
  o, a = options.view_as(S3Options), options.view_as(S3AccessOptions)
  session = botocore.session.get_session()
  keys = {'aws_access_key_id': o.s3_access_key_id,
          'aws_secret_access_key': o.s3_secret_access_key,
          'aws_session_token': o.s3_session_token}
  if a.s3_role_arn:
    credentials.use_credentials(session, _role_credentials(o, a))
    keys = {}
  s3 = boto3.Session(botocore_session=session).client(
      's3', endpoint_url=o.s3_endpoint_url, region_name=o.s3_region_name,
      api_version=o.s3_api_version, use_ssl=not o.s3_disable_ssl, verify=o.s3_verify, **keys)
  if a.s3_sse:
    for op in WRITES:
      s3.meta.events.register(f'before-parameter-build.s3.{op}', _encrypt(a))
  return s3


@functools.lru_cache(maxsize=8)
def _cached(options: PipelineOptions):
  return client(options)


filesystems.hand_beam_s3_client(_cached)   # Beam's S3 filesystem uses our client too


def _client():
  """The client for the filesystem options in force (fs.configure)."""
  return _cached(clients.options())


def require_bucket(path: str) -> None:
  """Beam lists a missing S3 bucket as empty (it ignores 404s); an empty listing is checked here
  so that a wrong bucket name is an error, not a day without data. A one-key listing of the same
  prefix needs only the ListBucket permission the seeds grant (HeadBucket would need more)."""
  import botocore.exceptions
  bucket, key = clients.bucket_and_key(path)
  try:
    _client().list_objects_v2(Bucket=bucket, Prefix=key.rstrip('/') + '/', MaxKeys=1)
  except botocore.exceptions.ClientError as e:
    if e.response.get('Error', {}).get('Code') == 'NoSuchBucket':
      raise clients.StoreError(f'S3 bucket {bucket!r} does not exist (path {path}): check the '
                               'bucket name, the region and --s3_endpoint_url') from None
    raise


def delete(paths: list[str]) -> None:
  """One DeleteObject per key: Beam's batch DeleteObjects reports per-key failures in a 200
  reply, and moto with IAM on checks it against the bucket instead of each key."""
  for path in paths:
    bucket, key = clients.bucket_and_key(path)
    _client().delete_object(Bucket=bucket, Key=key)


def rename(sources: list[str], destinations: list[str]) -> None:
  """Copy (multipart for big objects, with the encryption settings), then delete the source."""
  for src, dst in zip(sources, destinations):
    (sb, sk), (db, dk) = clients.bucket_and_key(src), clients.bucket_and_key(dst)
    _client().copy({'Bucket': sb, 'Key': sk}, db, dk)
  delete(sources)


def put(path: str, data: bytes, exclusive: bool) -> bool:
  """One PutObject (`If-None-Match: *` with `exclusive`); False when an object was there."""
  import botocore.exceptions
  bucket, key = clients.bucket_and_key(path)
  try:
    _client().put_object(Bucket=bucket, Key=key, Body=data,
                         **({'IfNoneMatch': '*'} if exclusive else {}))
  except botocore.exceptions.ClientError as e:
    if e.response.get('Error', {}).get('Code') in ('PreconditionFailed', '412'):
      return False
    raise
  return True
