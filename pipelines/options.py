"""Command-line options shared by every pipeline, and their fail-fast checks.

Beam-style snake_case flags on PipelineOptions subclasses; every Beam option passes through. A wrong
flag stops the command before any pipeline is built, with a message naming the flag and the fix.
"""
import argparse
import datetime
import decimal
import logging
import os
import posixpath
import re
import signal
import sys
import threading
import typing
import urllib.parse
import uuid
import zoneinfo

import apache_beam as beam
from apache_beam.options import pipeline_options as po

from pipelines import logs, notify
from transforms import progress
from transforms.compat import options as compat_options
from transforms.lake import locks
from transforms.stores import clients, fs, s3, sftp
from transforms.read import SourceError

__all__ = ['DEFAULT_RUNNER', 'UsageError', 'parse_date', 'parse_duration', 'SIZE_UNITS',
           'parse_size', 'parse_zone', 'yesterday', 'require', 'normal_path', 'lies_inside',
           'progress_shown', 'add_shared', 'add_switch', 'add_date_args', 'add_run_args', 'date_range', 'new_run_id',
           'handed_over', 'run_job', 'parse', 'LoggingOptions', 'HANDLED', 'main_guard', 'raised']

DEFAULT_RUNNER = 'FnApiRunner'   # in-process; DirectRunner would first try to download Prism


class UsageError(ValueError):
  """A flag is missing or wrong; the message names it and says how to fix it."""


def parse_date(flag: str, value: str) -> datetime.date:
  try:
    return datetime.date.fromisoformat(value)
  except (TypeError, ValueError):
    raise UsageError(f'{flag} {value!r} is not a date: use YYYY-MM-DD, e.g. {flag} 2023-01-01') from None


def parse_duration(flag: str, value: str | None) -> float:
  """'90s', '30m', '2h', '1d' or plain seconds -> seconds."""
  if value is None:
    return 0.0
  m = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*', value)
  if not m:
    raise UsageError(f'{flag} {value!r} is not a duration: use e.g. 90s, 30m, 2h or 1d')
  return float(m.group(1)) * {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400}[m.group(2)]


SIZE_UNITS = {'b': 1, 'k': 10**3, 'kb': 10**3, 'm': 10**6, 'mb': 10**6, 'g': 10**9, 'gb': 10**9,
              't': 10**12, 'tb': 10**12, 'kib': 2**10, 'mib': 2**20, 'gib': 2**30, 'tib': 2**40}


@typing.overload
def parse_size(flag: str, value: None, plain: int = 1) -> None: ...
@typing.overload
def parse_size(flag: str, value: str | int | float, plain: int = 1) -> int: ...


def parse_size(flag: str, value, plain: int = 1) -> int | None:
  """Every size flag's parser: '100MB' (10^6 bytes each), '100MiB' (2^20), '1.5GB', '512k'
  (10^3) or a plain number (of `plain` bytes: 1 for --..._bytes flags) -> bytes; None stays
  None. Units are case-insensitive."""
  if value is None:
    return None
  m = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*', str(value))
  unit = m and (SIZE_UNITS.get(m.group(2).lower()) if m.group(2) else plain)
  if m is None or not unit:
    raise UsageError(f'{flag} {value!r} is not a size: use e.g. 100MB, 100MiB, 1.5GB, 512k or '
                     + ('a number of bytes' if plain == 1 else f'a plain number ({plain:,} bytes each)'))
  size = int(decimal.Decimal(m.group(1)) * unit)
  if size < 1:
    raise UsageError(f'{flag} {value!r} must be at least 1 byte')
  return size


def parse_zone(flag: str, value: str) -> zoneinfo.ZoneInfo:
  try:
    return zoneinfo.ZoneInfo(value)
  except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise UsageError(f'{flag} {value!r} is not an IANA time zone: use e.g. UTC or Asia/Seoul') from None


