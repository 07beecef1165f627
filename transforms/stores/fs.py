"""File I/O through Beam's FileSystems, so every store works the same way: local paths, s3://,
gs://, azfs:// (Beam's) and sftp:// (transforms/stores/sftp.py, registered by importing it here).
Paths are plain strings; directories are prefixes ending without '/'. Object stores have no
directories: a folder "exists" when something lies under it, so code lists instead of asking.
Where Beam's filesystems cannot do a thing (0-byte S3 objects, create-if-absent, S3 deletes and
renames that keep per-key permissions and encryption, GCS KMS keys and Azure encryption scopes,
Azure uploads that do not hold the whole file) the store's own client does it
(transforms/stores/clients.py). Writes stream (`open_write`): memory holds one block, not the file.
"""
import bz2
import functools
import hashlib
import lzma
import os
import posixpath
import re
import typing
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.stores import azure, clients, gcs, s3, sftp  # noqa: F401  (registers sftp://, S3 role + encryption)

__all__ = ['RAW', 'configure', 'STORES', 'redact', 'has_dirs', 'join', 'exists', 'partition_dir',
           'list_files', 'list_dated', 'read_bytes', 'open_read', 'read_parquet', 'Unreadable', 'read_blocks', 'Upload',
           'open_write', 'write_bytes', 'create_exclusive', 'delete', 'rename', 'delete_tree']

RAW = CompressionTypes.UNCOMPRESSED
clients.use_emulator_credentials()


def configure(options) -> None:
  """Gives the launcher's own storage calls (planning, locks, commit on the in-process runner)
  the pipeline's store options: endpoints, keys, connection strings."""
  FileSystems.set_options(options)
  clients.use_emulator_credentials()


STORES = {'s3': 'S3', 'gs': 'GCS', 'azfs': 'Azure Blob', 'sftp': 'SFTP', None: 'local disk'}


def redact(url: str) -> str:
  """`url` with the password of a `user:password@` part replaced by ***."""
  return re.sub(r'^([a-z0-9]+://[^/:@]*):[^/@]*@', r'\1:***@', url)


def _refused(path, operation: str, permission: str, e: Exception) -> clients.StoreError:
  """One StoreError naming the store, the path, the operation and the permission it needs, with
  secrets removed. Raise it `from None`: some stores' messages carry signed request URLs."""
  paths = [path] if isinstance(path, str) else list(path)
  where = redact(paths[0]) + (f' (and {len(paths) - 1} more)' if len(paths) > 1 else '')
  return clients.StoreError(
      f'{STORES.get(FileSystems.get_scheme(where))} refused to {operation} {where}: '
      f'{clients.explain(e)}. This needs the {permission} permission there; '
      '`./run.sh check --dest ...` tests each one.')


def _guarded(operation: str, permission: str):
  """Turns whatever a store raises into a StoreError (`_refused`)."""
  def wrap(fn):
    @functools.wraps(fn)
    def guarded(path, *args, **kwargs):
      try:
        return fn(path, *args, **kwargs)
      except clients.StoreError:
        raise
      except Exception as e:  # noqa: BLE001 - re-raised with its store's words
        raise _refused(path, operation, permission, e) from None
    return guarded
  return wrap


def has_dirs(path: str) -> bool:
  return FileSystems.get_filesystem(path).has_dirs()


def join(base: str, *parts: str) -> str:
  return FileSystems.join(base.rstrip('/'), *parts)


@_guarded('check', 'GET (HEAD)')
def exists(path: str) -> bool:
  if FileSystems.get_scheme(path) == 'azfs':
    return azure.exists(path)   # Beam 2.77's raises on a missing blob instead of False
  return FileSystems.exists(path)


def partition_dir(root: str, dt: str) -> str:
  """ROOT/dt=YYYY-MM-DD: a day's folder, in customers' buckets, the lake and exports alike."""
  return join(root, f'dt={dt}')


@_guarded('list', 'LIST')
def list_files(directory: str) -> dict[str, int]:
  """Every file directly or indirectly under `directory`, as {path: size in bytes}."""
  pattern = join(directory, '**')
  found = {}
  for match in FileSystems.match([pattern])[0].metadata_list:
    found[match.path] = match.size_in_bytes
  if not found and FileSystems.get_scheme(directory) == 's3':
    s3.require_bucket(directory)
  return found


