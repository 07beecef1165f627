"""Real storage services on loopback for the tests: moto (S3, STS, IAM), gcp-storage-emulator
(GCS), Azurite (Azure Blob, from npm under .tools/), an asyncssh SFTP server, Debian's PostgreSQL
and Iceberg's REST catalog test server (Java, from Maven Central into .tools/). Each runs as a
child process on a free 127.0.0.1 port and is stopped by its PID; a child also dies when the
process that started it dies, even by SIGKILL (`die_with_parent`), so a killed pytest leaves no
servers behind.

A `Store` says how the commands reach one of them: a root URL, the command-line flags and the
environment variables a user would give.
"""
import contextlib
import ctypes
import dataclasses
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests import tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = '127.0.0.1'
MOTO_KEY, MOTO_SECRET = 'AKIDTESTING0001', 's3-SECRET-7c1e9a2b40d6'
AZURITE_KEY = ('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/'
               'KBHBeksoGMGw==')   # Azurite's documented development account key


@dataclasses.dataclass
class Store:
  name: str
  root: str                      # e.g. s3://bucket/prefix
  flags: list[str]               # command-line flags that reach the store
  env: dict[str, str] = dataclasses.field(default_factory=dict)
  server: 'Server | None' = None
  extra: dict = dataclasses.field(default_factory=dict)

  def url(self, *parts: str) -> str:
    return '/'.join([self.root.rstrip('/'), *parts])


@dataclasses.dataclass
class Server:
  proc: subprocess.Popen
  port: int
  log: str

  @property
  def endpoint(self) -> str:
    return f'http://{HOST}:{self.port}'

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()


PR_SET_PDEATHSIG = 1   # linux/prctl.h


def _kill_me_with(parent: int) -> None:
  """Runs in the child between fork and exec: Linux sends it SIGKILL when the thread that forked
  it ends (servers are started from pytest's main thread, so: when pytest ends, however). The
  setting survives exec; if the parent died before it took effect, die now."""
  ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent:
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent():
  """`preexec_fn` for subprocess.Popen: the child dies with this process."""
  return functools.partial(_kill_me_with, os.getpid())


def free_port() -> int:
  with socket.socket() as s:
    s.bind((HOST, 0))
    return s.getsockname()[1]


