"""Tools the tests build under .tools/ (DuckDB's iceberg venv, pyspark 4.1.1 with Iceberg's
runtime jar, the REST catalog's jars): on first use, one builder at a time, across the pytest
workers of a parallel run and across checkouts that share one .tools/ folder. `./run.sh test`
builds them all before the suite (`python -m tests.tools`), as it installs the venv and Prism,
so that the suite's own time is the tests'."""
import contextlib
import fcntl
import hashlib
import os
import sys
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


def build_all() -> int:
  """Builds every tool that is missing; a tool that cannot be built is one line (its tests skip
  or fail with the reason), never a stop."""
  import time

  from _pytest.outcomes import Skipped

  from tests import icebergkit, servers
  for name, build in (('DuckDB with its iceberg extension', icebergkit.duckdb_iceberg_python),
                      ('pyspark 4.1.1 with the Iceberg runtime', icebergkit.spark_iceberg_venv),
                      ("Iceberg's REST catalog server", servers.rest_catalog_jars)):
    start = time.monotonic()
    try:
      build()
    except (Skipped, Exception) as e:   # noqa: BLE001 - any failure: one line, the suite runs
      print(f'run.sh: could not build {name} ({str(e).splitlines()[0]}); its tests will say why',
            file=sys.stderr)
      continue
    if time.monotonic() - start > 5:
      print(f'run.sh: built {name} under .tools/ ({time.monotonic() - start:.0f} s)', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(build_all())
