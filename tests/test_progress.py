"""Progress of a long import on stderr: on a pseudo-terminal (the pty module) one line updated in
place; with --log_format json, periodic JSON records; the totals are the source's rows as pyarrow
reads them."""
import datetime
import json
import os
import pty
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines import samples
from tests.conftest import ROOT

pytestmark = pytest.mark.process

DAY = datetime.date(2023, 1, 1)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('progress'))
  paths = samples.write_day(os.path.join(root, 'src'), DAY, samples.events(DAY, 300_000, seed=5),
                            files=6)
  return root, sum(pq.read_metadata(p).num_rows for p in paths if p.endswith('.parquet'))


def import_args(root: str, lake: str, *flags: str) -> list[str]:
  return [sys.executable, '-m', 'pipelines.import_events', '--source', os.path.join(root, 'src'),
          '--date', str(DAY), '--lake', os.path.join(root, lake), '--shards', '3', *flags]


def on_a_terminal(args: list[str]) -> tuple[subprocess.Popen, bytes, bytes]:
  """Runs `args` with stderr on a pseudo-terminal: (process, what the terminal got, stdout)."""
  leader, follower = pty.openpty()
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=follower)
  os.close(follower)
  seen = b''
  while True:
    try:
      chunk = os.read(leader, 65536)
    except OSError:   # EIO: the child closed the terminal
      break
    if not chunk:
      break
    seen += chunk
  out, _ = proc.communicate(timeout=300)
  os.close(leader)
  return proc, seen, out


def test_a_terminal_gets_one_line_updated_in_place(source):
  root, rows = source
  proc, seen, out = on_a_terminal(import_args(root, 'lake-tty'))
  assert proc.returncode == 0, seen.decode(errors='replace')[-3000:]
  text = seen.decode()
  updates = [u for u in re.split(r'\r\x1b\[K', text) if u.startswith('import: ')]
  assert len(updates) >= 3, text[-2000:]
  done = [int(re.match(r'import: ([\d,]+)', u).group(1).replace(',', '')) for u in updates]
  assert done == sorted(done) and done[-1] == rows
  assert f'/ {rows:,} rows (100%)' in updates[-1] and updates[-1].endswith('\r\n')
  assert any('left' in u for u in updates[:-1]) or done[0] == rows
  assert '\r' not in out.decode()   # the summary table on stdout is untouched


def json_progress(args: list[str], what: str) -> list[dict]:
  """Runs `args` with --log_format json and frequent progress: its `what` progress records, once
  every stderr line is checked to be a JSON record."""
  proc = subprocess.run([*args, '--log_format', 'json', '--progress_every', '0.3s'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{')]
  assert len(records) == len(proc.stderr.splitlines())   # every stderr line is JSON
  assert '\r' not in proc.stderr
  return [r for r in records if r.get('progress') == what]


def test_json_logs_get_periodic_progress_records(source):
  root, rows = source
  progress = json_progress(import_args(root, 'lake-json'), 'import')
  assert len(progress) >= 2
  assert progress[-1]['rows_done'] == progress[-1]['rows_total'] == rows
  assert all(r['rows_total'] == rows and r['severity'] == 'INFO' for r in progress)
  assert [r['rows_done'] for r in progress] == sorted(r['rows_done'] for r in progress)


@pytest.fixture(scope='module')
def raw_lines(tmp_path_factory):
  """Raw JSON lines written with the json module (a few unreadable): the count is the oracle."""
  root = tmp_path_factory.mktemp('progress-ingest')
  start = int(datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000)
  lines = 0
  for f in range(3):
    with open(root / f'part-{f}.jsonl', 'w') as out:
      for n in range(60_000):
        if n % 997 == 0:
          out.write('{"cut": \n')
        else:
          out.write(json.dumps({'insert_id': f'{f:08x}-0000-4000-8000-{n:012x}',
                                'event_key': 'view', 'ts': start + n, 'server_ts': start + n,
                                'identifiers': {'id': f'u{n}', 'device_id': f'd{n}'},
                                'hackle_properties': {'osname': 'iOS', 'appversion': '1'}}) + '\n')
        lines += 1
  return str(root), lines


def ingest_args(root: str, lake: str, *flags: str) -> list[str]:
  return [sys.executable, '-m', 'pipelines.ingest', '--input', os.path.join(root, '*.jsonl'),
          '--lake', os.path.join(root, lake), *flags]


def test_an_ingest_shows_the_lines_read_on_a_terminal(raw_lines):
  root, lines = raw_lines
  proc, seen, out = on_a_terminal(ingest_args(root, 'lake-tty'))
  assert proc.returncode == 0, seen.decode(errors='replace')[-3000:]
  updates = [u for u in re.split(r'\r\x1b\[K', seen.decode()) if u.startswith('ingest: ')]
  assert len(updates) >= 2, seen.decode()[-2000:]
  done = [int(re.match(r'ingest: ([\d,]+) rows', u).group(1).replace(',', '')) for u in updates]
  assert done == sorted(done) and done[-1] == lines and updates[-1].endswith('\r\n')
  assert '\r' not in out.decode()


def test_an_ingest_logs_periodic_progress_records_as_json(raw_lines):
  root, lines = raw_lines
  progress = json_progress(ingest_args(root, 'lake-json'), 'ingest')
  assert len(progress) >= 2 and progress[-1]['rows_done'] == lines
  assert all(r['rows_total'] is None for r in progress)
  assert [r['rows_done'] for r in progress] == sorted(r['rows_done'] for r in progress)
