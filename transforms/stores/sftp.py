"""`sftp://user@host:port/path`: a Beam FileSystem for SFTP servers (Beam has none).

Importing this module registers the scheme with Beam's FileSystems (transforms/stores/fs.py does).
Credentials come from the pipeline options or the environment, never from the URL:
  --sftp_password / SFTP_PASSWORD, --sftp_private_key PATH / SFTP_PRIVATE_KEY,
  --sftp_known_hosts PATH / SFTP_KNOWN_HOSTS (default ~/.ssh/known_hosts: the server's host key
  is always checked).
asyncssh is asynchronous; one event-loop thread per process runs it and the methods here wait
for it. One connection per server and settings is shared by all threads of the process. Files are
streamed in blocks both ways, never held whole in memory. asyncssh itself (0.2 s to import) loads
when a run first touches an sftp:// path: every run imports this module, for its flags and scheme.
"""
from __future__ import annotations

import asyncio
import io
import os
import posixpath
import threading
import typing
import urllib.parse

from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes, FileMetadata,
                                       FileSystem)
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.compat import filesystems

__all__ = ['BLOCK', 'SftpOptions', 'parse', 'client', 'SftpFileSystem', 'create_exclusive']


class _OnFirstUse:
  """Stands for asyncssh and imports it when an attribute is first asked for. Not a lazy module in
  sys.modules: Beam's pickler looks names up in every loaded module, which would load it."""

  def __getattr__(self, name: str):
    import asyncssh as module
    return getattr(module, name)


if typing.TYPE_CHECKING:
  import asyncssh
else:
  asyncssh = _OnFirstUse()

BLOCK = 1 << 20   # write buffer; SFTP requests are pipelined below it by asyncssh


class SftpOptions(PipelineOptions):
  """Credentials for sftp:// paths (also read from SFTP_PASSWORD, SFTP_PRIVATE_KEY,
  SFTP_KNOWN_HOSTS)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--sftp_password', default=None,
                        help='password for sftp:// paths. Prefer the environment variable '
                        'SFTP_PASSWORD: a flag is visible to every user of the machine in `ps` '
                        'and in shell history')
    parser.add_argument('--sftp_private_key', default=None,
                        help='private key file for sftp:// paths (instead of a password)')
    parser.add_argument('--sftp_known_hosts', default=None,
                        help="known_hosts file the server's host key is checked against "
                        '(default ~/.ssh/known_hosts)')


_loop: asyncio.AbstractEventLoop | None = None
_clients: dict[tuple, tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]] = {}
_lock = threading.Lock()


def _run(awaitable):
  """Runs `awaitable` on this process's asyncssh loop and waits for its result."""
  global _loop
  with _lock:
    if _loop is None:
      _loop = asyncio.new_event_loop()
      threading.Thread(target=_loop.run_forever, name='sftp-loop', daemon=True).start()

  async def wait():
    return await awaitable
  return asyncio.run_coroutine_threadsafe(wait(), _loop).result()


def parse(url: str) -> tuple[str, str, int, str]:
  """sftp://user@host:port/a/b -> (user, host, port, '/a/b')."""
  u = urllib.parse.urlsplit(url)
  if u.scheme != 'sftp' or not u.hostname or not u.username:
    raise ValueError(f'{url!r} is not sftp://user@host[:port]/path')
  if u.password is not None:
    raise ValueError('sftp:// URLs must not carry a password (it would show in logs): use '
                     '--sftp_password or SFTP_PASSWORD')
  return u.username, u.hostname, u.port or 22, u.path or '/'


def _settings(options) -> tuple:
  o = options.view_as(SftpOptions) if options is not None else None
  get = lambda name, env: (getattr(o, name, None) if o else None) or os.environ.get(env)
  return (get('sftp_password', 'SFTP_PASSWORD'), get('sftp_private_key', 'SFTP_PRIVATE_KEY'),
          get('sftp_known_hosts', 'SFTP_KNOWN_HOSTS'))


async def _connect(user, host, port, password, key, known_hosts):
  conn = await asyncssh.connect(
      host, port, username=user, password=password, client_keys=[key] if key else None,
      known_hosts=known_hosts or os.path.expanduser('~/.ssh/known_hosts'),
      agent_path=None, config=None, preferred_auth='publickey,password')
  return conn, await conn.start_sftp_client()


def client(url: str, options) -> tuple[asyncssh.SFTPClient, str]:
  """(connected SFTP client, remote path) for `url`; connections are reused."""
  user, host, port, path = parse(url)
  key = (user, host, port, *_settings(options))
  with _lock:
    conn = _clients.get(key)
  if conn is None or conn[0].is_closed():   # first use, or the server dropped us
    conn = _run(_connect(user, host, port, *key[3:]))
    with _lock:
      _clients[key] = conn
  return conn[1], path


class _RemoteFile(io.RawIOBase):
  """An open SFTP file and our position in it; closing closes the remote handle."""

  def __init__(self, f):
    self._f, self._pos = f, 0

  def tell(self):
    return self._pos

  def close(self):
    if not self.closed:
      _run(self._f.close())
    super().close()


class _Reader(_RemoteFile):
  """A seekable, read-only remote file: each read is one positioned SFTP request."""

  def __init__(self, f, size: int):
    super().__init__(f)
    self._size = size

  def readable(self):
    return True

  def seekable(self):
    return True

  def readinto(self, buf) -> int:
    data = _run(self._f.read(len(buf), self._pos))
    buf[:len(data)] = data
    self._pos += len(data)
    return len(data)

  def seek(self, offset, whence=io.SEEK_SET):
    self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
    return self._pos


