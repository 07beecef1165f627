"""Azure Blob beyond Beam's blobstorageio: an encryption scope (--azure_encryption_scope) on every
write, streaming uploads in blocks (Beam's writer spools a whole file), renames that wait for the
copy to finish, create-if-absent (`If-None-Match: *`). The client is Beam's, from the same options.
"""
import functools
import io
import shutil
import time

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.stores import clients

__all__ = ['exists', 'BlockWriter', 'rename', 'put']


@functools.lru_cache(maxsize=8)
def _client(opts_id: int):
  from apache_beam.io.azure import blobstorageio
  return blobstorageio.BlobStorageIO(pipeline_options=clients.options()).client


def exists(path: str) -> bool:
  return _client(id(clients.options())).get_blob_client(*clients.bucket_and_key(path)).exists()


def _scope() -> dict:
  scope = clients.encryption().azure_encryption_scope
  return {'encryption_scope': scope} if scope else {}


class BlockWriter(io.RawIOBase):
  """Streams a block blob: every clients.BLOCK bytes become one Put Block, closing commits the
  block list (Put Block List), so memory holds one block, never the file. Both requests carry
  --azure_encryption_scope, as Azure requires."""

  def __init__(self, path: str, content_type: str):
    from azure.storage.blob import ContentSettings
    super().__init__()
    self._blob = _client(id(clients.options())).get_blob_client(*clients.bucket_and_key(path))
    self._settings = ContentSettings(content_type=content_type)
    self._pending = bytearray()
    self._blocks: list[str] = []

  def writable(self) -> bool:
    return True

  def write(self, data) -> int:
    view = memoryview(data).cast('B')
    size = len(view)
    if self._pending:   # top up the block a previous write began
      take = clients.BLOCK - len(self._pending)
      self._pending += view[:take]
      view = view[take:]
      if len(self._pending) < clients.BLOCK:
        return size
      self._stage(bytes(self._pending))
      self._pending.clear()
    while len(view) >= clients.BLOCK:
      self._stage(view[:clients.BLOCK].tobytes())
      view = view[clients.BLOCK:]
    self._pending += view
    return size

  def _stage(self, block: bytes) -> None:
    block_id = f'{len(self._blocks):06d}'   # equal lengths, as Azure requires per blob
    self._blob.stage_block(block_id, block, length=len(block), **_scope())
    self._blocks.append(block_id)

  def close(self) -> None:
    if not self.closed:
      if self._pending:
        self._stage(bytes(self._pending))
        self._pending.clear()
      self._blob.commit_block_list(self._blocks, content_settings=self._settings,
                                   **_scope())
    super().close()

  def __exit__(self, kind, error, tb):
    if kind is None:
      self.close()
    else:   # leave the staged blocks uncommitted: Azure drops them after a week
      self._pending.clear()
      super().close()


def rename(sources: list[str], destinations: list[str]) -> None:
  """Copy, wait until Azure says the copy succeeded, then delete the sources. Beam's rename
  deletes the source right after *starting* Copy Blob, which Azure may finish asynchronously.
  With an encryption scope the copy streams through BlockWriter: Copy Blob cannot set a
  scope, and Copy Blob From URL (which can) needs a SAS for the source and stops at 256 MiB."""
  client = _client(id(clients.options()))
  for src, dst in zip(sources, destinations):
    if clients.encryption().azure_encryption_scope:
      with FileSystems.open(src, compression_type=CompressionTypes.UNCOMPRESSED) as r, \
          BlockWriter(dst, 'application/octet-stream') as w:
        shutil.copyfileobj(r, w, clients.BLOCK)
      continue
    target = client.get_blob_client(*clients.bucket_and_key(dst))
    status = target.start_copy_from_url(client.get_blob_client(*clients.bucket_and_key(src)).url)
    status = status['copy_status']
    while status == 'pending':
      time.sleep(0.2)
      status = target.get_blob_properties().copy.status
    if status != 'success':
      raise OSError(f'Azure copy of {src} to {dst} ended {status}')
  FileSystems.delete(sources)


def put(path: str, data: bytes, exclusive: bool) -> bool:
  import azure.core.exceptions
  blob = _client(id(clients.options())).get_blob_client(*clients.bucket_and_key(path))
  try:
    # overwrite=False sends If-None-Match: *
    blob.upload_blob(data, overwrite=not exclusive, **_scope())
  except azure.core.exceptions.ResourceExistsError:
    return False
  return True
