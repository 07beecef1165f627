"""Commands run as an operator runs them (real subprocesses of ./run.sh from
another folder), on data written by real tools, checked against independent readers."""
import glob
import json
import os
import signal
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SH = os.path.join(ROOT, 'run.sh')


def _customer_day(root: str, day: str) -> None:
  """One small day written by pyarrow, with its _SUCCESS."""
  folder = os.path.join(root, f'dt={day}')
  os.makedirs(folder)
  n = 3
  pq.write_table(pa.table({
      'ts': pa.array([f'{day}T00:00:0{i}Z' for i in range(n)]),
      'event_key': ['e'] * n,
      'identifiers': pa.array([[('id', f'u{i}'), ('device_id', 'd')] for i in range(n)],
                              pa.map_(pa.string(), pa.string())),
      'insert_id': [f'00000000-0000-4000-8000-{i:012x}' for i in range(n)],
      'metric_value': [1, 2, 3],
      'platform_properties': pa.array([[('osname', 'ios'), ('appversion', '1')]] * n,
                                      pa.map_(pa.string(), pa.string())),
  }), os.path.join(folder, 'p.parquet'))
  open(os.path.join(folder, '_SUCCESS'), 'w').close()


def _import(cwd) -> subprocess.Popen:
  return subprocess.Popen(
      [RUN_SH, 'import', '--source', 'src', '--date', '2023-01-01', '--lake', 'lake'],
      cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope='module')
def whole_run(tmp_path_factory) -> float:
  """Seconds of the same import left alone, as this machine runs it now: the Ctrl-C below
  comes at a share of it, so that it lands while the command starts however fast that is."""
  folder = tmp_path_factory.mktemp('uninterrupted')
  _customer_day(str(folder / 'src'), '2023-01-01')
  start = time.monotonic()
  proc = _import(folder)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  return time.monotonic() - start


@pytest.mark.parametrize('share', [0.2, 0.5])
def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path, share, whole_run):
  """README (Exit codes): 130 'stopped by Ctrl-C ... told in one line, every command', never a
  traceback. An operator who presses Ctrl-C right after starting a run (while Python still loads
  Beam, pyarrow, pydantic: seconds on a busy machine) gets a KeyboardInterrupt traceback from the
  module imports instead, because main_guard only catches it once `run` is called. (At a fixed
  delay the run had finished before the signal once start-up got faster.)"""
  _customer_day(str(tmp_path / 'src'), '2023-01-01')
  proc = _import(tmp_path)
  time.sleep(share * whole_run)   # 0.2: in Python's imports; 0.5: the pipeline is being built or runs
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert 'Traceback' not in out + err, err[-2000:]
  assert proc.returncode == 130, (proc.returncode, err[-2000:])
  assert len([line for line in err.splitlines() if line.strip()]) == 1, err
  assert not os.path.exists(tmp_path / 'lake' / 'dt=2023-01-01' / '_SUCCESS')


def test_a_day_of_dead_letters_only_is_not_reported_published(tmp_path):
  """docs/ingest.md: a day that receives only dead letters keeps its lake day as it was (it does
  not become an empty published day). The lake indeed gets no dt=D/, yet the printed line and the
  run report (LAKE/_runs/ingest-RUN/dt=D.json) say `published` and name LAKE/dt=D as the
  partition, so a scheduler that trusts the report reads a day that does not exist."""
  lines = ['not json at all',
           json.dumps({'event_key': 'e', 'ts': '2023-01-09T10:00:00Z',   # no insert_id
                       'identifiers': {'id': 'u', 'device_id': 'd'},
                       'hackle_properties': {'osname': 'ios', 'appversion': '1'}})]
  src = tmp_path / 'in.jsonl'
  src.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  day_2023_01_09 = 1673258400   # 2023-01-09T10:00:00Z: the unreadable line's day (file mtime)
  os.utime(src, (day_2023_01_09, day_2023_01_09))
  proc = subprocess.run([RUN_SH, 'ingest', '--input', 'in.jsonl', '--lake', 'lake'],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'lake' / 'dt=2023-01-09' / '_SUCCESS')
  rejected = pq.read_table(str(tmp_path / 'lake' / '_rejected' / 'dt=2023-01-09'))
  assert rejected.num_rows == 2
  reports = glob.glob(str(tmp_path / 'lake' / '_runs' / '*' / 'dt=2023-01-09.json'))
  assert len(reports) == 1
  with open(reports[0], encoding='utf-8') as f:
    report = json.load(f)
  assert report['rows_rejected'] == 2 and report['rows_written'] == 0
  assert report['status'] != 'published', report
  assert 'dt=2023-01-09 published' not in proc.stdout + proc.stderr, proc.stdout


