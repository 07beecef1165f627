"""Test servers do not outlive the process that started them: a pytest killed with SIGKILL
(no fixture teardown runs) must not leave moto, emulators or SFTP servers running."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import servers

pytestmark = pytest.mark.process


def alive(pid: int) -> bool:
  """Running, as opposed to gone or a zombie waiting to be reaped."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def test_a_server_dies_with_the_process_that_started_it(tmp_path):
  starter = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from tests import servers; '
       f'print(servers.moto({str(tmp_path)!r}).proc.pid, flush=True); time.sleep(600)'],
      cwd=servers.ROOT, stdout=subprocess.PIPE, text=True)
  try:
    server = int(starter.stdout.readline())
    assert alive(server)
  finally:
    os.kill(starter.pid, signal.SIGKILL)   # as when pytest itself is killed
    starter.wait()
  deadline = time.monotonic() + 10
  while alive(server) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not alive(server), f'moto (pid {server}) outlived the process that started it'