class _Writer(_RemoteFile):
  """A write-only remote file; io.BufferedWriter in front sends it blocks of BLOCK bytes."""

  def writable(self):
    return True

  def write(self, data) -> int:
    data = bytes(data)
    _run(self._f.write(data, self._pos))
    self._pos += len(data)
    return len(data)


class SftpFileSystem(FileSystem):
  """Beam FileSystem for sftp://user@host:port/path."""

  def __init__(self, pipeline_options):
    super().__init__(pipeline_options)
    self._options = pipeline_options

  @classmethod
  def scheme(cls):
    return 'sftp'

  def _client(self, url):
    return client(url, self._options)

  def join(self, basepath, *paths):
    return '/'.join([basepath.rstrip('/'), *(p.strip('/') for p in paths)])

  def split(self, path):
    head, _, tail = path.rstrip('/').rpartition('/')
    return head, tail

  def mkdirs(self, path):
    sftp, remote = self._client(path)
    _run(sftp.makedirs(remote, exist_ok=True))

  def has_dirs(self):
    return True

  def _list(self, dir_or_prefix):
    """Every file under the folder, recursively (as Beam's local filesystem lists)."""
    sftp, remote = self._client(dir_or_prefix)
    base = dir_or_prefix.rstrip('/')

    async def walk(rel):
      out: list[FileMetadata] = []
      try:
        names = await sftp.readdir(posixpath.join(remote, rel) if rel else remote)
      except asyncssh.SFTPNoSuchFile:
        return out
      for n in names:
        if n.filename in ('.', '..'):
          continue
        child = f'{rel}/{n.filename}' if rel else n.filename
        if n.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
          out.extend(await walk(child))
        else:
          out.append(FileMetadata(f'{base}/{child}', n.attrs.size, n.attrs.mtime))
      return out

    try:
      yield from _run(walk(''))
    except (OSError, asyncssh.Error) as e:
      raise BeamIOError('List operation failed', {dir_or_prefix: e}) from e

  def create(self, path, mime_type='application/octet-stream',
             compression_type=CompressionTypes.AUTO):
    sftp, remote = self._client(path)
    _run(sftp.makedirs(posixpath.dirname(remote), exist_ok=True))
    raw = io.BufferedWriter(_Writer(_run(sftp.open(remote, 'wb'))), BLOCK)
    return self._compressed(raw, path, compression_type)

  def open(self, path, mime_type='application/octet-stream',
           compression_type=CompressionTypes.AUTO):
    sftp, remote = self._client(path)
    size = _run(sftp.getsize(remote))
    raw = io.BufferedReader(_Reader(_run(sftp.open(remote, 'rb')), size), BLOCK)
    return self._compressed(raw, path, compression_type)

  @staticmethod
  def _compressed(raw, path, compression_type):
    compression_type = filesystems.compression_of(path, compression_type)
    if compression_type == CompressionTypes.UNCOMPRESSED:
      return raw
    return CompressedFile(raw, compression_type=compression_type)

  def copy(self, source_file_names, destination_file_names):
    for src, dst in zip(source_file_names, destination_file_names):
      with self.open(src, compression_type=CompressionTypes.UNCOMPRESSED) as r, \
          self.create(dst, compression_type=CompressionTypes.UNCOMPRESSED) as w:
        while chunk := r.read(BLOCK):
          w.write(chunk)

  def rename(self, source_file_names, destination_file_names):
    """posix-rename (OpenSSH's extension) replaces an existing destination atomically."""
    errors = {}
    for src, dst in zip(source_file_names, destination_file_names):
      sftp, remote_src = self._client(src)
      _, remote_dst = self._client(dst)
      try:
        _run(sftp.makedirs(posixpath.dirname(remote_dst), exist_ok=True))
        _run(sftp.posix_rename(remote_src, remote_dst))
      except (OSError, asyncssh.Error) as e:
        errors[(src, dst)] = e
    if errors:
      raise BeamIOError('Rename operation failed', errors)

  def exists(self, path):
    sftp, remote = self._client(path)
    return _run(sftp.exists(remote))

  def size(self, path):
    sftp, remote = self._client(path)
    return _run(sftp.getsize(remote))

  def last_updated(self, path):
    sftp, remote = self._client(path)
    return _run(sftp.getmtime(remote))

  def checksum(self, path):
    return str(self.size(path))

  def metadata(self, path):
    sftp, remote = self._client(path)
    attrs = _run(sftp.stat(remote))
    return FileMetadata(path, attrs.size, attrs.mtime)

  def remove_if_empty(self, path):
    """Removes the folder only if it is empty (SFTP's rmdir refuses otherwise)."""
    sftp, remote = self._client(path)
    try:
      _run(sftp.rmdir(remote))
    except (OSError, asyncssh.Error):
      pass   # not empty, or already gone

  def delete(self, paths):
    errors = {}
    for path in paths:
      sftp, remote = self._client(path)
      try:
        if _run(sftp.isdir(remote)):
          _run(sftp.rmtree(remote))
        else:
          _run(sftp.remove(remote))
      except (OSError, asyncssh.Error) as e:
        errors[path] = e
    if errors:
      raise BeamIOError('Delete operation failed', errors)


def create_exclusive(url: str, data: bytes, options) -> bool:
  """Creates the file only if it does not exist (SFTP's O_EXCL); False when it did."""
  sftp, remote = client(url, options)
  _run(sftp.makedirs(posixpath.dirname(remote), exist_ok=True))
  try:
    f = _run(sftp.open(remote, 'xb'))
  except asyncssh.SFTPError:
    if _run(sftp.exists(remote)):
      return False
    raise
  try:
    _run(f.write(data, 0))
  finally:
    _run(f.close())
  return True
