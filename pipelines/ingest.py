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
import dataclasses
import datetime
import logging
import os
import sys
import time
import typing

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import options as opts
from pipelines.import_events import DEFAULT_ENVIRONMENT
from transforms import storage
from transforms.commit import STAGING_DIR
from transforms.ingest import IngestEvents, WriteSettings
from transforms.raw import RawChunk
from transforms.watch import WatchFiles

CHUNK_ROWS = 10_000
BLOCK_BYTES = 8 << 20
BOM = b'\xef\xbb\xbf'   # UTF-8 byte order mark, which some Windows tools write first
STREAMING_RUNNER = 'BundleBasedDirectRunner'   # the local runner with streaming, state and timers
LOCAL_RUNNERS = (STREAMING_RUNNER, 'DirectRunner', 'PrismRunner')
REQUIRED = ('lake',)   # and one of --subscription, --topic, --input


class IngestOptions(PipelineOptions):
  """Ingest raw JSON events from Pub/Sub or JSON-lines files into the lake by server date."""

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
  return WriteSettings(
      lake=o.lake, zone=o.timezone, run_id=run_id,
      allowed_lateness_ms=int(opts.parse_duration('--allowed_lateness', o.allowed_lateness) * 1000),
      flush_interval_s=opts.parse_duration('--flush_interval', o.flush_interval) if streaming
      else None, flush_rows=o.flush_rows, max_rows_per_file=o.max_rows_per_file or 1_000_000,
      batch=not streaming, replace=o.replace_days, break_lock=o.break_lock, shards=shards)


def _now_ms() -> int:
  return int(time.time() * 1000)


class ReadJsonLines(beam.DoFn):
  """A file -> RawChunks of up to CHUNK_ROWS lines (line numbers from 1). Compression follows the
  extension. With `arrival`, the file's modification time is when its rows arrived. A compressed
  file that is corrupt or ends early yields the lines before the damage, then a chunk marked
  unreadable, which becomes one rejected row saying where reading stopped."""

  def __init__(self, arrival: bool):
    self._arrival = arrival

  def process(self, metadata):
    path = metadata.path
    modified = int(metadata.last_updated_in_seconds * 1000) or _now_ms()
    rows: list[int]
    lines: list[bytes]
    rows, lines, number, rest, first = [], [], 0, b'', True
    blocks = storage.read_blocks(path, BLOCK_BYTES)
    while True:
      try:
        block = next(blocks, b'')
      except storage.Unreadable as e:   # what was read counts; the damaged rest is one rejected row
        logging.warning('%s: lines from %d on are dead-lettered as unreadable_file', e, number + 1)
        yield from self._chunks(path, rows, lines, modified)
        yield dataclasses.replace(self._chunk(path, [number + 1], [b''], modified), unreadable=str(e))
        return
      data = rest + block
      if first and (len(data) >= len(BOM) or b'\n' in data or not block):   # the file's start only
        first, data = False, data[len(BOM):] if data.startswith(BOM) else data
      pieces = data.split(b'\n')
      rest = pieces.pop() if block else b''
      if b'\r' not in data and all(map(bytes.strip, pieces)):   # the usual case, in C
        rows.extend(range(number + 1, number + 1 + len(pieces)))
        lines.extend(pieces)
        number += len(pieces)
      else:
        for line in pieces:
          number += 1
          if line.strip():
            rows.append(number)
            lines.append(line.rstrip(b'\r'))
      if len(lines) >= CHUNK_ROWS or not block:
        yield from self._chunks(path, rows, lines, modified)
        rows, lines = [], []
      if not block:
        return

  def _chunks(self, path: str, rows: list, lines: list, modified: int) -> typing.Iterator[RawChunk]:
    for start in range(0, len(lines), CHUNK_ROWS):
      yield self._chunk(path, rows[start:start + CHUNK_ROWS], lines[start:start + CHUNK_ROWS],
                        modified)

  def _chunk(self, path: str, rows: list, lines: list, modified: int) -> RawChunk:
    n = len(lines)
    return RawChunk(source=[path] * n, rows=rows, payloads=lines,
                    arrival_ms=[modified] * n if self._arrival else None, received_ms=modified)


class PubsubPayloads(beam.DoFn):
  """PubsubMessage -> (message id, payload, server-time fallback ms, publish ms)."""

  def __init__(self, source: str, attribute: str | None):
    self._source = source
    self._attribute = attribute

  def process(self, message, timestamp=beam.DoFn.TimestampParam):
    published = int(message.publish_time.timestamp() * 1000) if message.publish_time else \
        timestamp.micros // 1000
    fallback = published
    if self._attribute and message.attributes.get(self._attribute):
      fallback = _attribute_ms(message.attributes[self._attribute], published)
    yield f'{self._source}/{message.message_id}', message.data, fallback, published


