"""Ctrl-C and crashes mid-export: the real `./run.sh export` gets a real SIGINT while it writes a
file; a run killed outright leaves its staging, which the next run of the day removes."""
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.exportkit import bulk_rows, data_files, export, lake_day, read_export

pytestmark = pytest.mark.process

DT = '2023-01-01'


def files_under(folder) -> list[str]:
  return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]


def assert_one_error_line(err: str) -> None:
  """The run ends with one error line; before it, stderr holds only the periodic progress lines
  a run longer than --progress_every prints when stderr is not a terminal."""
  lines = err.strip().splitlines()
  assert lines and 'interrupted' in lines[-1], err
  assert all(line.startswith(('import: ', 'export: ')) for line in lines[:-1]), err


def test_sigint_mid_write_exits_130_in_one_line_and_leaves_nothing_behind(tmp_path):
  lake, dest = tmp_path / 'lake', tmp_path / 'dest'
  lake_day(lake, DT, [bulk_rows(150_000)])
  proc = subprocess.Popen(['./run.sh', 'export', '--lake', str(lake), '--dest', str(dest),
                           '--date', DT, '--format', 'jsonl', '--compression', 'gzip'],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline:
    staged = files_under(dest / '_staging')
    if staged and os.path.getsize(staged[0]) > 0:   # mid-write: the file has begun
      break
    time.sleep(0.02)
  assert proc.poll() is None, 'the export ended before it could be interrupted'
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err
  assert_one_error_line(err)
  assert not os.path.exists(dest / '_staging')
  assert files_under(dest / '_eventferry' / 'locks') == []          # the rerun needs no flag
  assert not os.path.exists(dest / f'dt={DT}' / '_SUCCESS')
  assert export(lake, dest, '--date', DT, '--format', 'jsonl', '--compression', 'gzip') == 0
  assert sum(len(read_export(f, 'jsonl')) for f in data_files(dest)) == 150_000


def test_staging_of_a_run_that_died_is_removed_by_the_next_run_of_the_day(tmp_path):
  lake, dest = tmp_path / 'lake', tmp_path / 'dest'
  lake_day(lake, DT, [bulk_rows(1000), bulk_rows(10)])
  lake_day(lake, '2023-01-02', [bulk_rows(5, '2023-01-02')])
  dead = run_cli('pipelines.export_events', '--lake', str(lake), '--dest', str(dest),
                 '--from_date', DT, '--to_date', '2023-01-02', '--run_id', 'dead-run',
                 check=False, env={'EVENTFERRY_KILL_AT': 'staged'})
  assert dead.returncode == -signal.SIGKILL
  left = files_under(dest / '_staging' / 'dead-run')
  assert left, 'the killed run staged nothing'
  with open(left[0], 'r+b') as f:   # as if it had died mid-write
    f.truncate(7)
  # another day's run leaves the dead run's staging of 2023-01-01 alone: that day is not its own
  assert export(lake, dest, '--date', '2023-01-02', '--break_lock', 'dead-run') == 0
  assert os.path.exists(dest / '_staging' / 'dead-run' / f'dt={DT}')
  assert export(lake, dest, '--date', DT, '--break_lock', 'dead-run') == 0
  assert not os.path.exists(dest / '_staging')
  assert sum(len(read_export(f, 'parquet')) for f in data_files(dest)) == 1015


def test_sigint_mid_import_exits_130_in_one_line_and_leaves_no_staging(tmp_path):
  """The import shares the mechanism: one line, exit 130, its staging and locks gone."""
  import pyarrow.parquet as pq
  bucket, lake = tmp_path / 'bucket', tmp_path / 'lake'
  (bucket / f'dt={DT}').mkdir(parents=True)
  for i in range(4):
    pq.write_table(bulk_rows(60_000), bucket / f'dt={DT}' / f'part-{i}.parquet')
  (bucket / f'dt={DT}' / '_SUCCESS').touch()
  proc = subprocess.Popen(['./run.sh', 'import', '--source', str(bucket), '--lake', str(lake),
                           '--date', DT], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline and not files_under(lake / '_staging'):
    time.sleep(0.02)
  assert proc.poll() is None, 'the import ended before it could be interrupted'
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err
  assert_one_error_line(err)
  assert not os.path.exists(lake / '_staging')
  assert files_under(lake / '_eventferry' / 'locks') == []
  assert not os.path.exists(lake / f'dt={DT}' / '_SUCCESS')