def yesterday(zone: zoneinfo.ZoneInfo) -> datetime.date:
  return datetime.datetime.now(zone).date() - datetime.timedelta(days=1)


def require(o, examples: dict[str, str]) -> None:
  """Each flag in `examples` must be given; the message shows an example value."""
  for flag, example in examples.items():
    if not getattr(o, flag):
      raise UsageError(f'--{flag} is required: e.g. --{flag} {example}')


def normal_path(path: str) -> str:
  """One spelling per location, to compare flags: `file://`, `./`, `..`, repeated and trailing
  slashes and relative local paths (also symbolic links) resolved; URIs keep their scheme."""
  if path.startswith('file://'):
    path = path[len('file://'):]
  scheme, sep, rest = path.partition('://')
  if sep:
    return f'{scheme}://{posixpath.normpath("/" + rest).lstrip("/")}'
  return os.path.realpath(os.path.expanduser(path))


def lies_inside(inner: str, outer: str) -> bool:
  """True when location `inner` is `outer` or lies inside it."""
  inner, outer = normal_path(inner), normal_path(outer)
  return inner == outer or inner.startswith(outer.rstrip('/') + '/')


def add_shared(parser, flag: str, **kwargs) -> None:
  """Declares a flag that several pipelines take (--lake, --run_id, ...). Beam parses the options
  of every loaded PipelineOptions class with one parser, which refuses a flag declared twice; so a
  shared flag is declared once, and its default must be the same in every pipeline."""
  if not compat_options.declared(parser, flag):
    parser.add_argument(flag, **kwargs)


def _truth(value: str) -> bool:
  if str(value).lower() in ('true', '1', 'yes'):
    return True
  if str(value).lower() in ('false', '0', 'no'):
    return False
  raise argparse.ArgumentTypeError(f'{value!r}: use true or false')


def add_switch(parser, flag: str, help: str) -> None:
  """A yes/no flag, given bare (--force) or with a value (--force=true): a Flex Template passes
  every parameter as --name=value."""
  parser.add_argument(flag, nargs='?', const=True, default=False, type=_truth, help=help)


def add_date_args(parser, what: str) -> None:
  """--date, --from_date, --to_date and --timezone, the same for every pipeline."""
  add_shared(parser, '--date', help=f'day to {what}, YYYY-MM-DD (default: yesterday in --timezone)')
  add_shared(parser, '--from_date', help=f'first day of a range to {what} (with --to_date)')
  add_shared(parser, '--to_date', help=f'last day of a range to {what}, inclusive')
  add_shared(parser, '--timezone', default='UTC', help='IANA zone that defines "yesterday"')


def add_run_args(parser, report: bool = True) -> None:
  """--run_id, --report and --break_lock, the same for every pipeline that commits days."""
  add_shared(parser, '--run_id', default=None, help='run id (default: time + random)')
  if report:
    add_shared(parser, '--report', default=None, help='also write the JSON run report here')
  add_shared(parser, '--break_lock', default=None,
             help='RUN_ID of a run that died holding locks: take them over (only when you know '
                  'it is not running; the refusal names it)')


def date_range(o) -> list[datetime.date]:
  """The days of --date, or of --from_date..--to_date (inclusive); yesterday by default."""
  zone = parse_zone('--timezone', o.timezone)
  if o.date and (o.from_date or o.to_date):
    raise UsageError('give either --date or --from_date/--to_date, not both')
  if o.from_date or o.to_date:
    if not (o.from_date and o.to_date):
      raise UsageError('--from_date and --to_date go together: give both (inclusive range)')
    first, last = parse_date('--from_date', o.from_date), parse_date('--to_date', o.to_date)
    if last < first:
      raise UsageError(f'--to_date {last} is before --from_date {first}')
    return [first + datetime.timedelta(days=i) for i in range((last - first).days + 1)]
  return [parse_date('--date', o.date) if o.date else yesterday(zone)]


