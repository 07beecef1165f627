"""./run.sh as users and CI run it: from any folder, on machines without the Pub/Sub emulator."""
import os
import subprocess

import pytest

from pipelines import samples
from tests.conftest import DAY, ROOT
from tests.oracle import assert_lake, source_ids

pytestmark = pytest.mark.process

RUN_SH = os.path.join(ROOT, 'run.sh')


def run_sh(*args: str, cwd: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([RUN_SH, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                        env={**os.environ, **(env or {})})


def test_relative_paths_are_the_callers(tmp_path):
  """`./run.sh import --source ./bucket --lake ./lake` from another folder reads and writes there,
  not in the project's folder."""
  table = samples.events(DAY, 500, seed=21, invalid=0, duplicates=0)
  samples.write_day(str(tmp_path / 'bucket'), DAY, table, files=1)
  proc = run_sh('import', '--source', './bucket', '--lake', './lake', '--date', str(DAY),
                cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert_lake(str(tmp_path / 'lake'), {str(DAY): source_ids(table)})
  assert not os.path.exists(os.path.join(ROOT, 'lake')) and not os.path.exists(
      os.path.join(ROOT, 'bucket'))


def test_missing_pubsub_emulator_skips_those_tests_and_says_why(tmp_path):
  missing = str(tmp_path / 'no-google-cloud-cli' / 'cloud-pubsub-emulator')
  proc = run_sh('test', 'tests/test_ingest_pubsub.py', cwd=str(tmp_path),
                env={'EVENTFERRY_PUBSUB_EMULATOR': missing})
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '2 skipped' in proc.stdout and 'failed' not in proc.stdout
  assert proc.stdout.count('SKIPPED [1] tests/test_ingest_pubsub.py') == 2
  assert f'no Pub/Sub emulator at {missing}' in proc.stdout
  assert f'no Pub/Sub emulator at {missing}' in proc.stderr   # run.sh's own note


def test_help_names_every_export_format(tmp_path):
  from pipelines.export_events import FORMATS
  text = run_sh('help', cwd=str(tmp_path)).stdout
  export = next(line for line in text.splitlines() if line.strip().startswith('export'))
  names = {'parquet': 'Parquet', 'jsonl': 'JSON lines', 'csv': 'CSV', 'avro': 'Avro', 'xml': 'XML',
           'iceberg': 'Iceberg'}
  assert set(names) == set(FORMATS)
  assert all(name in export for name in names.values()), export
