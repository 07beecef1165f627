"""Shared builders: small customer files with exactly known rows."""
import contextlib
import datetime
import decimal
import importlib
import io
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback

import transforms  # noqa: F401  first: Beam imported as the commands import it (transforms/compat/startup.py)
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines import options as opts
from transforms.compat import options as compat_options
from transforms.kernels import raw, rawjson
from transforms.lake import commit
from transforms.read import with_lineage
from transforms.stores import fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests' JVMs (Spark, the Pub/Sub emulator, Iceberg's REST catalog) live for seconds on
# small data: the client compiler alone and the serial collector start Spark about 2 s sooner
# (9 s against 11 s for a local session, write and read).
os.environ.setdefault('JDK_JAVA_OPTIONS', '-XX:TieredStopAtLevel=1 -XX:+UseSerialGC')
MAP = pa.map_(pa.string(), pa.string())
DAY = datetime.date(2023, 1, 1)


def uuid(n: int) -> str:
  return f'00000000-0000-4000-8000-{n:012x}'


def event(n: int, **over) -> dict:
  """A valid import row; `over` replaces fields."""
  row = {
      'ts': datetime.datetime(2023, 1, 1, 0, 1, 2, 333000, tzinfo=datetime.timezone.utc)
            + datetime.timedelta(seconds=n),
      'event_key': 'purchase',
      'identifiers': [('id', f'user-{n}'), ('device_id', f'DEV-{n}')],
      'insert_id': uuid(n),
      'metric_value': decimal.Decimal('1.500000'),
      'user_properties': [('grade', 'GOLD')],
      'event_properties': [('product_category', '레저')],
      'platform_properties': [('osname', 'Android'), ('appversion', '6.9.0')],
  }
  row.update(over)
  return row


SCHEMA = pa.schema([('ts', pa.timestamp('ms', tz='UTC')), ('event_key', pa.string()),
                    ('identifiers', MAP), ('insert_id', pa.string()),
                    ('metric_value', pa.decimal128(24, 6)), ('user_properties', MAP),
                    ('event_properties', MAP), ('platform_properties', MAP)])


def table(rows: list[dict], schema: pa.Schema = SCHEMA) -> pa.Table:
  return pa.Table.from_pylist(rows, schema=schema)


def raw_batch(rows: list[dict], schema: pa.Schema = SCHEMA, source: str = 'f.parquet'):
  return with_lineage(table(rows, schema).combine_chunks().to_batches()[0], source, 0)


DAY_MS = int(datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000)


def parse_payloads(payloads: list[bytes], c_parser: bool, monkeypatch) -> tuple:
  """Raw payloads (numbered from 1, received on DAY) through the ingest's parse, by the C parser
  or by the msgspec path alone -> (rows, rejected rows) as RecordBatches."""
  chunk = raw.RawChunk(source=['f'] * len(payloads), rows=list(range(1, len(payloads) + 1)),
                       payloads=payloads, received_ms=DAY_MS)
  with monkeypatch.context() as m:
    if not c_parser:
      m.setattr(rawjson, 'parse', None)
    return raw.parse_chunk(chunk)[:2]


def write_file(path: str, t: pa.Table, **kwargs) -> None:
  sink = pa.BufferOutputStream()
  pq.write_table(t, sink, **kwargs)
  fs.write_bytes(path, sink.getvalue().to_pybytes())


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs a command (`'pipelines.X', *flags`) in this process, as `python -m pipelines.X` would:
  through its `main_guard`, with stdout and stderr captured and `env` set for the call. It costs
  no interpreter or Beam start (~2 s a call). A run told to kill or stop itself (KILL_AT, STOP_AT)
  always gets a real process; tests of the process itself (signals, what reaches the terminal,
  settings read at import) call run_process."""
  _not_fast('runs a command')
  if env and {commit.KILL_AT, commit.STOP_AT} & set(env):
    return run_process(*args, check=check, env=env)
  module, argv = importlib.import_module(args[0]), list(args[1:])
  out, err = io.StringIO(), io.StringIO()
  with _environ(env or {}), _process_state_kept(), contextlib.redirect_stdout(out), \
       contextlib.redirect_stderr(err):
    try:   # demo and schema have a main(argv) of their own; the rest go through main_guard
      code = module.main(argv) if hasattr(module, 'main') else opts.main_guard(module.run, argv)
    except SystemExit as e:   # argparse's --help and usage errors
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:   # noqa: BLE001 - what `python -m` prints before it exits 1
      traceback.print_exc()
      code = 1
  proc = subprocess.CompletedProcess(['python', '-m', *args], code or 0, out.getvalue(), err.getvalue())
  return _checked(proc, check)


def run_process(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs a pipeline module as a user does (python -m ...), from the repository root, in a
  process of its own."""
  _not_fast('starts a process')
  proc = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env={**os.environ, **(env or {})})
  return _checked(proc, check)


