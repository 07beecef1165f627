"""Ingest: raw JSON events (schemas/raw.py) -> the lake, partitioned by server date.

Streaming from Pub/Sub (the DirectRunner locally, Dataflow at scale):
  ./run.sh ingest --subscription projects/P/subscriptions/S --lake gs://lake --streaming \\
    --timezone Asia/Seoul
The same pipeline in batch over JSON-lines files (gzip or not):
  ./run.sh ingest --input 'archive/2023-01-*.jsonl.gz' --lake ./lake
Watching a prefix for new files (streaming):
  ./run.sh ingest --input 'landing/*.jsonl' --watch 1m --lake ./lake --streaming

Validation, normalization, de-duplication and the dead-letter output are the import's; how days,
panes and late data are committed is described in transforms/ingest.py and the README.
"""
import contextlib
import dataclasses
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import options as opts
from pipelines import runs
from transforms.stores import fs
from transforms.lake import iceberg, iceberg_panes
from transforms.lake.names import RUNS_DIR, STAGING_DIR, ingest_run
from transforms import read_raw
from transforms.ingest import IngestEvents, WriteSettings
from transforms.validate import DEFAULT_ENVIRONMENT

__all__ = ['STREAMING_RUNNER', 'LOCAL_RUNNERS', 'REQUIRED', 'IngestOptions', 'settings',
           'read_chunks', 'build', 'IngestRun', 'execute', 'run']

STREAMING_RUNNER = 'BundleBasedDirectRunner'   # the local runner with streaming, state and timers
LOCAL_RUNNERS = (STREAMING_RUNNER, 'DirectRunner', 'PrismRunner')
REQUIRED = ('lake',)   # and one of --subscription, --topic, --input


class IngestOptions(PipelineOptions):
  """Ingest raw JSON events from Pub/Sub or JSON-lines files into the lake by server date."""
  FLAG_GROUPS = (iceberg.IcebergOptions,)   # shown in --help beside these

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--subscription', help='Pub/Sub subscription, projects/P/subscriptions/S')
    parser.add_argument('--topic', help='Pub/Sub topic, projects/P/topics/T (a temporary '
                        'subscription is made; prefer --subscription)')
    parser.add_argument('--input', help="JSON-lines files, a glob (e.g. 'archive/*.jsonl.gz')")
    parser.add_argument('--watch', default=None,
                        help='with --input: keep watching for new files at this interval (e.g. 1m)')
    opts.add_shared(parser, '--lake', help='lake root')
    opts.add_shared(parser, '--timezone', default='UTC', help='IANA zone of the server day (dt=)')
    opts.add_shared(parser, '--environment', default=None,
                    help='environment of events that do not name one (default production)')
    parser.add_argument('--server_time_attribute', default=None,
                        help='Pub/Sub attribute holding the server time (epoch ms or RFC 3339) '
                        'of events without server_ts; default: the publish time')
    parser.add_argument('--flush_interval', default='5m',
                        help='early panes: write buffered rows of a day this often (streaming)')
    parser.add_argument('--flush_rows', type=int, default=500_000,
                        help='also write a pane when a day buffers this many rows')
    parser.add_argument('--allowed_lateness', default='1d',
                        help='rows arriving up to this long after their day ends are still '
                        'written; later ones are dead-lettered as too_late')
    parser.add_argument('--replace_days', action='store_true',
                        help='batch: replace each day this run writes rows to (the rows earlier '
                        'runs and imports wrote to it are removed, and counted); default: add '
                        'to the day, skipping insert_ids it holds')
    parser.add_argument('--day_shards', type=int, default=None,
                        help='keys each server day is spread over (by insert_id), so its '
                        'de-duplication, file writes and state run on that many workers; a pane '
                        'writes a file per shard (default: the runner\'s parallelism: '
                        '--direct_num_workers, Flink\'s --parallelism, Dataflow\'s '
                        '--max_num_workers; else 1)')
    opts.add_shared(parser, '--max_rows_per_file', type=int, default=None,
                    help='largest file to write (default 1,000,000 rows)')
    opts.add_run_args(parser, report=False)   # reports: LAKE/_runs/ingest-RUN/, one per day


def _check(o: IngestOptions, streaming: bool) -> None:
  opts.require(o, {flag: './lake' for flag in REQUIRED})
  sources = [name for name in ('subscription', 'topic', 'input') if getattr(o, name)]
  if len(sources) != 1:
    raise opts.UsageError('give exactly one source: --subscription, --topic or --input')
  if o.watch and not o.input:
    raise opts.UsageError('--watch goes with --input (a glob of files to watch)')
  if (o.subscription or o.topic or o.watch) and not streaming:
    raise opts.UsageError('Pub/Sub and --watch are unbounded: add --streaming')
  if o.replace_days and streaming:
    raise opts.UsageError('--replace_days is for batch runs (--input without --watch): a '
                          'streaming job adds to the days it writes')
  if o.watch:
    opts.parse_duration('--watch', o.watch)
  opts.parse_zone('--timezone', o.timezone)
  if o.flush_rows < 1 or (o.max_rows_per_file is not None and o.max_rows_per_file < 1):
    raise opts.UsageError('--flush_rows and --max_rows_per_file must be at least 1')
  if o.day_shards is not None and not 1 <= o.day_shards <= 4096:
    raise opts.UsageError(f'--day_shards {o.day_shards}: give 1 to 4096 (about the number of '
                          'worker cores)')
  problem = iceberg.check(o.view_as(iceberg.IcebergOptions))
  if problem:
    raise opts.UsageError(problem)


