"""Beam's filesystems, where the project relies on more than their public API: the compression a
path implies, and the S3 client Beam builds for itself.

Each hook here is checked against the pinned Beam by tests/test_compat.py.
"""
import typing

from apache_beam.io.filesystem import FileSystem
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.compat import startup

__all__ = ['compression_of', 'hand_beam_s3_client']

# Beam's S3 client module imports boto3 (0.2 s of start-up): the hook waits for its import.
BEAM_S3_CLIENT = 'apache_beam.io.aws.clients.s3.boto3_client'
BEAM_S3_CLIENT_INIT = None   # Client.__init__ as Beam wrote it, once hand_beam_s3_client saw it
# What Beam's S3 Client.__init__ sets; the replacement sets the same (the test compares).
S3_CLIENT_FIELDS = ('client', '_download_request', '_download_stream', '_download_pos')


def compression_of(path: str, compression_type: str) -> str:
  """AUTO -> the compression the path's extension implies; anything else checked and kept, as
  Beam's own filesystems decide it (a protected helper of their base class)."""
  return FileSystem._get_compression_type(path, compression_type)


def hand_beam_s3_client(make: typing.Callable[[PipelineOptions], typing.Any]) -> None:
  """Makes Beam's S3 filesystem use `make(options)` as its boto3 client, from the import of
  Beam's S3 client module on (its first s3:// path: transforms/compat/startup.py). Beam builds
  its Client from S3Options alone, with no hook, so its __init__ is the one place to hand it ours."""
  def init(self, options):
    if not isinstance(options, PipelineOptions):
      options = PipelineOptions.from_dictionary(dict(options or {}))
    self.client = make(options)
    self._download_request = None
    self._download_stream = None
    self._download_pos = 0

  def hand(boto3_client) -> None:
    global BEAM_S3_CLIENT_INIT
    BEAM_S3_CLIENT_INIT = boto3_client.Client.__init__
    boto3_client.Client.__init__ = init
  startup.after_import(BEAM_S3_CLIENT, hand)
