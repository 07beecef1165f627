"""--notify_url against a receiver on 127.0.0.1: a refused day, a late day and a failed run each
POST one JSON summary with no secret in it; a run with nothing to tell posts nothing; a receiver
that is down is one warning line and never changes the exit code."""
import http.server
import json
import os
import socket
import threading

import pytest

from tests import opskit
from tests.opskit import D1, D3, D4

pytestmark = pytest.mark.engine

SECRET = 's3-SECRET-never-in-a-body-91c2'
TOKEN = 'hook-TOKEN-5be0'


@pytest.fixture
def receiver():
  got = []

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
      body = self.rfile.read(int(self.headers['Content-Length']))
      got.append({'path': self.path, 'type': self.headers['Content-Type'], 'body': body.decode()})
      self.send_response(204)
      self.end_headers()

    def log_message(self, *args):
      pass
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f'http://127.0.0.1:{server.server_port}/hooks/{TOKEN}', got
  server.shutdown()


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('notify'))
  site = opskit.Site(root)
  for day in (D1, D3):
    opskit.samples.write_day(site.url('src'), day, opskit.EVENTS[day], files=1)
  opskit.samples.write_day(site.url('src'), D4, opskit.EVENTS[D1], files=1, success=False)
  return site


def run(site, module, *args, url, lake='lake'):
  return site.cli(module, *args, '--notify_url', url, '--s3_secret_access_key', SECRET,
                  check=False)


def bodies(got):
  for g in got:
    assert g['type'] == 'application/json' and SECRET not in g['body']
  return [json.loads(g['body']) for g in got]


def test_a_refused_day_is_posted_and_the_exit_code_stays(source, receiver, tmp_path):
  url, got = receiver
  proc = run(source, 'import_events', '--source', source.url('src'), '--date', str(D3), '--lake',
             str(tmp_path / 'lake'), url=url)
  assert proc.returncode == 1
  [body] = bodies(got)
  assert got[0]['path'] == f'/hooks/{TOKEN}'
  assert body['event'] == 'refused' and body['command'] == 'import' and body['exit_code'] == 1
  assert body['days'] == [{'dt': str(D3), 'status': 'refused', 'message': body['days'][0]['message']}]
  assert '--max_rejected_ratio' in body['days'][0]['message'] and body['run_id']
  assert body['lake'] == str(tmp_path / 'lake')


def test_a_day_without_success_is_late_and_a_failed_export_is_failed(source, receiver, tmp_path):
  url, got = receiver
  proc = run(source, 'import_events', '--source', source.url('src'), '--date', str(D4), '--lake',
             str(tmp_path / 'lake'), url=url)
  assert proc.returncode == 3
  proc = run(source, 'export_events', '--lake', str(tmp_path / 'lake'), '--date', str(D4),
             '--dest', str(tmp_path / 'dest'), url=url)
  assert proc.returncode == 3
  late, failed = bodies(got)
  assert late['event'] == 'late' and late['exit_code'] == 3 and '_SUCCESS' in late['message']
  assert failed['event'] == 'failed' and failed['command'] == 'export'
  assert 'is not a committed lake day' in failed['message']


def test_status_posts_late_days_and_a_good_run_posts_nothing(source, receiver, tmp_path):
  url, got = receiver
  lake = str(tmp_path / 'lake')
  proc = run(source, 'import_events', '--source', source.url('src'), '--date', str(D1), '--lake',
             lake, url=url)
  assert proc.returncode == 0 and got == []
  proc = run(source, 'status', '--lake', lake, '--from_date', str(D1), '--to_date', str(D4),
             '--expect_by', '13:00', url=url)
  assert proc.returncode == 1
  [body] = bodies(got)
  assert body['event'] == 'late' and [d['dt'] for d in body['days']] == [
      '2023-01-02', str(D3), str(D4)]


def test_ingest_and_backfill_take_the_flag(source, receiver, tmp_path):
  url, got = receiver
  proc = run(source, 'ingest', '--input', str(tmp_path / 'none-*.jsonl'), '--lake',
             str(tmp_path / 'lake'), url=url)
  assert proc.returncode != 0
  proc = run(source, 'backfill', 'import', '--source', source.url('src'), '--lake',
             str(tmp_path / 'lake'), '--from_date', str(D3), '--to_date', str(D4), url=url)
  assert proc.returncode == 1
  ingest, backfill = bodies(got)
  assert ingest['command'] == 'ingest' and ingest['event'] == 'failed'
  assert backfill['command'] == 'backfill' and {d['dt'] for d in backfill['days']} == {str(D3), str(D4)}


def test_a_receiver_that_is_down_is_a_warning_only(source, tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]   # closed again: nothing listens there
  proc = run(source, 'import_events', '--source', source.url('src'), '--date', str(D3), '--lake',
             str(tmp_path / 'lake'), url=f'http://127.0.0.1:{port}/hooks/{TOKEN}?key={TOKEN}')
  assert proc.returncode == 1   # the refused day's own code
  warning = [line for line in proc.stderr.splitlines() if 'could not notify' in line]
  assert len(warning) == 1 and f'127.0.0.1:{port}' in warning[0]
  assert TOKEN not in proc.stderr and 'Traceback' not in proc.stderr
  assert os.path.exists(tmp_path / 'lake' / '_runs')


def test_a_second_command_in_one_process_tells_only_its_own_days(source, receiver, tmp_path):
  """The tests run commands in one process (conftest.run_cli): a failed ingest after a refused
  import posts no day, run id or lake of the import's."""
  url, got = receiver
  run(source, 'import_events', '--source', source.url('src'), '--date', str(D3), '--lake',
      str(tmp_path / 'lake'), url=url)
  run(source, 'ingest', '--input', str(tmp_path / 'none-*.jsonl'), '--lake', str(tmp_path / 'other'),
      url=url)
  refused, failed = bodies(got)
  assert refused['days'] and refused['run_id'] and refused['lake'] == str(tmp_path / 'lake')
  assert failed['command'] == 'ingest' and failed['days'] == [] and failed['run_id'] is None
  assert failed.get('lake') in (None, str(tmp_path / 'other'))