@_guarded('list', 'LIST')
def list_dated(directory: str) -> dict[str, tuple[int, float]]:
  """Every file under `directory`, as {path: (size in bytes, last written, POSIX seconds)}."""
  pattern = join(directory, '**')
  return {m.path: (m.size_in_bytes, m.last_updated_in_seconds)
          for m in FileSystems.match([pattern])[0].metadata_list}


@_guarded('read', 'GET')
def read_bytes(path: str) -> bytes:
  with FileSystems.open(path, compression_type=RAW) as f:
    return f.read()


@_guarded('open', 'GET')
def open_read(path: str) -> typing.BinaryIO:
  return FileSystems.open(path, compression_type=RAW)


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
  """A Parquet file's rows (or those columns), from any store. Not pre-buffered: pyarrow's
  pre-buffering reads a Python file object on Arrow's I/O threads, and one of them can still hold
  a buffer of Python bytes as the interpreter exits, which then aborts the process after its work
  is done ('terminate called without an active exception', exit 134)."""
  with open_read(path) as f:
    return pq.read_table(f, columns=columns, pre_buffer=False)


class Unreadable(Exception):
  """A compressed file that is corrupt or ends early (a truncated upload)."""


class _Decompressor(typing.Protocol):
  """What zlib's, bz2's and lzma's decompressor objects have in common."""

  @property
  def eof(self) -> bool: ...

  @property
  def unused_data(self) -> bytes: ...

  def decompress(self, data: bytes, /) -> bytes: ...


# Beam's own decompression (CompressedFile) returns what it could of a truncated .gz, .bz2 or .xz
# file as if that were all: the rest of the file would be lost without a word. These are checked.
_CODECS: dict[str, tuple[str, typing.Callable[[], _Decompressor], type[Exception]]] = {
    '.gz': ('gzip', lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), zlib.error),
    '.bz2': ('bzip2', bz2.BZ2Decompressor, OSError),
    '.xz': ('xz', lzma.LZMADecompressor, lzma.LZMAError),
    '.lzma': ('lzma', lzma.LZMADecompressor, lzma.LZMAError)}


def read_blocks(path: str, size: int) -> typing.Iterator[bytes]:
  """The file's content in blocks of about `size` bytes, decompressed by its extension (.gz, .bz2,
  .xz/.lzma checked to the end of their last stream; others as Beam reads them). Raises Unreadable
  for a corrupt or truncated file, after the blocks that could be read."""
  ext = posixpath.splitext(path)[1].lower()
  if ext not in _CODECS:
    with FileSystems.open(path) as f:
      yield from iter(lambda: f.read(size), b'')
    return
  name, codec, error = _CODECS[ext]
  decompressor, fed = codec(), False
  with open_read(path) as f:
    for block in iter(lambda: f.read(size), b''):
      fed = True
      while block:   # concatenated streams (gzip members) each get a new decompressor
        if decompressor.eof:
          block = block.lstrip(b'\0') if name == 'gzip' else block   # gzip allows zero padding
          if not block:
            break
          decompressor = codec()
        try:
          out = decompressor.decompress(block)
        except error as e:
          raise Unreadable(f'{path}: not valid {name} data ({e})') from e
        if out:   # b'' would read as the end of the file
          yield out
        block = decompressor.unused_data if decompressor.eof else b''
  if fed and not decompressor.eof:
    raise Unreadable(f'{path}: the {name} data ends early (a truncated or unfinished upload?)')


class Upload:
  """A file being written: `write` takes any sizes and hands the store at most BLOCK bytes at a
  time, so no store layer copies a whole file (Beam's S3 and GCS writers would), and counts the
  bytes and their sha256 on the way, so a manifest needs no second read. close() (or leaving a
  `with` block) publishes the file. After an exception inside a `with` block nothing becomes
  visible on GCS and Azure; elsewhere a partial file may, so write to a staging path. File-like
  enough for pyarrow's ParquetWriter."""

  def __init__(self, path: str, f, checksum: bool = True):
    self.path, self._f = path, f
    self.bytes = 0
    self._sha = hashlib.sha256() if checksum else None

  def _call(self, method, *args):
    try:
      return method(*args)
    except Exception as e:  # noqa: BLE001 - re-raised with its store's words
      raise _refused(self.path, 'write', 'PUT', e) from None

  def write(self, data) -> int:
    view = memoryview(data).cast('B')
    for start in range(0, len(view), clients.BLOCK):
      self._call(self._f.write, view[start:start + clients.BLOCK])
    if self._sha:
      self._sha.update(view)
    self.bytes += len(view)
    return len(view)

  def tell(self) -> int:
    return self.bytes

  def flush(self) -> None:
    pass   # the store sends whole blocks; close() finishes the file

  @property
  def closed(self) -> bool:
    return self._f.closed

  def close(self) -> None:
    if not self._f.closed:
      self._call(self._f.close)

  @property
  def sha256(self) -> str:
    if self._sha is None:
      raise ValueError(f'{self.path} was opened with checksum=False')
    return self._sha.hexdigest()

  def __enter__(self) -> 'Upload':
    return self

  def __exit__(self, kind, error, tb) -> None:
    if kind is None:
      self.close()
    else:
      self._f.__exit__(kind, error, tb)


