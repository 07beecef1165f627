"""S3 access as the seeds set it up, against moto with IAM enforced: access keys of a user holding
exactly seed 001's policy (import) or seed 000's (export); STS AssumeRole with the customer's
ExternalId (seed 000's trust policy), refreshed before expiry; a policy without DeleteObject fails
with a message naming the permission and leaves no visible day."""
import datetime
import json
import os
import urllib.request

import boto3
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import samples
from tests import servers
from tests.conftest import run_cli
from transforms.stores import fs, s3

pytestmark = [pytest.mark.engine, pytest.mark.servers]

DAY = datetime.date(2023, 1, 1)
BUCKET, EXTERNAL_ID = 'customer', 'ext-id-3f9a7c'

# Seed 001 (import) and seed 000 (export) IAM policies, verbatim but for <bucket> and <prefix>.
IMPORT_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject", "s3:PutObject"],
     "Resource": "arn:aws:s3:::<bucket>/<prefix>/*"},
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": "arn:aws:s3:::<bucket>",
     "Condition": {"StringLike": {"s3:prefix": ["<prefix>/*", "<prefix>/", "<prefix>"]}}}]}
EXPORT_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject", "s3:PutObject"],
     "Resource": "arn:aws:s3:::<bucket>/<prefix>/*"},
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": "arn:aws:s3:::<bucket>"}]}
TRUST_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "<caller>"}, "Action": "sts:AssumeRole",
     "Condition": {"StringEquals": {"sts:ExternalId": "<external_id>"}}}]}


def policy(template: dict, **values) -> str:
  text = json.dumps(template)
  for k, v in values.items():
    text = text.replace(f'<{k}>', v)
  return text


