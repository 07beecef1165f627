"""--notify_url: a JSON summary POSTed when a day is refused, a run fails or a day is late.

Every command takes the flag (import, export, ingest, backfill; status for late or refused days).
options.main_guard calls `after` once the command has ended, with its exit code: the body names the
event (`refused`, `late` or `failed`), the command, the exit code, the one-line message the command
printed, and the days concerned (date, status, message). It carries no flag, credential or URL
other than the redacted lake and destination paths. A receiver that is down, slow (10 s) or answers
with an error is logged as a warning; the command's exit code never changes.

    {"event": "refused", "command": "import", "exit_code": 1, "run_id": "...", "host": "...",
     "at": "2026-12-02T01:00:00Z", "message": "...", "days": [{"dt": "2023-01-03",
     "status": "refused", "message": "310 of 1525 rows rejected ..."}]}
"""
import datetime
import json
import logging
import socket
import urllib.parse
import urllib.request

from transforms.stores import fs

__all__ = ['TIMEOUT_S', 'FLAG', 'url_of', 'note_days', 'watch', 'summary', 'after']

LOG = logging.getLogger('eventferry')
TIMEOUT_S = 10
FLAG = '--notify_url'
_noted: dict = {'days': [], 'run_id': None, 'where': {}}


def url_of(argv: list[str]) -> str | None:
  for flag, value in zip(argv, argv[1:] + ['']):
    if flag.startswith(FLAG + '='):
      return flag.split('=', 1)[1]
    if flag == FLAG:
      return value
  return None


def note_days(days, run_id: str | None = None, **where: str | None) -> None:
  """The command's days (objects with dt, status, message): refused, failed or late ones are
  told. `where`: lake=..., dest=... (redacted before they are sent)."""
  _noted['days'] = [{'dt': d['dt'] if isinstance(d, dict) else d.dt,
                     'status': d['status'] if isinstance(d, dict) else d.status,
                     'message': (d.get('message', '') if isinstance(d, dict) else d.message)}
                    for d in days]
  _noted['run_id'] = run_id
  _noted['where'] = {k: fs.redact(v) for k, v in where.items() if v}


class _Errors(logging.Handler):
  """Keeps the command's own error lines: the message of a failed run."""

  def __init__(self):
    super().__init__(logging.ERROR)
    self.lines: list[str] = []

  def emit(self, record: logging.LogRecord) -> None:
    if record.name.startswith(LOG.name):
      self.lines.append(record.getMessage())


def watch() -> _Errors:
  """Starts a command's watch: nothing noted yet (a second command in one process, as the tests
  run them, tells only its own days)."""
  _noted.update(days=[], run_id=None, where={})
  handler = _Errors()
  LOG.addHandler(handler)
  return handler


def summary(command: str, code: int | None, errors: list[str]) -> dict | None:
  """The body to send, or None when there is nothing to tell."""
  bad = [d for d in _noted['days'] if d['status'] in ('refused', 'failed', 'late')]
  if code == 0 and not bad:
    return None
  message = errors[-1] if errors else ('the command ended with an unexpected error'
                                       if code is None else '')
  if bad and all(d['status'] == 'late' for d in bad):
    event = 'late'
  elif any(d['status'] == 'refused' for d in bad):
    event = 'refused'
  elif command == 'import' and code == 3 and '_SUCCESS' in message:   # the source is not ready
    event = 'late'
  else:
    event = 'failed'
  return {'event': event, 'command': command, 'exit_code': code, 'run_id': _noted['run_id'],
          'host': socket.gethostname(),
          'at': datetime.datetime.now(datetime.timezone.utc).isoformat().replace('+00:00', 'Z'),
          **_noted['where'], 'message': message, 'days': bad}


def after(url: str | None, command: str, code: int | None, errors: _Errors) -> None:
  LOG.removeHandler(errors)
  if not url:
    return
  body = summary(command, code, errors.lines)
  if body is None:
    return
  shown = urllib.parse.urlsplit(url)._replace(path='/…' if urllib.parse.urlsplit(url).path
                                              not in ('', '/') else '', query='', fragment='')
  where = fs.redact(shown.geturl())   # a webhook's path or query may be its secret
  try:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method='POST',
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
      response.read()
  except Exception as e:  # noqa: BLE001 - a notification never fails the run
    reason = getattr(e, 'reason', None) or getattr(e, 'code', None) or type(e).__name__
    LOG.warning('could not notify %s of the %s (%s); the run itself is not affected',
                where, body['event'], reason)
