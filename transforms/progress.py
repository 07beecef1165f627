"""Progress of a long run on stderr: rows done of the planned total, rate and time left.

The DoFns that read rows count them here (`advance`); a thread of the launching process shows the
count (`shown`). On a terminal that is one line updated in place twice a second; when stderr is
not a terminal, or with --log_format json, it is a plain (or JSON) log line every
--progress_every. The count is this process's: on the in-process runners (the default) it is the
job's; on a remote runner (Dataflow, Flink) the workers count in their own processes, so the line
shows only the time since the start.
"""
import contextlib
import logging
import sys
import threading
import time

__all__ = ['TTY_EVERY', 'advance', 'shown']

LOG = logging.getLogger('eventferry')
TTY_EVERY = 0.5
_done = [0]
_lock = threading.Lock()


def advance(rows: int) -> None:
  with _lock:
    _done[0] += rows


def _line(what: str, done: int, total: int | None, seconds: float) -> tuple[str, dict]:
  rate = done / seconds if seconds > 0 else 0.0
  fields = {'progress': what, 'rows_done': done, 'rows_total': total,
            'rows_per_s': round(rate), 'seconds': round(seconds, 1), 'seconds_left': None}
  text = f'{what}: {done:,}' + (f' / {total:,} rows ({done / total:.0%})' if total else ' rows')
  text += f', {rate:,.0f} rows/s, {seconds:.0f}s'
  if total and rate > 0 and done < total:
    fields['seconds_left'] = round((total - done) / rate, 1)
    text += f', about {fields["seconds_left"]:.0f}s left'
  return text, fields


@contextlib.contextmanager
def shown(what: str, total: int | None, fmt: str = 'text', every: float = 10.0):
  """Shows the progress of the rows counted while the block runs; a last line when it ends
  well. When it fails or is interrupted, the terminal's line is cleared and no last line follows,
  so the error is the one line the run ends with."""
  with _lock:
    _done[0] = 0
  tty = fmt == 'text' and sys.stderr.isatty()
  start, stop = time.monotonic(), threading.Event()

  def tell(last: bool = False) -> None:
    text, fields = _line(what, _done[0], total, time.monotonic() - start)
    if tty:
      sys.stderr.write('\r\x1b[K' + text + ('\n' if last else ''))
      sys.stderr.flush()
    else:
      LOG.info(text, extra={'fields': fields})

  def loop() -> None:
    while not stop.wait(TTY_EVERY if tty else every):
      tell()

  thread = threading.Thread(target=loop, name='eventferry-progress', daemon=True)
  thread.start()
  finished = False
  try:
    yield
    finished = True
  finally:
    stop.set()
    thread.join()
    if finished:
      tell(last=True)
    elif tty:   # a failure or Ctrl-C: its one error line is all that follows
      sys.stderr.write('\r\x1b[K')
      sys.stderr.flush()