def new_run_id() -> str:
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
  return f'{now}-{uuid.uuid4().hex[:8]}'


def handed_over(options: po.PipelineOptions, held: list[str]) -> bool:
  """True when the job does not run while this process waits: a Flex Template launch only
  describes it (--template_location; the job's last step then writes the report and releases
  the locks `held`), a Dataflow --dry_run=True only builds it (nothing will run: released now)."""
  if options.view_as(po.TestOptions).dry_run:
    locks.release(held)
    return True
  return bool(options.view_as(po.GoogleCloudOptions).template_location)


def run_job(options: po.PipelineOptions, build, held: list[str]):
  """Builds the job with `build(pipeline)` and runs it: its result once it has finished, or None
  when it was only handed over (see handed_over)."""
  pipeline = beam.Pipeline(options=options)
  build(pipeline)
  result = pipeline.run()
  if handed_over(options, held):
    return None
  result.wait_until_finish()
  return result


def _all_option_classes(cls=po.PipelineOptions):
  for sub in cls.__subclasses__():
    yield sub
    yield from _all_option_classes(sub)


def parse(option_class: type[po.PipelineOptions], argv: list[str], usage: str) -> po.PipelineOptions:
  """Parses argv into `option_class`, refusing unknown flags and printing --help for ours."""
  ours = argparse.ArgumentParser(prog=usage, description=(option_class.__doc__ or '').strip(),
                                 epilog='Every Apache Beam option passes through as well '
                                 '(--runner, --project, --s3_endpoint_url, ...). Default runner: '
                                 f'{DEFAULT_RUNNER}.', formatter_class=argparse.RawDescriptionHelpFormatter)
  # Beam types the parser as its own; this one only prints --help, and our classes add plain arguments.
  option_class._add_argparse_args(ours)  # type: ignore[arg-type]
  store_flags = ours.add_argument_group("eventferry's store flags (README: Clouds)")
  for store_class in (s3.S3AccessOptions, clients.EncryptionOptions, sftp.SftpOptions):
    store_class._add_argparse_args(store_flags)
  for group in getattr(option_class, 'FLAG_GROUPS', ()):   # option classes the command also reads
    group._add_argparse_args(ours.add_argument_group((group.__doc__ or '').strip()))
  if '-h' in argv or '--help' in argv:
    ours.print_help()
    raise SystemExit(0)
  everything = po._BeamArgumentParser(allow_abbrev=False, add_help=False)
  for cls in {c for c in _all_option_classes()}:
    try:
      cls._add_argparse_args(everything)
    except argparse.ArgumentError:
      pass   # an option two Beam classes both declare
  _, unknown = everything.parse_known_args(argv)
  flags = [a for a in unknown if a.startswith('--')]
  if flags:
    raise UsageError(f'unknown flag {flags[0]}: see --help for the flags this command takes '
                     '(Beam options pass through too).')
  if unknown:
    raise UsageError(f'unexpected argument {unknown[0]!r}: every value needs its --flag.')
  options = option_class(argv)
  problem = clients.flag_problem(options) or _password_in_url(options)
  if problem:
    raise UsageError(problem)
  std = options.view_as(po.StandardOptions)
  if not std.runner:
    std.runner = DEFAULT_RUNNER
  return options


def _password_in_url(options: po.PipelineOptions) -> str | None:
  """A password written into an sftp:// path would show in logs, `ps` and shell history."""
  for name, value in options.get_all_options(drop_default=True).items():
    if isinstance(value, str) and value.startswith('sftp://'):
      if urllib.parse.urlsplit(value).password is not None:
        return (f'--{name} {fs.redact(value)} carries a password: remove it from the URL and '
                'give it in SFTP_PASSWORD (or --sftp_password, which shows in `ps`)')
  return None


