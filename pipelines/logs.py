"""What a run tells its operators: --log_format text|json for stderr, and the Beam counters that
go into run reports.

`json` writes one JSON object per line (time, severity, logger, message and the record's fields)
for log pipelines such as Cloud Logging, Loki or Datadog; stdout keeps the human table."""
import datetime
import json
import logging
import sys

from apache_beam.metrics.metric import MetricsFilter

__all__ = ['LOG', 'FORMATS', 'JsonFormatter', 'TextFormatter', 'format_of', 'setup', 'counters']

LOG = logging.getLogger('eventferry')
FORMATS = ('text', 'json')


class JsonFormatter(logging.Formatter):
  def format(self, record: logging.LogRecord) -> str:
    out = {'time': datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
           .isoformat(timespec='milliseconds').replace('+00:00', 'Z'),
           'severity': record.levelname, 'logger': record.name, 'message': record.getMessage()}
    out.update(getattr(record, 'fields', {}))
    if record.exc_info:
      out['exception'] = self.formatException(record.exc_info)
    return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
  """Our own messages as plain lines ('error: ...', 'warning: ...'); Beam's with level and logger."""

  def format(self, record: logging.LogRecord) -> str:
    if record.name.startswith(LOG.name):
      prefix = ('error: ' if record.levelno >= logging.ERROR else
                'warning: ' if record.levelno >= logging.WARNING else '')
      return prefix + record.getMessage()
    return f'{record.levelname}:{record.name}:{super().format(record)}'


def format_of(argv: list[str]) -> str:
  """The --log_format value in argv (read before the options are parsed, so that a wrong flag
  is reported in the chosen format too)."""
  for flag, value in zip(argv, argv[1:] + ['']):
    if flag.startswith('--log_format='):
      return flag.split('=', 1)[1]
    if flag == '--log_format':
      return value
  return 'text'


def _not_interrupt(record: logging.LogRecord) -> bool:
  """Beam logs Ctrl-C inside a step as an error with a traceback; main_guard tells it in one
  line instead."""
  return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def setup(fmt: str) -> None:
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(JsonFormatter() if fmt == 'json' else TextFormatter())
  handler.addFilter(_not_interrupt)
  root = logging.getLogger()
  root.handlers[:] = [handler]
  root.setLevel(logging.WARNING)     # Beam's INFO chatter stays out
  LOG.setLevel(logging.INFO)


def counters(result) -> dict[str, int]:
  """The job's own Beam counters ('eventferry.*', summed over steps; Prism adds its system
  counters, which differ per runner); {} on a runner that does not report them (the run report
  then says nothing rather than failing the run)."""
  try:
    found = result.metrics().query(MetricsFilter())['counters']
  except (NotImplementedError, AttributeError) as e:
    LOG.warning('this runner does not report Beam metrics (%s); the run report has none', e)
    return {}
  out: dict[str, int] = {}
  for c in found:
    if not c.key.metric.namespace.startswith('eventferry'):
      continue
    name = f'{c.key.metric.namespace}.{c.key.metric.name}'
    out[name] = out.get(name, 0) + (c.committed if c.committed is not None else c.attempted)
  return dict(sorted(out.items()))
