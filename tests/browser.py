"""Debian's chromium, headless, driven over the DevTools protocol (websockets, no driver), with
its network cut off: every request the page makes, every console message and uncaught error is
recorded, and a screenshot can be taken."""
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

from tests import servers

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


class Page:
  def __init__(self, ws):
    self._ws, self._id = ws, 0
    self.events: list[dict] = []

  def call(self, method: str, **params) -> dict:
    self._id += 1
    self._ws.send(json.dumps({'id': self._id, 'method': method, 'params': params}))
    while True:
      message = json.loads(self._ws.recv(timeout=60))
      if message.get('id') == self._id:
        if 'error' in message:
          raise RuntimeError(f'{method}: {message["error"]}')
        return message.get('result', {})
      self.events.append(message)

  def wait_for(self, method: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not any(e.get('method') == method for e in self.events):
      self.events.append(json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic()))))

  def settle(self, seconds: float = 1.0) -> None:
    """Collects what arrives in the next `seconds` (late requests, console output)."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
      while time.monotonic() < deadline:
        self.events.append(json.loads(self._ws.recv(timeout=deadline - time.monotonic())))

  def requests(self) -> list[str]:
    return [e['params']['request']['url'] for e in self.events
            if e.get('method') == 'Network.requestWillBeSent']

  def errors(self) -> list[str]:
    out = []
    for e in self.events:
      method, params = e.get('method'), e.get('params', {})
      if method == 'Runtime.consoleAPICalled' and params['type'] in ('error', 'warning', 'assert'):
        out.append(f"console.{params['type']}: {params['args']}")
      elif method == 'Runtime.exceptionThrown':
        out.append(f"exception: {params['exceptionDetails']}")
      elif method == 'Log.entryAdded' and params['entry']['level'] in ('error', 'warning'):
        out.append(f"log: {params['entry']['text']}")
    return out

  def evaluate(self, expression: str):
    return self.call('Runtime.evaluate', expression=expression, returnByValue=True)['result']['value']

  def screenshot(self, path: str) -> None:
    size = self.evaluate('[document.documentElement.scrollWidth, document.documentElement.scrollHeight]')
    self.call('Emulation.setDeviceMetricsOverride', width=max(1000, size[0]), height=size[1],
              deviceScaleFactor=1, mobile=False)
    data = self.call('Page.captureScreenshot', format='png', captureBeyondViewport=True)['data']
    with open(path, 'wb') as f:
      f.write(base64.b64decode(data))


@contextlib.contextmanager
def opened(url: str):
  """The page at `url` in a fresh headless chromium with no network: every host resolves to
  nothing and every connection goes to a closed loopback port."""
  profile = tempfile.mkdtemp(prefix='chromium-')
  proc = subprocess.Popen(
      [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
       '--disable-background-networking', '--disable-component-update', '--disable-sync',
       '--disable-extensions', '--disable-default-apps', f'--user-data-dir={profile}',
       '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
       '--proxy-server=127.0.0.1:9', '--host-resolver-rules=MAP * ~NOTFOUND', 'about:blank'],
      stdout=subprocess.DEVNULL, stderr=open(os.path.join(profile, 'stderr.log'), 'wb'),
      preexec_fn=servers.die_with_parent())
  try:
    port_file = os.path.join(profile, 'DevToolsActivePort')
    deadline = time.monotonic() + 120   # a loaded 2-core machine: chromium once took over 30 s
    while not os.path.exists(port_file) or not open(port_file).read().strip():
      if time.monotonic() > deadline or proc.poll() is not None:
        told = open(os.path.join(profile, 'stderr.log'), errors='replace').read()[-2000:]
        raise RuntimeError(f'chromium did not start its DevTools endpoint (exit {proc.poll()}):\n{told}')
      time.sleep(0.1)
    port = int(open(port_file).read().split()[0])
    targets = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=10))
    target = next(t for t in targets if t['type'] == 'page')
    with connect(target['webSocketDebuggerUrl'], max_size=2**26, open_timeout=10) as ws:
      page = Page(ws)
      for domain in ('Page', 'Network', 'Runtime', 'Log'):
        page.call(f'{domain}.enable')
      page.events.clear()
      page.call('Page.navigate', url=url)
      page.wait_for('Page.loadEventFired')
      page.settle()
      yield page
  finally:
    proc.terminate()
    try:
      proc.wait(10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    shutil.rmtree(profile, ignore_errors=True)
