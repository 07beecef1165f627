"""File I/O through Beam's FileSystems, so every store Beam knows (local, s3://, gs://, azfs://)
works the same way. Paths are plain strings; directories are prefixes ending without '/'."""
import os
import posixpath
import typing

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RAW = CompressionTypes.UNCOMPRESSED


def join(base: str, *parts: str) -> str:
  return FileSystems.join(base.rstrip('/'), *parts)


def exists(path: str) -> bool:
  return FileSystems.exists(path)


def partition_dir(root: str, dt: str) -> str:
  """ROOT/dt=YYYY-MM-DD: a day's folder, in customers' buckets, the lake and exports alike."""
  return join(root, f'dt={dt}')


def list_files(directory: str) -> dict[str, int]:
  """Every file directly or indirectly under `directory`, as {path: size in bytes}."""
  pattern = join(directory, '**')
  found = {}
  for match in FileSystems.match([pattern])[0].metadata_list:
    found[match.path] = match.size_in_bytes
  return found


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path, compression_type=RAW) as f:
    return f.read()


def open_read(path: str) -> typing.BinaryIO:
  return FileSystems.open(path, compression_type=RAW)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path`, replacing it."""
  with FileSystems.create(path, mime_type='application/octet-stream', compression_type=RAW) as f:
    f.write(data)


def create_exclusive(path: str, data: bytes) -> bool:
  """Creates `path` only if it does not exist; False when it did. Atomic on local disk (O_EXCL);
  on object stores this is check-then-write (conditional writes arrive with the cloud stores)."""
  if FileSystems.get_scheme(path) is None:
    os.makedirs(posixpath.dirname(path) or '.', exist_ok=True)
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    return True
  if FileSystems.exists(path):
    return False
  write_bytes(path, data)
  return True


def delete(paths: typing.Iterable[str]) -> None:
  paths = [p for p in paths if FileSystems.exists(p)]
  if paths:
    FileSystems.delete(paths)


def rename(sources: list[str], destinations: list[str]) -> None:
  """Moves files, replacing existing destinations. Local disk needs the parent folders first."""
  for parent in {posixpath.dirname(d) for d in destinations}:
    if FileSystems.get_scheme(parent) is None and not FileSystems.exists(parent):
      FileSystems.mkdirs(parent)
  if sources:
    FileSystems.rename(sources, destinations)


def delete_tree(directory: str, prune_parent: bool = False) -> None:
  """Deletes every file under `directory` (object stores have no real directories). With
  `prune_parent`, a local parent folder left empty goes too (e.g. DEST/_staging)."""
  delete(list_files(directory))
  if FileSystems.exists(directory):
    FileSystems.delete([directory])
  parent = posixpath.dirname(directory.rstrip('/'))
  if prune_parent and FileSystems.get_scheme(parent) is None and not list_files(parent):
    delete([parent])
