"""conftest.run_cli runs a command in this process: what it returns must be what the command
gives as a process of its own (run_process, the oracle), and it must leave this process as it
found it."""
import json
import logging
import os

import pytest

from tests.conftest import run_cli, run_process
from transforms.compat import options as compat_options

pytestmark = pytest.mark.process

CASES = [
    ('pipelines.import_events', '--help'),
    ('pipelines.import_events', '--lake', 'lake', '--date', '2023-01-01', '--no_such_flag'),
    ('pipelines.export_events', '--lake', 'lake', '--date', 'not-a-date', '--dest', 'dest'),
    ('pipelines.status', '--log_format', 'json'),
    ('pipelines.schema', 'import'),
    ('pipelines.schema', 'no-such-contract'),
]


@pytest.mark.parametrize('args', CASES, ids=lambda a: ' '.join(a[:2]))
def test_in_process_gives_what_a_process_gives(args):
  inside, outside = run_cli(*args, check=False), run_process(*args, check=False)
  assert (inside.returncode, inside.stdout, untimed(inside.stderr)) == (
      outside.returncode, outside.stdout, untimed(outside.stderr))


def untimed(stderr: str) -> str:
  """JSON log lines without their time; text as it is."""
  if not stderr.startswith('{'):
    return stderr
  return '\n'.join(json.dumps({k: v for k, v in json.loads(line).items() if k != 'time'})
                   for line in stderr.splitlines())


def test_a_run_leaves_logging_store_options_and_environment_as_they_were(monkeypatch, tmp_path):
  monkeypatch.delenv('EVENTFERRY_RUNNER_PROBE', raising=False)
  root = logging.getLogger()
  before = root.handlers[:], root.level, compat_options.filesystem_options()
  proc = run_cli('pipelines.check', '--dest', str(tmp_path / 'dest'), '--s3_region_name',
                 'eu-west-3', env={'EVENTFERRY_RUNNER_PROBE': '1'})
  assert 'OK' in proc.stdout
  assert (root.handlers[:], root.level, compat_options.filesystem_options()) == before
  assert 'EVENTFERRY_RUNNER_PROBE' not in os.environ