SFTP_WITH_PASSWORD = 'sftp://bob:Hunter2Secret@127.0.0.1:9/data'


@pytest.mark.parametrize('command', [
    ['export', '--lake', 'lake', '--date', '2023-01-01', '--dest', SFTP_WITH_PASSWORD],
    ['check', '--dest', SFTP_WITH_PASSWORD],
])
def test_a_password_in_an_sftp_url_is_never_printed(tmp_path, command):
  """The brief's rule: secrets never reach logs. eventferry refuses a password inside an sftp://
  URL 'because it would show in logs', and its refusal prints the URL with the password in it
  (StoreError ... sftp://bob:Hunter2Secret@...), once per operation for `check`."""
  if command[0] == 'export':
    _committed_lake_day(tmp_path)
  proc = subprocess.run([RUN_SH, *command], cwd=tmp_path, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0
  assert 'Hunter2Secret' not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stdout + proc.stderr


def test_a_password_in_an_sftp_url_is_a_wrong_flag_exit_2(tmp_path):
  """README's exit codes: 2 is a wrong flag (the message names it and the fix), 5 a store that
  refused. A --dest that carries its password is a wrong flag (the fix is --sftp_password), but
  the export exits 5 as if the SFTP server had refused, after taking the lake day's lock."""
  _committed_lake_day(tmp_path)
  proc = subprocess.run([RUN_SH, 'export', '--lake', 'lake', '--date', '2023-01-01',
                         '--dest', SFTP_WITH_PASSWORD], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert '--dest' in proc.stderr and '--sftp_password' in proc.stderr


def _committed_lake_day(tmp_path) -> None:
  """A lake day committed by the real import (so the export gets as far as its destination)."""
  _customer_day(str(tmp_path / 'src'), '2023-01-01')
  proc = subprocess.run([RUN_SH, 'import', '--source', 'src', '--date', '2023-01-01',
                         '--lake', 'lake'], cwd=tmp_path, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_uint64_metric_value_beyond_int64_is_out_of_range_not_a_crash(tmp_path):
  """README: metric_value may be 'an integer' and |v| >= 10^18 is rejected as
  metric_value_out_of_range. A uint64 column (pyarrow, Polars UInt64) holding 2^63 + 5 crashes
  the import instead: transforms/kernels/coerce.py to_metric casts every integer to int64 first
  (ArrowInvalid 'Integer value ... not in range'), a Beam traceback and exit 1."""
  folder = tmp_path / 'src' / 'dt=2023-01-11'
  folder.mkdir(parents=True)
  big = 2**63 + 5
  pq.write_table(pa.table({
      'ts': pa.array(['2023-01-11T01:00:00Z'] * 2),
      'event_key': ['e', 'e'],
      'identifiers': pa.array([[('id', 'u'), ('device_id', 'd')]] * 2,
                              pa.map_(pa.string(), pa.string())),
      'insert_id': ['00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002'],
      'metric_value': pa.array([big, 7], pa.uint64()),
      'platform_properties': pa.array([[('osname', 'ios'), ('appversion', '1')]] * 2,
                                      pa.map_(pa.string(), pa.string())),
  }), str(folder / 'u64.parquet'))
  (folder / '_SUCCESS').write_text('')
  proc = subprocess.run([RUN_SH, 'import', '--source', 'src', '--date', '2023-01-11', '--lake',
                         'lake', '--max_rejected_ratio', '1'], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300)
  assert 'Traceback' not in proc.stdout + proc.stderr, proc.stderr[-2000:]
  assert proc.returncode == 0, proc.stderr[-2000:]
  lake = pq.read_table(str(tmp_path / 'lake' / 'dt=2023-01-11')).to_pylist()
  assert [(r['insert_id'][-1], str(r['metric_value'])) for r in lake] == [('2', '7.000000')]
  rejected = pq.read_table(str(tmp_path / 'lake' / '_rejected' / 'dt=2023-01-11')).to_pylist()
  assert [r['reason'] for r in rejected] == ['metric_value_out_of_range']