def _attribute_ms(value: str, default: int) -> int:
  try:
    return int(value)
  except ValueError:
    pass
  try:
    return int(datetime.datetime.fromisoformat(value.replace('Z', '+00:00')).timestamp() * 1000)
  except ValueError:
    return default   # the payload's own server_ts, or the publish time, decides


def _messages_chunk(messages: list) -> RawChunk:
  return RawChunk(source=[m[0] for m in messages], rows=[0] * len(messages),
                  payloads=[m[1] for m in messages], fallback_ms=[m[2] for m in messages],
                  arrival_ms=[m[3] for m in messages], received_ms=max(m[3] for m in messages))


def read_chunks(pipeline: beam.Pipeline, o: IngestOptions) -> beam.PCollection:
  if o.input:
    if o.watch:
      local = pipeline.options.view_as(StandardOptions).runner in (STREAMING_RUNNER, 'DirectRunner')
      files = pipeline | 'WatchFiles' >> WatchFiles(
          o.input, opts.parse_duration('--watch', o.watch), local=local)
    else:
      files = pipeline | 'MatchFiles' >> fileio.MatchFiles(o.input)
    return (files | 'Spread' >> beam.Reshuffle()
            | 'ReadJsonLines' >> beam.ParDo(ReadJsonLines(arrival=bool(o.watch))))
  source = o.subscription or o.topic
  try:
    read = beam.io.ReadFromPubSub(subscription=o.subscription, topic=o.topic, with_attributes=True)
  except ValueError as e:
    flag = '--subscription' if o.subscription else '--topic'
    raise opts.UsageError(f'{flag} {source!r}: {e} Use projects/PROJECT/subscriptions/NAME '
                          '(or projects/PROJECT/topics/NAME for --topic).') from None
  return (pipeline | 'ReadPubSub' >> read
          | 'Payloads' >> beam.ParDo(PubsubPayloads(source, o.server_time_attribute))
          | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=CHUNK_ROWS)
          | 'Chunk' >> beam.Map(_messages_chunk))


def build(pipeline: beam.Pipeline, o: IngestOptions, streaming: bool, run_id: str):
  return (read_chunks(pipeline, o)
          | 'Ingest' >> IngestEvents(settings(o, streaming, run_id, day_shards(pipeline.options)),
                                   o.environment or DEFAULT_ENVIRONMENT))


def _log(report) -> None:
  print(f'dt={report.dt} {report.status}: {report.rows_in:,} in, {report.rows_written:,} written, '
        f'{report.rows_rejected:,} rejected, {report.rows_duplicate:,} duplicates'
        + (f', {report.rows_replaced:,} rows of earlier runs replaced' if report.rows_replaced else '')
        + (f' ({report.message})' if report.message else ''), flush=True)


def run(argv: list[str]) -> int:
  options = opts.parse(IngestOptions, argv, './run.sh ingest')
  o = options.view_as(IngestOptions)
  std = options.view_as(StandardOptions)
  _check(o, std.streaming)
  if std.streaming and std.runner == opts.DEFAULT_RUNNER:
    std.runner = STREAMING_RUNNER   # the FnApiRunner runs batch only
  run_id = o.run_id or opts.new_run_id()
  storage.configure(options)
  if o.input and not o.watch and not beam.io.filesystems.FileSystems.match([o.input])[0].metadata_list:
    raise opts.UsageError(f'--input {o.input!r} matches no file')
  pipeline = beam.Pipeline(options=options)
  _ = build(pipeline, o, std.streaming, run_id) | 'Log' >> beam.Map(_log)
  started = time.monotonic()
  result = pipeline.run()
  if opts.handed_over(options, []) or (std.streaming and std.runner not in LOCAL_RUNNERS):
    print(f'ingest job {run_id} handed over to {std.runner}')   # a streaming job runs on
    return 0
  result.wait_until_finish()
  # every staged file was moved into place: what is left are empty folders (local disk)
  storage.delete_tree(storage.join(o.lake, STAGING_DIR, f'ingest-{run_id}'), prune_parent=True)
  print(f'ingest run {run_id} finished in {time.monotonic() - started:.1f}s; lake: {o.lake}; '
        f'reports: {storage.join(o.lake, "_runs", "ingest-" + run_id)}')
  return 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
