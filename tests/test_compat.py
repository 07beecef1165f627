"""Each private hook of transforms/compat/ against the pinned Beam and botocore: a new version
that changes what a hook relies on fails here, by name, instead of somewhere in a run."""
import argparse
import inspect
import logging
import re

import apache_beam as beam
import botocore.credentials
import botocore.session
import pytest
from apache_beam.io.aws.clients.s3 import boto3_client
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options import pipeline_options as po
from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub

from transforms import watch
from transforms.compat import credentials, filesystems, local_runner
from transforms.compat import options as compat_options
from transforms.stores import s3


def assigned(function) -> set[str]:
  """The attributes `function` sets on self, read from its source."""
  return set(re.findall(r'self\.(\w+)\s*=(?!=)', inspect.getsource(function)))


def test_beam_parses_options_with_an_argparse_parser_that_declared_can_ask():
  assert issubclass(po._BeamArgumentParser, argparse.ArgumentParser)
  parser = po._BeamArgumentParser(allow_abbrev=False)
  assert not compat_options.declared(parser, '--lake')
  parser.add_argument('--lake')
  assert compat_options.declared(parser, '--lake')
  with pytest.raises(argparse.ArgumentError):   # why declared() exists: twice is refused
    parser.add_argument('--lake')


class _Boom(RuntimeError):
  pass


def _explode(_):
  raise _Boom('boom')


def test_a_failing_step_is_logged_on_the_step_logger_with_its_exception(caplog):
  caplog.set_level(logging.ERROR, logger=compat_options.STEP_LOGGER)
  with pytest.raises(Exception, match='boom'):
    with beam.Pipeline(options=po.PipelineOptions(['--runner', 'FnApiRunner'])) as p:
      _ = p | beam.Create([1]) | beam.Map(_explode)
  logged = [r.exc_info[1] for r in caplog.records
            if r.name == compat_options.STEP_LOGGER and r.exc_info]
  assert any(isinstance(e, _Boom) for e in logged), [r.getMessage()[:200] for r in caplog.records]


def test_filesystem_options_are_the_ones_set_on_beam_filesystems():
  before = compat_options.filesystem_options()
  mine = po.PipelineOptions(['--s3_region_name', 'eu-west-3'])
  try:
    FileSystems.set_options(mine)
    assert compat_options.filesystem_options() is mine
  finally:
    FileSystems.set_options(before)


@pytest.mark.parametrize('path, given, expected', [
    ('a/b.jsonl.gz', CompressionTypes.AUTO, CompressionTypes.GZIP),
    ('a/b.csv.bz2', CompressionTypes.AUTO, CompressionTypes.BZIP2),
    ('a/b.parquet', CompressionTypes.AUTO, CompressionTypes.UNCOMPRESSED),
    ('a/b.gz', CompressionTypes.UNCOMPRESSED, CompressionTypes.UNCOMPRESSED),
])
def test_compression_of_decides_as_beam_filesystems_do(path, given, expected):
  assert filesystems.compression_of(path, given) == expected


def test_compression_of_refuses_what_is_not_a_compression_type():
  with pytest.raises(TypeError):
    filesystems.compression_of('a.gz', 'zip')


def test_beams_s3_client_init_sets_what_the_replacement_sets():
  assert assigned(filesystems.BEAM_S3_CLIENT_INIT) == set(filesystems.S3_CLIENT_FIELDS)
  assert boto3_client.Client.__init__ is not filesystems.BEAM_S3_CLIENT_INIT   # s3.py replaced it
  options = po.PipelineOptions(['--s3_region_name', 'us-east-1', '--s3_access_key_id', 'k',
                                '--s3_secret_access_key', 's'])
  client = boto3_client.Client(options)
  assert client.client is s3._cached(options)   # Beam's filesystem signs with our client
  assert {f: getattr(client, f) for f in filesystems.S3_CLIENT_FIELDS[1:]} == {
      '_download_request': None, '_download_stream': None, '_download_pos': 0}


def test_skip_google_credentials_leaves_beam_nothing_to_look_up(monkeypatch):
  from apache_beam.internal.gcp import auth
  for name in ('_credentials', '_credentials_init'):
    monkeypatch.setattr(auth._Credentials, name, getattr(auth._Credentials, name))

  def looked_up(*_):
    raise AssertionError('Beam looked for Google credentials')
  monkeypatch.setattr(auth._Credentials, '_get_service_credentials', staticmethod(looked_up))
  credentials.skip_google_credentials()
  assert auth._Credentials.get_service_credentials(po.PipelineOptions([])) is None


def test_use_credentials_gives_a_session_credentials_that_renew_themselves():
  def metadata():
    return {'access_key': 'AK', 'secret_key': 'SK', 'token': 'T',
            'expiry_time': '2999-01-01T00:00:00+00:00'}
  renewing = botocore.credentials.RefreshableCredentials.create_from_metadata(
      metadata=metadata(), refresh_using=metadata, method='sts-assume-role')
  session = botocore.session.Session()
  credentials.use_credentials(session, renewing)
  assert session.get_credentials() is renewing   # what create_client signs with


def test_the_runner_evaluator_base_sets_what_evaluator_reads():
  base = transform_evaluator._TransformEvaluator
  assert list(inspect.signature(base.__init__).parameters) == [
      'self', 'evaluation_context', 'applied_ptransform', 'input_committed_bundle', 'side_inputs']
  assert {'_evaluation_context', '_applied_ptransform'} <= assigned(base.__init__)
  assert '_outputs' in assigned(base._expand_outputs)
  for name in ('transform', 'context', 'main_output'):   # ours do not hide one of Beam's
    assert not hasattr(base, name), name


def test_the_runner_registry_takes_the_evaluators_registered_here():
  overrides = transform_evaluator.TransformEvaluatorRegistry._test_evaluators_overrides
  assert overrides[watch._LocalWatch] is watch._LocalWatchEvaluator
  assert overrides[_DirectReadFromPubSub] is local_runner._PubSubReadEvaluator
  registry = transform_evaluator.TransformEvaluatorRegistry(object())
  assert registry._evaluators[watch._LocalWatch] is watch._LocalWatchEvaluator
  assert registry._evaluators[_DirectReadFromPubSub] is local_runner._PubSubReadEvaluator


def test_the_pubsub_evaluator_pulls_through_the_client_it_is_given():
  beams = transform_evaluator._PubSubReadEvaluator
  assert isinstance(inspect.getattr_static(beams, '_get_subscriber_client'), classmethod)
  source = inspect.getsource(beams)
  assert re.search(r'(\w+) = self\._get_subscriber_client\(.*\)\s+\w+ = \1\.pull\(\s*'
                   r'subscription=[^,]+, max_messages=[^,]+, timeout=', source), \
      'Beam no longer pulls with pull(subscription=, max_messages=, timeout=) on that client'