@pytest.fixture(scope='module')
def aws(tmp_path_factory):
  """moto with a bucket, the seeds' users and role; IAM enforced once set up."""
  workdir = str(tmp_path_factory.mktemp('aws'))
  server = servers.moto(workdir)
  admin = dict(endpoint_url=server.endpoint, region_name='us-east-1',
               aws_access_key_id='admin', aws_secret_access_key='admin')
  boto3.client('s3', **admin).create_bucket(Bucket=BUCKET)
  iam = boto3.client('iam', **admin)
  keys = {}

  def user(name, document):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName='p', PolicyDocument=document)
    k = iam.create_access_key(UserName=name)['AccessKey']
    keys[name] = (k['AccessKeyId'], k['SecretAccessKey'])
    return iam.get_user(UserName=name)['User']['Arn']

  user('importer', policy(IMPORT_POLICY, bucket=BUCKET, prefix='events'))
  user('exporter', policy(EXPORT_POLICY, bucket=BUCKET, prefix='hackle-export'))
  no_delete = json.loads(policy(EXPORT_POLICY, bucket=BUCKET, prefix='hackle-export'))
  no_delete['Statement'][0]['Action'].remove('s3:DeleteObject')
  user('no-delete', json.dumps(no_delete))
  caller = user('caller', json.dumps({"Version": "2012-10-17", "Statement": [
      {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
  role = iam.create_role(RoleName='hackle-export', AssumeRolePolicyDocument=policy(
      TRUST_POLICY, caller=caller, external_id=EXTERNAL_ID))['Role']['Arn']
  iam.put_role_policy(RoleName='hackle-export', PolicyName='p',
                      PolicyDocument=policy(EXPORT_POLICY, bucket=BUCKET, prefix='hackle-export'))
  fs.configure(PipelineOptions(['--s3_endpoint_url', server.endpoint, '--s3_region_name',
                                     'us-east-1', '--s3_access_key_id', 'admin',
                                     '--s3_secret_access_key', 'admin']))
  samples.write_day(f's3://{BUCKET}/events', DAY, samples.events(DAY, 500, seed=2), files=2)
  # From here on every request must be allowed by IAM.
  urllib.request.urlopen(urllib.request.Request(f'{server.endpoint}/moto-api/reset-auth',
                                                data=b'0', method='POST',
                                                headers={'Content-Type': 'text/plain'}))
  yield {'server': server, 'keys': keys, 'role': role, 'workdir': workdir}
  server.stop()


def flags(aws, who, *more):
  key, secret = aws['keys'][who]
  return ['--s3_endpoint_url', aws['server'].endpoint, '--s3_region_name', 'us-east-1',
          '--s3_access_key_id', key, '--s3_secret_access_key', secret, *more]


def role_flags(aws, external_id=EXTERNAL_ID):
  return flags(aws, 'caller', '--s3_role_arn', aws['role'], '--s3_external_id', external_id,
               '--s3_sts_endpoint_url', aws['server'].endpoint)


@pytest.fixture(scope='module')
def lake(aws, tmp_path_factory):
  lake = str(tmp_path_factory.mktemp('lake'))
  proc = run_cli('pipelines.import_events', '--source', f's3://{BUCKET}/events', '--date',
                 '2023-01-01', '--lake', lake, *flags(aws, 'importer'))
  assert '2023-01-01 published' in proc.stdout
  return lake


def export(aws, lake, dest, account_flags, check=True):
  return run_cli('pipelines.export_events', '--lake', lake, '--date', '2023-01-01', '--dest',
                 f's3://{BUCKET}/hackle-export/{dest}', *account_flags, check=check)


def exported(aws, who_flags, dest) -> list[str]:
  fs.configure(PipelineOptions(who_flags))
  return sorted(os.path.basename(p) for p in
                fs.list_files(f's3://{BUCKET}/hackle-export/{dest}/dt=2023-01-01'))


def test_import_with_exactly_seed_001s_policy(lake):
  assert ds.dataset(os.path.join(lake, 'dt=2023-01-01')).count_rows() > 400   # less bad rows


def test_export_with_exactly_seed_000s_policy(aws, lake):
  export(aws, lake, 'keys', flags(aws, 'exporter'))
  assert exported(aws, flags(aws, 'exporter'), 'keys') == [
      '_SUCCESS', '_manifest.json', 'part-00000-of-00001.parquet']


def test_export_through_the_assumed_role_with_the_external_id(aws, lake):
  export(aws, lake, 'role', role_flags(aws))
  assert '_SUCCESS' in exported(aws, role_flags(aws), 'role')
  proc = export(aws, lake, 'role2', role_flags(aws, 'wrong-external-id'), check=False)
  assert proc.returncode == 5 and 'AssumeRole' in proc.stderr and 'AccessDenied' in proc.stderr


def test_without_delete_permission_the_export_fails_naming_it_and_no_day_is_visible(aws, lake):
  proc = export(aws, lake, 'nodelete', flags(aws, 'no-delete'), check=False)
  assert proc.returncode == 5, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]   # Beam itself logs the worker's traceback above
  assert last.startswith('error: S3 refused to ') and 'DELETE permission' in last
  assert 'AccessDenied' in last
  assert '_SUCCESS' not in exported(aws, flags(aws, 'exporter'), 'nodelete')


def test_role_credentials_renew_themselves_before_expiry(aws):
  o = PipelineOptions(role_flags(aws))
  creds = s3._role_credentials(o.view_as(s3.S3Options), o.view_as(s3.S3AccessOptions))
  first = creds.get_frozen_credentials()
  creds._expiry_time = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
  second = creds.get_frozen_credentials()   # inside botocore's refresh window: AssumeRole again
  assert second.access_key != first.access_key and second.token != first.token


@pytest.mark.parametrize('sse', ['AES256', 'aws:kms'])
def test_every_object_written_carries_the_requested_encryption(s3_store, tmp_path, sse):
  """Staged, renamed (copied), 0-byte and conditional writes alike: head_object on each."""
  admin = dict(endpoint_url=s3_store.server.endpoint, region_name='us-east-1',
               aws_access_key_id=servers.MOTO_KEY, aws_secret_access_key=servers.MOTO_SECRET)
  extra = ['--s3_sse', sse]
  if sse == 'aws:kms':
    extra += ['--s3_sse_kms_key_id', boto3.client('kms', **admin).create_key()['KeyMetadata']['KeyId']]
  src = str(tmp_path / 'src')
  samples.write_day(src, DAY, samples.events(DAY, 300, seed=4), files=1)
  lake, dest = f'{s3_store.root}/sse-{sse}/lake', f'{s3_store.root}/sse-{sse}/dest'
  run_cli('pipelines.import_events', '--source', src, '--date', '2023-01-01', '--lake', lake,
          '--shards', '2', *s3_store.flags, *extra)
  run_cli('pipelines.export_events', '--lake', lake, '--date', '2023-01-01', '--dest', dest,
          *s3_store.flags, *extra)
  client = boto3.client('s3', **admin)
  keys = [o['Key'] for o in client.list_objects_v2(Bucket='ferry', Prefix=f't/sse-{sse}/')
          ['Contents']]
  assert {'_SUCCESS', '_manifest.json', 'part-00000-of-00002.parquet'} <= {
      k.rsplit('/', 1)[-1] for k in keys}
  for key in keys:
    head = client.head_object(Bucket='ferry', Key=key)
    assert head.get('ServerSideEncryption') == sse, key
    if sse == 'aws:kms':
      assert extra[-1] in head.get('SSEKMSKeyId', ''), key