@_guarded('write', 'PUT')
def open_write(path: str, checksum: bool = True) -> Upload:
  """Streams a new file to `path`, replacing it: S3 multipart parts, GCS resumable chunks,
  Azure blocks, SFTP blocks; memory holds one block (transforms/stores/clients.py). Not for 0-byte
  S3 objects: use write_bytes. `checksum=False` skips the sha256 (scratch files: hashing 1M
  events' spills took 0.27 s)."""
  if FileSystems.get_scheme(path) in ('gs', 'azfs'):
    f = clients.open_write(path)   # with the KMS key / encryption scope
  else:
    f = FileSystems.create(path, mime_type='application/octet-stream', compression_type=RAW)
  return Upload(path, f, checksum)


@_guarded('write', 'PUT')
def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path`, replacing it."""
  if not data and FileSystems.get_scheme(path) == 's3':
    clients.put(path, data)   # Beam's multipart upload cannot make a 0-byte object
    return
  with open_write(path) as f:
    f.write(data)


@_guarded('create', 'PUT')
def create_exclusive(path: str, data: bytes) -> bool:
  """Creates `path` only if it does not exist; False when it did. Atomic everywhere: O_EXCL on
  local disk and SFTP, conditional writes on S3, GCS and Azure."""
  if FileSystems.get_scheme(path) is None:
    os.makedirs(posixpath.dirname(path) or '.', exist_ok=True)
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    return True
  return clients.put(path, data, exclusive=True)


@_guarded('delete', 'DELETE')
def delete(paths: typing.Iterable[str]) -> None:
  paths = [p for p in paths if exists(p)]
  if paths and FileSystems.get_scheme(paths[0]) == 's3':
    s3.delete(paths)
  elif paths:
    FileSystems.delete(paths)


@_guarded('move (copy, then delete)', 'GET, PUT and DELETE')
def rename(sources: list[str], destinations: list[str]) -> None:
  """Moves files, replacing existing destinations. Local disk needs the parent folders first."""
  for parent in {posixpath.dirname(d) for d in destinations}:
    if FileSystems.get_scheme(parent) is None and not os.path.exists(parent):
      FileSystems.mkdirs(parent)
  scheme = FileSystems.get_scheme(sources[0]) if sources else None
  if scheme in ('s3', 'gs', 'azfs'):   # copies that keep the encryption settings
    {'s3': s3.rename, 'gs': gcs.rename, 'azfs': azure.rename}[scheme](
        sources, destinations)
  elif sources:
    FileSystems.rename(sources, destinations)


def delete_tree(directory: str, prune_parent: bool = False) -> None:
  """Deletes every file under `directory`, and the folder itself where folders exist. With
  `prune_parent`, a parent folder left empty goes too (e.g. DEST/_staging)."""
  delete(list_files(directory))
  if not has_dirs(directory):
    return
  if exists(directory):
    FileSystems.delete([directory])
  if prune_parent:
    _remove_if_empty(posixpath.dirname(directory.rstrip('/')))


def _remove_if_empty(folder: str) -> None:
  """rmdir, never a tree delete: another run may have just made its own (still empty) staging
  folder in `folder`, and listing files first would not see it."""
  if '://' not in folder:
    try:
      os.rmdir(folder)
    except OSError:
      pass   # not empty: another run stages there
  else:
    filesystem = FileSystems.get_filesystem(folder)
    if isinstance(filesystem, sftp.SftpFileSystem):   # the one other store with folders
      filesystem.remove_if_empty(folder)