class LoggingOptions(po.PipelineOptions):
  """Taken by every pipeline; read by main_guard before the other flags are parsed."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--log_format', default='text', choices=logs.FORMATS,
                        help='stderr as text, or json: one JSON object per line')
    parser.add_argument('--progress_every', default='10s',
                        help='a progress line this often when stderr is not a terminal or is '
                        'JSON (e.g. 30s, 1m); a terminal gets one line updated in place')
    parser.add_argument(notify.FLAG, default=None,
                        help='POST a JSON summary here when a day is refused, the run fails or '
                        'a day is late (a failure to notify is logged, never fails the run)')


def progress_shown(options: po.PipelineOptions, what: str, total: int | None):
  """Progress of the run's rows on stderr while the job runs (transforms/progress.py)."""
  o = options.view_as(LoggingOptions)
  return progress.shown(what, total, o.log_format,
                        parse_duration('--progress_every', o.progress_every) or 10.0)


HANDLED = ((clients.StoreError, 5), (SourceError, 3), (locks.LockedError, 4))   # kind, exit code


def _untold(record: logging.LogRecord) -> bool:
  """Beam logs a worker's exception with its traceback before it re-raises it; the kinds main_guard
  handles are told once, in one line, so their traceback is dropped."""
  error = record.exc_info[1] if record.exc_info else None
  return not isinstance(error, tuple(kind for kind, _ in HANDLED))


def main_guard(run, argv=None) -> int:
  """Runs `run(argv)` with logging set up by --log_format, turning UsageError into a one-line
  message and exit code 2, a store's refusal (a missing bucket or permission, also when a worker
  met it) into one with exit code 5, an unreadable source file into one with exit code 3, and a
  partition another run holds (met by a worker: batch ingest) into one with exit code 4. Ctrl-C
  (SIGINT) ends the command with one line and exit code 130, as shells report it; the command
  has then removed its staging and released its locks (each run's own except-clause)."""
  if threading.current_thread() is threading.main_thread():   # pipelines/__init__ had SIGINT until now
    signal.signal(signal.SIGINT, signal.default_int_handler)
  argv = sys.argv[1:] if argv is None else argv
  fmt = logs.format_of(argv)
  logs.setup(fmt if fmt in logs.FORMATS else 'text')
  logging.getLogger(compat_options.STEP_LOGGER).addFilter(_untold)
  errors, code = notify.watch(), None
  try:
    code = _guarded(run, argv)
    return code
  finally:   # also when the error is not one of ours (its traceback follows)
    spec = getattr(sys.modules.get(run.__module__), '__spec__', None)   # python -m: __main__
    command = (spec.name if spec else run.__module__).rsplit('.', 1)[-1].removesuffix('_events')
    notify.after(notify.url_of(argv), command, code, errors)


def _guarded(run, argv: list[str]) -> int:
  try:
    return run(argv)
  except UsageError as e:
    logs.LOG.error(str(e))
    return 2
  except (KeyboardInterrupt, Exception) as e:  # noqa: BLE001 - only the kinds below are handled
    if _interrupted(e):   # Beam re-raises it from inside a step as a RuntimeError
      logs.LOG.error('interrupted (SIGINT): no unfinished day was published; run the same '
                     'command again to do them')
      return 130
    for kind, code in HANDLED:
      message = raised(e, kind)
      if message is not None:
        logs.LOG.error(message)
        return code
    raise


def _interrupted(e: BaseException | None) -> bool:
  while e is not None:
    if isinstance(e, KeyboardInterrupt):
      return True
    e = e.__cause__ or e.__context__
  return False


def raised(e: BaseException | None, kind: type[Exception]) -> str | None:
  """The message of a `kind` error in `e` or its causes; Beam re-raises a worker's error as its
  own exception with the original message inside."""
  while e is not None:
    text = str(e)
    if isinstance(e, kind):
      return text.split(' [while running')[0].strip()
    if f'{kind.__name__}: ' in text:
      return text.split(f'{kind.__name__}: ', 1)[1].split(' [while running')[0].strip()
    e = e.__cause__ or e.__context__
  return None