def _checked(proc: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
  if check and proc.returncode != 0:
    raise AssertionError(f'exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}')
  return proc


@contextlib.contextmanager
def _environ(env: dict):
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


@contextlib.contextmanager
def _process_state_kept():
  """What a command sets for its process and a test's own code uses after it: the root logger
  (main_guard points it at the command's stderr; pytest's handlers come back) and the store
  options of this process's storage helpers (fs.configure; a run with a wrong key must not leave
  the test's oracle reading with it)."""
  root, ours = logging.getLogger(), logging.getLogger('eventferry')
  saved = root.handlers[:], root.level, ours.handlers[:], ours.level
  store_options = compat_options.filesystem_options()
  try:
    yield
  finally:
    root.handlers[:], ours.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    ours.setLevel(saved[3])
    FileSystems.set_options(store_options)


@contextlib.contextmanager
def running_cli(*args: str, log: str, env: dict | None = None):
  """A pipeline module that runs until stopped (streaming), output to `log`; terminated on exit."""
  _not_fast('starts a process')
  from tests import servers
  with open(log, 'wb') as out:
    proc = subprocess.Popen([sys.executable, '-m', *args], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            preexec_fn=servers.die_with_parent())
    try:
      yield proc
    finally:
      proc.terminate()
      proc.wait(30)


def parquet_rows(directory: str) -> int:
  """Rows in the Parquet files of a local folder (0 if it is not there yet)."""
  if not os.path.isdir(directory):
    return 0
  return sum(pq.read_metadata(os.path.join(directory, f)).num_rows
             for f in os.listdir(directory) if f.endswith('.parquet'))


def wait_for(done, proc: subprocess.Popen, seconds: float) -> None:
  """Polls `done()` until true, the process exits or `seconds` pass."""
  deadline = time.monotonic() + seconds
  while not done() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.5)


# Test tiers (pyproject.toml lists them): a module that runs pipelines or processes says so with
# `pytestmark = pytest.mark.engine` (or process, prism, ...); fixtures below mark their users; the
# rest is `fast`. A fast test that runs a command fails, naming the mark its module needs.
SLOW_TIERS = ('engine', 'process', 'servers', 'spark', 'pubsub', 'prism')
FIXTURE_TIERS = {'servers_dir': 'servers', 'spark': 'spark'}
_running: dict = {'fast': False}


# The modules that take longest (worker-seconds of a full run, docs/testing.md), handed out
# first: pytest-xdist gives whole modules to the worker that is free, so a long module that
# starts last keeps one worker busy after the other has finished.
LONGEST_FIRST = ('test_iceberg_lake', 'test_forget_clouds', 'test_forget', 'test_clouds',
                 'test_iceberg_export', 'test_export_engines', 'test_crash_rerun',
                 'test_iceberg_ingest', 'test_iceberg_maintain')


def pytest_collection_modifyitems(items) -> None:
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))   # stable: modules keep their order
  for item in items:
    for fixture, tier in FIXTURE_TIERS.items():
      if fixture in item.fixturenames:
        item.add_marker(tier)
    if not any(item.get_closest_marker(t) for t in SLOW_TIERS):
      item.add_marker('fast')


def pytest_runtest_setup(item) -> None:
  _running['fast'] = item.get_closest_marker('fast') is not None


def _not_fast(what: str) -> None:
  if _running['fast']:
    raise AssertionError(f'a fast test {what}: mark its module (pytestmark = pytest.mark.engine, '
                         'or process for a real process; pyproject.toml lists the tiers)')


@pytest.fixture
def day() -> datetime.date:
  return DAY


# Real stores on loopback (tests/servers.py), one of each per test session, started on first use.

SFTP_USER, SFTP_PASSWORD = 'ferry', 'sftp-SECRET-5d0b3f91'


@pytest.fixture(scope='session')
def ops_template(tmp_path_factory) -> str:
  """tests/opskit.py's local site (source, lake, destination) built once by the real commands:
  tests that damage it work on opskit.copy_of(ops_template, tmp_path)."""
  from tests import opskit
  root = str(tmp_path_factory.mktemp('ops-template'))
  opskit.build(opskit.Site(root))
  return root


@pytest.fixture(scope='session')
def servers_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('servers'))