def start(cmd: list[str], workdir: str, name: str, ready, env: dict | None = None,
          timeout: float = 60) -> Server:
  """Starts `cmd` on a free port (`{port}` in `cmd` and in `env`'s values), logging to
  WORKDIR/NAME.log, and waits until `ready(port)` holds. Another process (a parallel pytest
  worker) may take the port between `free_port` and the server's bind: then it starts again on
  another one."""
  for attempt in range(3):
    port = free_port()
    log = os.path.join(workdir, f'{name}.log')
    with open(log, 'wb') as out:
      proc = subprocess.Popen([c.format(port=port) for c in cmd], stdout=out,
                              stderr=subprocess.STDOUT, cwd=workdir,
                              env={**os.environ, **{k: v.replace('{port}', str(port)) for k, v in (env or {}).items()}},
                              preexec_fn=die_with_parent())
    server = Server(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if proc.poll() is not None:
        text = open(log, errors='replace').read()
        if attempt < 2 and ('in use' in text or 'EADDRINUSE' in text):
          break
        raise RuntimeError(f'{name} exited with {proc.returncode}: {text[-2000:]}')
      with contextlib.suppress(OSError):
        if ready(port):
          return server
      time.sleep(0.2)
    else:
      server.stop()
      raise RuntimeError(f'{name} did not become ready in {timeout}s: {open(log).read()[-2000:]}')
  raise AssertionError('unreachable')


def http_ok(path: str = '/'):
  def ready(port):
    try:
      urllib.request.urlopen(f'http://{HOST}:{port}{path}', timeout=2)
    except urllib.error.HTTPError:
      pass   # any HTTP answer means it listens
    return True
  return ready


def tcp_open(port: int) -> bool:
  with socket.create_connection((HOST, port), timeout=2):
    return True


def moto(workdir: str, env: dict | None = None) -> Server:
  return start([sys.executable, '-m', 'moto.server', '-H', HOST, '-p', '{port}'], workdir, 'moto',
               http_ok('/moto-api/'), env)


def gcs(workdir: str) -> Server:
  exe = os.path.join(os.path.dirname(sys.executable), 'gcp-storage-emulator')
  return start([exe, 'start', '--host', HOST, '--port', '{port}', '--in-memory', '--quiet'],
               workdir, 'gcs', http_ok('/storage/v1/b'))


def azurite(workdir: str) -> Server:
  exe = os.path.join(ROOT, '.tools', 'node_modules', '.bin', 'azurite-blob')
  data = os.path.join(workdir, 'azurite')
  os.makedirs(data, exist_ok=True)
  return start([exe, '--blobHost', HOST, '--blobPort', '{port}', '--location', data, '--silent',
                '--disableTelemetry', '--skipApiVersionCheck'], workdir, 'azurite', tcp_open)


def azurite_connection_string(port: int) -> str:
  return (f'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};'
          f'BlobEndpoint=http://{HOST}:{port}/devstoreaccount1;')


def sftp(workdir: str, user: str, password: str, client_key: str | None = None) -> Server:
  """tests/sftp_server.py serving WORKDIR/sftp-root; writes WORKDIR/known_hosts for the client."""
  root = os.path.join(workdir, 'sftp-root')
  os.makedirs(root, exist_ok=True)
  cmd = [sys.executable, os.path.join(ROOT, 'tests', 'sftp_server.py'), '--host', HOST, '--port', '{port}',
         '--root', root, '--user', user, '--host-key', os.path.join(workdir, 'host_key'),
         '--known-hosts', os.path.join(workdir, 'known_hosts')]
  if client_key:
    cmd += ['--authorized-key', client_key + '.pub']
  return start(cmd, workdir, 'sftp', tcp_open, env={'SFTP_TEST_PASSWORD': password})


class RecordingProxy:
  """An HTTP proxy on loopback in front of a server that records every request (method, path
  with query, headers, the first 64 KiB of the body) in `seen`, and with `fail_every` answers
  every n-th one 503 SlowDown instead of forwarding it: transient errors as S3 gives them under
  load. What a client really sends, where an emulator does not keep it (GCS KMS keys, Azure
  encryption scopes)."""

  def __init__(self, target_port: int, fail_every: int = 0):
    import http.client
    import http.server
    import threading
    proxy = self
    self.requests = self.failed = 0
    self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = 'HTTP/1.1'

      def log_message(self, *args):
        pass

      def _handle(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        with lock:
          proxy.requests += 1
          fail = bool(fail_every) and proxy.requests % fail_every == 0
          proxy.failed += fail
          proxy.seen.append((self.command, self.path, {k.lower(): v for k, v in
                                                       self.headers.items()}, body[:65536]))
        if fail:
          error = b'<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
          self.send_response(503)
          self.send_header('Content-Length', str(len(error)))
          self.end_headers()
          self.wfile.write(error)
          return
        conn = http.client.HTTPConnection(HOST, target_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != 'connection'}
        conn.request(self.command, self.path, body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        length = str(len(data)) if self.command != 'HEAD' else reply.getheader('Content-Length', '0')
        for k, v in reply.getheaders():
          if k.lower() not in ('transfer-encoding', 'connection', 'content-length', 'date', 'server'):
            self.send_header(k, v)
        self.send_header('Content-Length', length)   # HEAD: the object's size, with no body
        self.end_headers()
        if self.command != 'HEAD':
          self.wfile.write(data)
        conn.close()

      do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    self._server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    self.port = self._server.server_address[1]
    threading.Thread(target=self._server.serve_forever, daemon=True).start()

  @property
  def endpoint(self) -> str:
    return f'http://{HOST}:{self.port}'

  def stop(self) -> None:
    self._server.shutdown()
    self._server.server_close()


POSTGRES_BIN = sorted(__import__('glob').glob('/usr/lib/postgresql/*/bin'))


def _as_postgres() -> list[str]:
  """PostgreSQL refuses to run as root: as root, run it as Debian's postgres user."""
  if os.geteuid() != 0:
    return []
  import pwd
  user = pwd.getpwnam('postgres')
  return ['setpriv', f'--reuid={user.pw_uid}', f'--regid={user.pw_gid}', '--init-groups',
          '--pdeathsig', 'KILL']   # the credentials change cleared die_with_parent's setting


def postgres(workdir: str, user: str, password: str) -> Server:
  """Debian's PostgreSQL server on loopback, its cluster under WORKDIR/postgres, with `user`
  (a superuser: it creates what it needs) and database `user`."""
  if not POSTGRES_BIN:
    raise RuntimeError('no PostgreSQL server: apt-get install postgresql')
  import tempfile
  # Its own folder outside pytest's (which only root may enter), removed by the OS's tmp cleanup.
  home = tempfile.mkdtemp(prefix='eventferry-postgres-')
  bin_dir, data = POSTGRES_BIN[-1], os.path.join(home, 'data')
  secret = os.path.join(home, 'password')
  with open(secret, 'w') as f:
    f.write(password)
  os.makedirs(data)
  if os.geteuid() == 0:
    import pwd
    user_ids = pwd.getpwnam('postgres')
    for path in (home, data, secret):
      os.chown(path, user_ids.pw_uid, user_ids.pw_gid)
  subprocess.run([*_as_postgres(), os.path.join(bin_dir, 'initdb'), '-D', data, '-U', user,
                  '--pwfile', secret, '-A', 'scram-sha-256', '--no-sync'],
                 check=True, capture_output=True, cwd=home)
  server = start([*_as_postgres(), os.path.join(bin_dir, 'postgres'), '-D', data, '-h', HOST,
                  '-p', '{port}', '-k', data, '-c', 'fsync=off'], workdir, 'postgres', tcp_open)
  subprocess.run([*_as_postgres(), os.path.join(bin_dir, 'createdb'), '-h', HOST, '-p',
                  str(server.port), '-U', user, user], check=True, capture_output=True,
                 env={**os.environ, 'PGPASSWORD': password})
  return PostgresServer(server.proc, server.port, server.log)


class PostgresServer(Server):
  def stop(self) -> None:
    """SIGINT: a fast shutdown, which does not wait for pooled client connections."""
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGINT)
    super().stop()


REST_CATALOG_JARS = os.path.join(ROOT, '.tools', 'rest-catalog', 'jars')
# Iceberg publishes its REST catalog test server (RESTCatalogServer) only as the test-fixtures jar
# of iceberg-open-api (1.11.0; 1.12.0 has none), whose pom names no dependencies: what the server
# needs is listed here (the REST adapter and servlet live in iceberg-core's tests jar; Jetty 12.1
# as Iceberg 1.11 builds with; a JDBC catalog on SQLite behind it; Hadoop for its file IO).
REST_CATALOG_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eventferry.tests</groupId><artifactId>rest-catalog</artifactId><version>1</version>
  <packaging>pom</packaging>
  <properties><iceberg>1.11.0</iceberg><jetty>12.1.8</jetty></properties>
  <dependencies>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-open-api</artifactId>
      <version>${iceberg}</version><classifier>test-fixtures</classifier></dependency>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-core</artifactId>
      <version>${iceberg}</version></dependency>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-core</artifactId>
      <version>${iceberg}</version><classifier>tests</classifier></dependency>
    <dependency><groupId>org.eclipse.jetty.ee10</groupId><artifactId>jetty-ee10-servlet</artifactId>
      <version>${jetty}</version></dependency>
    <dependency><groupId>org.eclipse.jetty.compression</groupId><artifactId>jetty-compression-server</artifactId>
      <version>${jetty}</version></dependency>
    <dependency><groupId>org.eclipse.jetty.compression</groupId><artifactId>jetty-compression-gzip</artifactId>
      <version>${jetty}</version></dependency>
    <dependency><groupId>org.xerial</groupId><artifactId>sqlite-jdbc</artifactId><version>3.46.1.0</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>2.0.16</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-client-api</artifactId><version>3.4.1</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-client-runtime</artifactId><version>3.4.1</version></dependency>
  </dependencies>
</project>
"""


def rest_catalog_jars() -> str:
  """The server's classpath under .tools/rest-catalog/jars, fetched by mvn the first time
  (about 85 MB); raises RuntimeError with mvn's words when that fails."""
  stamp = os.path.join(REST_CATALOG_JARS, '.complete')
  with tools.building():
    if os.path.exists(stamp):
      return os.path.join(REST_CATALOG_JARS, '*')
    folder = os.path.dirname(REST_CATALOG_JARS)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'pom.xml'), 'w') as f:
      f.write(REST_CATALOG_POM)
    done = subprocess.run(['mvn', '-q', '-B', 'dependency:copy-dependencies',
                           f'-DoutputDirectory={REST_CATALOG_JARS}'], cwd=folder,
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
      raise RuntimeError(f'mvn could not fetch the REST catalog server: {done.stdout[-2000:]}')
    open(stamp, 'w').close()
  return os.path.join(REST_CATALOG_JARS, '*')


def rest_catalog(workdir: str, warehouse: str) -> Server:
  """Iceberg's RESTCatalogServer (Java 17) on a free port, a JDBC catalog on SQLite under
  WORKDIR behind it, tables created under `warehouse` (a local folder: its file IO is Hadoop's).
  Its settings come from CATALOG_* variables (RCKUtils: CATALOG_REST_PORT is rest.port). It
  listens on every interface: the server takes only a port, no host."""
  classpath = rest_catalog_jars()
  env = {'CATALOG_WAREHOUSE': warehouse, 'CATALOG_REST_PORT': '{port}',
         'CATALOG_URI': f'jdbc:sqlite:file:{os.path.join(workdir, "rest-catalog.db")}'}
  return start(['java', '-cp', classpath, 'org.apache.iceberg.rest.RESTCatalogServer'], workdir,
               'rest-catalog', http_ok('/v1/config'), env, timeout=120)
