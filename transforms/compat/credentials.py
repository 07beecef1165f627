"""Credential internals of Beam and botocore that the project sets directly.

Each hook here is checked against the pinned versions by tests/test_compat.py.
"""
import typing

if typing.TYPE_CHECKING:   # botocore itself is imported by the first S3 client (transforms/stores/s3.py)
  import botocore.session

__all__ = ['skip_google_credentials', 'use_credentials']


def skip_google_credentials() -> None:
  """Beam looks for Google credentials for about 27 s per process before it connects anonymously;
  a GCS emulator needs none. Marks Beam's credential cache as looked up and empty."""
  from apache_beam.internal.gcp import auth
  with auth._Credentials._credentials_lock:
    auth._Credentials._credentials, auth._Credentials._credentials_init = None, True


def use_credentials(session: 'botocore.session.Session', credentials) -> None:
  """Gives a botocore session credentials that renew themselves (RefreshableCredentials):
  `set_credentials` takes static keys only."""
  session._credentials = credentials