@pytest.fixture(scope='session')
def s3_store(servers_dir):
  import boto3
  from tests import servers
  server = servers.moto(servers_dir)
  boto3.client('s3', endpoint_url=server.endpoint, region_name='us-east-1',
               aws_access_key_id=servers.MOTO_KEY,
               aws_secret_access_key=servers.MOTO_SECRET).create_bucket(Bucket='ferry')
  yield servers.Store('s3', 's3://ferry/t', [
      '--s3_endpoint_url', server.endpoint, '--s3_region_name', 'us-east-1',
      '--s3_access_key_id', servers.MOTO_KEY, '--s3_secret_access_key', servers.MOTO_SECRET],
      server=server)
  server.stop()


@pytest.fixture(scope='session')
def gcs_store(servers_dir):
  from google.cloud import storage as gcs
  from tests import servers
  server = servers.gcs(servers_dir)
  env = {'STORAGE_EMULATOR_HOST': server.endpoint}
  os.environ.update(env)   # this process's own helpers reach the emulator too
  gcs.Client.create_anonymous_client().create_bucket('ferry')
  yield servers.Store('gcs', 'gs://ferry/t', [], env, server=server)
  server.stop()


@pytest.fixture(scope='session')
def azure_store(servers_dir):
  from azure.storage.blob import BlobServiceClient
  from tests import servers
  server = servers.azurite(servers_dir)
  conn = servers.azurite_connection_string(server.port)
  BlobServiceClient.from_connection_string(conn).create_container('ferry')
  yield servers.Store('azure', 'azfs://devstoreaccount1/ferry/t',
                      ['--azure_connection_string', conn], server=server)
  server.stop()


@pytest.fixture(scope='session')
def sftp_store(servers_dir):
  from tests import servers
  server = servers.sftp(servers_dir, SFTP_USER, SFTP_PASSWORD)
  yield servers.Store('sftp', f'sftp://{SFTP_USER}@{servers.HOST}:{server.port}/t', [
      '--sftp_password', SFTP_PASSWORD,
      '--sftp_known_hosts', os.path.join(servers_dir, 'known_hosts')], server=server,
      extra={'root': os.path.join(servers_dir, 'sftp-root')})
  server.stop()


@pytest.fixture(params=['s3', 'gcs', 'azure', 'sftp'])
def store(request):
  """Each real store in turn, with this process's storage helpers pointed at it."""
  from apache_beam.options.pipeline_options import PipelineOptions
  s = request.getfixturevalue(f'{request.param}_store')
  fs.configure(PipelineOptions(s.flags))
  return s


@pytest.fixture(scope='session')
def spark():
  """One local Spark for the session (it takes about 35 s to start on a loaded 2-core machine),
  in UTC, writing INT96 timestamps as Spark's own jobs long did. Skipped without pyspark or Java."""
  pytest.importorskip('pyspark')
  if shutil.which('java') is None:
    pytest.skip('Spark needs Java (17) on PATH')
  from pyspark.sql import SparkSession
  session = (SparkSession.builder.master('local[1]').appName('eventferry-tests')
             .config('spark.ui.enabled', 'false').config('spark.driver.host', '127.0.0.1')
             .config('spark.driver.bindAddress', '127.0.0.1')
             .config('spark.sql.session.timeZone', 'UTC').config('spark.sql.shuffle.partitions', '1')
             .config('spark.sql.parquet.outputTimestampType', 'INT96').getOrCreate())
  yield session
  session.stop()



@pytest.fixture(scope='session')
def duckdb_iceberg() -> str:
  """The python of DuckDB 1.5.5 with its iceberg extension (tests/icebergkit.py)."""
  from tests import icebergkit
  return icebergkit.duckdb_iceberg_python()


@pytest.fixture(scope='session')
def spark_iceberg() -> tuple[str, str]:
  """(python, jar) of pyspark 4.1.1 with Iceberg's Spark runtime (tests/icebergkit.py)."""
  from tests import icebergkit
  return icebergkit.spark_iceberg_venv()


@pytest.fixture(scope='session')
def postgres(servers_dir):
  """A PostgreSQL server on 127.0.0.1 for the session: its SQLAlchemy-style URL with password."""
  from tests import icebergkit, servers
  server = servers.postgres(servers_dir, icebergkit.PG_USER, icebergkit.PG_PASSWORD)
  yield (f'postgresql://{icebergkit.PG_USER}:{icebergkit.PG_PASSWORD}@{servers.HOST}:{server.port}/'
         f'{icebergkit.PG_USER}')
  server.stop()
