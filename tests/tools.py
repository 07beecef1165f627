"""Tools the tests build under .tools/ on first use (DuckDB's iceberg venv, pyspark 4.1.1 with
Iceberg's runtime jar, the REST catalog's jars): one builder at a time, across the pytest
workers of a parallel run and across checkouts that share one .tools/ folder."""
import contextlib
import fcntl
import hashlib
import os
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def building():
  """Held while a tool is checked for and built: a worker that finds another building waits,
  then sees it built. One lock for every tool (mvn and pip share their caches between builds);
  the lock file lives in the temporary folder, named after where .tools/ really is."""
  where = os.path.realpath(os.path.join(ROOT, '.tools'))
  name = f'eventferry-tools-{hashlib.sha1(where.encode()).hexdigest()[:12]}.lock'
  with open(os.path.join(tempfile.gettempdir(), name), 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