def day_shards(options: PipelineOptions) -> int:
  """--day_shards, else the parallelism the runner is given (0 workers: one per core)."""
  given = options.get_all_options()
  if given.get('day_shards'):
    return given['day_shards']
  for name in ('direct_num_workers', 'parallelism', 'max_num_workers'):
    value = given.get(name)
    if value == 0 and name == 'direct_num_workers':
      value = os.cpu_count() or 1
    if value and value > 1:
      return value
  return 1


def settings(o: IngestOptions, streaming: bool, run_id: str, shards: int = 1) -> WriteSettings:
  """With --lake_format iceberg, the tables are loaded (made on first use) here, before any
  worker writes into their data folders."""
  tables = None
  if o.view_as(iceberg.IcebergOptions).lake_format == 'iceberg':
    tables = iceberg_panes.tables(iceberg.from_options(o, o.lake), run_id)
  return WriteSettings(
      lake=o.lake, zone=o.timezone, run_id=run_id,
      allowed_lateness_ms=int(opts.parse_duration('--allowed_lateness', o.allowed_lateness) * 1000),
      flush_interval_s=opts.parse_duration('--flush_interval', o.flush_interval) if streaming
      else None, flush_rows=o.flush_rows, max_rows_per_file=o.max_rows_per_file or 1_000_000,
      batch=not streaming, replace=o.replace_days, break_lock=o.break_lock,
      shards=shards, iceberg=tables)


def read_chunks(pipeline: beam.Pipeline, o: IngestOptions) -> beam.PCollection:
  if o.input:
    local = pipeline.options.view_as(StandardOptions).runner in (STREAMING_RUNNER, 'DirectRunner')
    watch_s = opts.parse_duration('--watch', o.watch) if o.watch else None
    return read_raw.read_files(pipeline, o.input, watch_s, local=local)
  try:
    return read_raw.read_pubsub(pipeline, o.subscription, o.topic, o.server_time_attribute)
  except ValueError as e:   # Beam's check of the subscription or topic name
    flag = '--subscription' if o.subscription else '--topic'
    raise opts.UsageError(f'{flag} {o.subscription or o.topic!r}: {e} Use '
                          'projects/PROJECT/subscriptions/NAME (or projects/PROJECT/topics/NAME '
                          'for --topic).') from None


def build(pipeline: beam.Pipeline, o: IngestOptions, streaming: bool, run_id: str):
  return (read_chunks(pipeline, o)
          | 'Ingest' >> IngestEvents(settings(o, streaming, run_id, day_shards(pipeline.options)),
                                   o.environment or DEFAULT_ENVIRONMENT))


def _log(report) -> None:
  print(f'dt={report.dt} {report.status}: {report.rows_in:,} in, {report.rows_written:,} written, '
        f'{report.rows_rejected:,} rejected, {report.rows_duplicate:,} duplicates'
        + (f', {report.rows_replaced:,} rows of earlier runs replaced' if report.rows_replaced else '')
        + (f', {report.rows_forgotten:,} of forgotten users dropped' if report.rows_forgotten else '')
        + (f' ({report.message})' if report.message else ''), flush=True)


@dataclasses.dataclass
class IngestRun:
  run_id: str
  staging: str
  locks: list[str] = dataclasses.field(default_factory=list)


def execute(options: PipelineOptions, o: IngestOptions, std: StandardOptions, run: IngestRun) -> bool:
  """Runs the job; False when it was handed over (it runs on elsewhere)."""
  pipeline = beam.Pipeline(options=options)
  _ = build(pipeline, o, std.streaming, run.run_id) | 'Log' >> beam.Map(_log)
  here = not (opts.handed_over(options, []) or (std.streaming and std.runner not in LOCAL_RUNNERS))
  # the lines read so far, while the job runs in this process (no total: a file's lines are known
  # only once it is read)
  with opts.progress_shown(options, 'ingest', None) if here else contextlib.nullcontext():
    result = pipeline.run()
    if not here:
      return False
    result.wait_until_finish()
  # every staged file was moved into place: what is left are empty folders (local disk)
  fs.delete_tree(run.staging, prune_parent=True)
  return True


def run(argv: list[str]) -> int:
  options = opts.parse(IngestOptions, argv, './run.sh ingest')
  o = options.view_as(IngestOptions)
  std = options.view_as(StandardOptions)
  _check(o, std.streaming)
  if std.streaming and std.runner == opts.DEFAULT_RUNNER:
    std.runner = STREAMING_RUNNER   # the FnApiRunner runs batch only
  run_id = o.run_id or opts.new_run_id()
  fs.configure(options)
  if o.input and not o.watch and not beam.io.filesystems.FileSystems.match([o.input])[0].metadata_list:
    raise opts.UsageError(f'--input {o.input!r} matches no file')
  started = time.monotonic()
  # Each day's lock is taken in the job (WriteDays), as its rows arrive: none at launch.
  job = IngestRun(run_id, fs.join(o.lake, STAGING_DIR, ingest_run(run_id)))
  if not runs.locked(job, lambda _: None, lambda: execute(options, o, std, job)):
    print(f'ingest job {run_id} handed over to {std.runner}')   # a streaming job runs on
    return 0
  print(f'ingest run {run_id} finished in {time.monotonic() - started:.1f}s; lake: {o.lake}; '
        f'reports: {fs.join(o.lake, RUNS_DIR, ingest_run(run_id))}')
  return 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
