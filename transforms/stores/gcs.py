"""GCS beyond Beam's gcsio: customer-managed encryption (a Cloud KMS key per object,
--gcs_kms_key_name) on every write, rename (a server-side rewrite) and create-if-absent
(`if_generation_match=0`). The client is the one Beam's gcsio builds, from the same options.
"""
import functools

from apache_beam.io.filesystems import FileSystems

from transforms.stores import clients

__all__ = ['CHUNK', 'blob', 'open_write', 'rename', 'put']

CHUNK = 16 << 20   # resumable upload chunk, as Beam's writer: half the requests of 8 MiB


@functools.lru_cache(maxsize=8)
def _client(opts_id: int):
  from apache_beam.io.gcp import gcsio
  return gcsio.create_storage_client(clients.options())


def blob(path: str):
  """The blob at a gs:// path, carrying --gcs_kms_key_name for whatever creates it."""
  bucket, key = clients.bucket_and_key(path)
  return _client(id(clients.options())).bucket(bucket).blob(
      key, kms_key_name=clients.encryption().gcs_kms_key_name)


def open_write(path: str, content_type: str):
  """A resumable upload of `path` in CHUNK pieces, with the KMS key; published on close."""
  from google.cloud.storage.fileio import BlobWriter
  from google.cloud.storage.retry import DEFAULT_RETRY
  return BlobWriter(blob(path), chunk_size=CHUNK, content_type=content_type,
                    ignore_flush=True, retry=DEFAULT_RETRY)   # resumable: safe to retry


def rename(sources: list[str], destinations: list[str]) -> None:
  """Server-side rewrite with the KMS key (Beam's copy cannot pass one), then delete the source.
  A rewrite of a big object may take several calls; each continues with the previous token."""
  for src, dst in zip(sources, destinations):
    source, target, token = blob(src), blob(dst), None
    while True:
      token, _, _ = target.rewrite(source, token=token)
      if token is None:
        break
  FileSystems.delete(sources)


def put(path: str, data: bytes, exclusive: bool) -> bool:
  from google.api_core import exceptions
  try:
    blob(path).upload_from_string(data, if_generation_match=0 if exclusive else None)
  except exceptions.PreconditionFailed:
    return False
  return True
