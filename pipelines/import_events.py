"""Import: a customer's day partitions -> the validated, de-duplicated event lake.

Local (the embedded default runner):
  ./run.sh import --source ./bucket/events --date 2023-01-01 --lake ./lake
Dataflow:
  python -m pipelines.import_events --source gs://customer/events --date 2023-01-01 \\
    --lake gs://acme-lake/events --runner DataflowRunner --project P --region asia-northeast3 \\
    --temp_location gs://acme-lake/tmp --setup_file ./setup.py

The day is read only when PREFIX/dt=DAY/_SUCCESS exists. Rows are validated against the import
contract (`./run.sh schema import`), normalized, de-duplicated by insert_id and committed to
LAKE/dt=DAY/ with a manifest and `_SUCCESS`; rejected rows go to LAKE/_rejected/dt=DAY/ with a
reason. The run report is printed and kept at LAKE/_runs/RUN_ID.json.
"""
import dataclasses
import datetime
import math
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import options as opts
from pipelines import logs, notify, runs
from schemas.events import LAKE_SCHEMA, fingerprint
from schemas.reports import DayReport, Manifest, RunReport
from transforms.lake import iceberg, locks
from transforms.stores import fs
from transforms.lake.commit import CommitSettings, CommitStagedDays, StageRejected, WriteShards
from transforms.dedupe import DedupeEvents, LookbackIds
from transforms.lake.names import MANIFEST, REJECTED_DIR, RUNS_DIR, SHUFFLE_DIR, STAGING_DIR, SUCCESS
from transforms.read import WAIT_ADVICE, DayInventory, ReadDays, inspect_day, wait_for_success
from transforms.validate import DEFAULT_ENVIRONMENT, ValidateEvents

__all__ = ['PIPELINE', 'ImportOptions', 'ImportPlan', 'REQUIRED', 'check', 'inspect', 'committed',
           'lookback_files', 'plan', 'shard_count', 'build', 'report_path', 'write_report', 'summary', 'execute',
           'lock_days', 'run']

PIPELINE = 'import'


class ImportOptions(PipelineOptions):
  """Import a customer's day partitions (PREFIX/dt=YYYY-MM-DD/*.parquet + _SUCCESS) into the lake."""
  FLAG_GROUPS = (iceberg.IcebergOptions,)   # shown in --help beside these

  @classmethod
  def _add_argparse_args(cls, parser):
    opts.add_shared(parser, '--source', help='customer prefix holding dt=YYYY-MM-DD/ folders: a local '
                    'path, s3://, gs://, azfs:// or sftp:// (README: Clouds)')
    opts.add_shared(parser, '--lake', help='lake root the day is written to')
    opts.add_date_args(parser, 'import')
    opts.add_shared(parser, '--environment', default=None,
                    help='environment recorded on every row (default production)')
    parser.add_argument('--shards', type=int, default=None,
                        help='files per day; default: source bytes / --target_file_mb')
    opts.add_shared(parser, '--target_file_mb', default='128',
                    help='target size of a lake file when --shards is not given: MiB, or a '
                    'size such as 256MB or 1GiB')
    parser.add_argument('--max_shard_rows', type=int, default=1_000_000,
                        help='at most this many source rows per lake file when --shards is not '
                        'given: a shard is de-duplicated in memory, so this bounds memory even '
                        'for highly compressed sources')
    parser.add_argument('--dedupe_lookback_days', type=int, default=0,
                        help='also drop insert_ids already in the lake for N previous days')
    parser.add_argument('--wait_for_success', default=None,
                        help='wait this long (e.g. 30m, 2h) for the source _SUCCESS marker')
    parser.add_argument('--max_rejected_ratio', type=float, default=0.05,
                        help='do not publish a day whose rejected share exceeds this (0..1)')
    opts.add_run_args(parser)


@dataclasses.dataclass
class ImportPlan:
  run_id: str
  source: str
  lake: str
  environment: str
  days: list[DayInventory]
  shards: dict[str, int]
  max_rejected_ratio: float
  seen_files: list[tuple[str, str]]       # (dt being imported, committed lake file to exclude)
  started_at: datetime.datetime
  break_lock: str | None = None   # a dead run whose locks this one takes over
  locks: list[str] = dataclasses.field(default_factory=list)   # released by the job's last step
  iceberg_lake: iceberg.IcebergLake | None = None   # --lake_format iceberg: the lake's tables

  @property
  def staging(self) -> str:
    return fs.join(self.lake, STAGING_DIR, self.run_id)


REQUIRED = {'source': 's3://customer-bucket/events', 'lake': './lake'}   # flag -> example


def check(o: ImportOptions) -> None:
  opts.require(o, REQUIRED)
  if o.shards is not None and not 1 <= o.shards <= 99_999:
    raise opts.UsageError(f'--shards {o.shards} is out of range: use 1 to 99999')
  opts.parse_size('--target_file_mb', o.target_file_mb, plain=2**20)
  if o.max_shard_rows < 1:
    raise opts.UsageError('--max_shard_rows must be at least 1')
  if not 0.0 <= o.max_rejected_ratio <= 1.0:
    raise opts.UsageError(f'--max_rejected_ratio {o.max_rejected_ratio} must lie in 0..1, e.g. 0.05')
  if o.dedupe_lookback_days < 0:
    raise opts.UsageError('--dedupe_lookback_days must be 0 or more')
  opts.parse_duration('--wait_for_success', o.wait_for_success)
  problem = iceberg.check(o.view_as(iceberg.IcebergOptions))
  if problem:
    raise opts.UsageError(problem)
  if fs.join(o.lake, '').startswith(fs.join(o.source, '')):
    raise opts.UsageError('--lake must not lie inside --source')


def inspect(o: ImportOptions, day: datetime.date, advice: str = WAIT_ADVICE) -> DayInventory:
  """The source day as it is now (waiting for its _SUCCESS if asked); SourceError if unusable,
  ending with `advice` when the day is not complete."""
  wait = opts.parse_duration('--wait_for_success', o.wait_for_success)
  wait_for_success(fs.partition_dir(o.source, day.isoformat()), wait, advice=advice)
  return inspect_day(o.source, day)


def committed(o: ImportOptions, inv: DayInventory) -> tuple[bool, str]:
  """(True, why) when the lake already holds the day made from exactly this input, else
  (False, why it must run). Only the listing and footers (or the Iceberg snapshot that committed
  the day) are compared, no data is read."""
  record, missing = _committed_record(o, inv.dt)
  if record is None:
    return False, missing
  run_id = record['run_id']
  if (record['source'] or '').rstrip('/') != o.source.rstrip('/'):
    return False, f'the lake day was imported from another source ({record["source"]})'
  if record['source_fingerprint'] != inv.fingerprint:
    return False, (f'the source changed since run {run_id} (files, sizes or row counts differ: '
                   f'{record["source_files"]} files then, {len(inv.files)} now)')
  if record['schema_fingerprint'] != fingerprint(LAKE_SCHEMA):
    return False, f'the lake schema changed since run {run_id}'
  return True, (f'complete: run {run_id} committed {record["rows"]:,} rows from the same '
                f'{len(inv.files)} source files')


def _committed_record(o: ImportOptions, dt: str) -> tuple[dict | None, str]:
  """What the lake recorded of the commit of day `dt` (run_id, rows, source, source_fingerprint,
  schema_fingerprint, source_files: a count or 'some'), or (None, why there is none)."""
  if o.view_as(iceberg.IcebergOptions).lake_format == 'iceberg':
    lake = iceberg.from_options(o, o.lake)
    snapshot = iceberg.day_manifest(lake, dt)
    if snapshot is None:
      return None, f'not in the lake yet (no snapshot of {lake.table} committed dt={dt})'
    return snapshot, ''
  directory = fs.partition_dir(o.lake, dt)
  if not fs.exists(fs.join(directory, SUCCESS)):
    return None, f'not in the lake yet (no {directory}/{SUCCESS})'
  try:
    m = Manifest.model_validate_json(fs.read_bytes(fs.join(directory, MANIFEST)))
  except (OSError, ValueError) as e:
    return None, f'the lake manifest cannot be read ({str(e).splitlines()[0]})'
  return m.model_dump() | {'source_files': len(m.source_files)}, ''


def lookback_files(o: ImportOptions, dt: str) -> list[str]:
  """The lake files of day `dt` a --dedupe_lookback_days run reads insert_ids from: a Hive day's
  once it is complete (_SUCCESS), and every file an Iceberg table lists for the day (each is
  committed: readers see it)."""
  if o.view_as(iceberg.IcebergOptions).lake_format == 'iceberg':
    tbl = iceberg.table(iceberg.from_options(o, o.lake))
    return sorted(iceberg.store_path(f.file_path) for f in iceberg.day_files(tbl, dt))
  directory = fs.partition_dir(o.lake, dt)
  if not fs.exists(fs.join(directory, SUCCESS)):
    return []
  return [p for p in fs.list_files(directory) if p.endswith('.parquet')]


def plan(o: ImportOptions, inventories: list[DayInventory] | None = None) -> ImportPlan:
  """Plans the days of the options' date range, or the given inspected days."""
  check(o)
  if inventories is None:
    inventories = [inspect(o, day) for day in opts.date_range(o)]
  days = [datetime.date.fromisoformat(inv.dt) for inv in inventories]
  shards = {inv.dt: o.shards or shard_count(
      inv, opts.parse_size('--target_file_mb', o.target_file_mb, plain=2**20), o.max_shard_rows)
            for inv in inventories}
  in_run = {inv.dt for inv in inventories}
  seen: list[tuple[str, str]] = []
  for day in days:
    for back in range(1, o.dedupe_lookback_days + 1):
      prev = (day - datetime.timedelta(days=back)).isoformat()
      if prev not in in_run:
        seen.extend((day.isoformat(), p) for p in lookback_files(o, prev))
  lake = None
  if o.view_as(iceberg.IcebergOptions).lake_format == 'iceberg':
    lake = iceberg.from_options(o, o.lake)
    iceberg.table(lake)   # created on first use, before any worker writes its files
  return ImportPlan(o.run_id or opts.new_run_id(), o.source, o.lake,
                    o.environment or DEFAULT_ENVIRONMENT, inventories,
                    shards, o.max_rejected_ratio, seen,
                    datetime.datetime.now(datetime.timezone.utc), break_lock=o.break_lock,
                    iceberg_lake=lake)


def shard_count(inv: DayInventory, target_file_bytes: int, max_shard_rows: int) -> int:
  """Enough shards for both the byte target and the row cap (row counts come from the footers)."""
  by_bytes = math.ceil(inv.bytes / target_file_bytes)
  by_rows = math.ceil(inv.rows / max_shard_rows)
  return max(1, by_bytes, by_rows)


def build(pipeline: beam.Pipeline, p: ImportPlan) -> dict[str, beam.PCollection]:
  """read -> validate -> dedupe -> write -> commit -> report; returns the PCollections tests and
  callers may want."""
  events = pipeline | 'ReadDays' >> ReadDays([g for inv in p.days for g in inv.row_groups])
  checked = events | 'ValidateEvents' >> ValidateEvents(p.environment, shards=p.shards)
  seen = (pipeline | 'LookbackIds' >> LookbackIds(p.seen_files, p.shards)) if p.seen_files else None
  deduped = checked.main | 'DedupeEvents' >> DedupeEvents(p.shards, fs.join(p.staging, SHUFFLE_DIR), seen)
  root, schema = p.staging, None   # an Iceberg lake: the table's data folder, its file schema
  if p.iceberg_lake:   # (files no snapshot lists until the day's commit)
    tbl = iceberg.table(p.iceberg_lake)
    root, schema = iceberg.data_root(tbl, p.run_id), iceberg.file_schema(tbl)
  written = deduped.main | 'WriteShards' >> beam.ParDo(
      WriteShards(root, p.shards, schema)).with_outputs('stats', main='files')
  rejected = checked.rejected | 'StageRejected' >> StageRejected(
      fs.join(p.staging, SHUFFLE_DIR, REJECTED_DIR), p.staging)
  inputs = {inv.dt: {'source_files': inv.source_files, 'source_fingerprint': inv.fingerprint}
            for inv in p.days}
  settings = CommitSettings(p.lake, p.staging, p.run_id, PIPELINE, p.source, p.shards,
                            p.max_rejected_ratio, inputs, fenced=bool(p.locks), iceberg=p.iceberg_lake)
  reports = ({'lake': written.files, 'rejected': rejected,
              'stats': (checked.stats, deduped.stats, written.stats)}
             | 'CommitDays' >> CommitStagedDays(settings, [inv.dt for inv in p.days]))
  _ = (reports
       | 'CollectReports' >> beam.combiners.ToList()
       | 'WriteRunReport' >> beam.Map(write_report, p))
  return {'reports': reports, 'rejected': checked.rejected, 'files': written.files}


def report_path(lake: str, run_id: str) -> str:
  return fs.join(lake, RUNS_DIR, f'{run_id}.json')


def write_report(days: list[DayReport], p: ImportPlan) -> None:
  report = RunReport(run_id=p.run_id, pipeline=PIPELINE, source=p.source, lake=p.lake,
                     started_at=p.started_at, days=sorted(days, key=lambda d: d.dt),
                     ignored_files=[f'{inv.directory}/{n}' for inv in p.days for n in inv.ignored])
  fs.write_bytes(report_path(p.lake, p.run_id), report.model_dump_json(indent=2).encode())
  fs.delete_tree(p.staging, prune_parent=True)
  locks.release(p.locks, p.run_id)


def summary(report: RunReport) -> str:
  lines = [f'eventferry {report.pipeline} run {report.run_id}: {report.source} -> {report.lake}']
  head = f"{'day':<10} {'status':<9} {'in':>10} {'written':>10} {'rejected':>9} {'dupes':>8} " \
         f"{'files':>5} {'MiB':>8} {'seconds':>8} {'events/s':>9}"
  lines.append(head)
  for d in report.days:
    rate = d.rows_in / report.seconds if report.seconds else 0
    lines.append(f'{d.dt:<10} {d.status:<9} {d.rows_in:>10,} {d.rows_written:>10,} '
                 f'{d.rows_rejected:>9,} {d.rows_duplicate:>8,} {d.files:>5} '
                 f'{d.bytes / 2**20:>8.1f} {report.seconds:>8.1f} {rate:>9,.0f}')
    if d.snapshot_id is not None:
      lines.append(f'{"":<10}   Iceberg snapshot {d.snapshot_id} committed {d.partition}')
    for reason, count in d.rejected_by_reason.items():
      lines.append(f'{"":<10}   rejected {reason}: {count:,}')
    for flag, count in d.flags.items():
      lines.append(f'{"":<10}   flagged {flag}: {count:,}')
    if d.message:
      lines.append(f'{"":<10}   {d.message}')
  rows = sum(d.rows_in for d in report.days)
  rate = rows / report.seconds if report.seconds else 0
  if len(report.days) > 1:
    lines.append('(the days ran in one job: seconds is the job\'s, events/s the day\'s share of it)')
  lake_at, rejected_at = f'{report.lake}/dt=...', f'{report.lake}/{REJECTED_DIR}/dt=...'
  if report.days and report.days[0].snapshot_id is not None:   # an Iceberg lake's tables
    lake_at, rejected_at = (p.rsplit('=', 1)[0] + '=...' for p in (
        report.days[0].partition, report.days[0].rejected_partition))
  lines.append(f'{rows:,} events in {report.seconds:.1f}s ({rate:,.0f} events/s). '
               f'Lake: {lake_at}; rejected rows: {rejected_at}; '
               f'report: {report_path(report.lake, report.run_id)}')
  if report.ignored_files:
    lines.append(f'ignored side files (not data): {", ".join(report.ignored_files[:5])}'
                 + (' ...' if len(report.ignored_files) > 5 else ''))
  return '\n'.join(lines)


def execute(options: PipelineOptions, p: ImportPlan) -> RunReport | None:
  """Runs the planned job (after lock_days) and completes its run report; None when the job was
  only handed over (opts.handed_over). If the job fails, the caller releases the locks."""
  start = time.monotonic()
  with opts.progress_shown(options, 'import', sum(inv.rows for inv in p.days)):
    result = opts.run_job(options, lambda pipeline: build(pipeline, p), p.locks)
  if result is None:
    return None
  report = RunReport.model_validate_json(fs.read_bytes(report_path(p.lake, p.run_id)))
  report.finished_at = datetime.datetime.now(datetime.timezone.utc)
  report.seconds = round(time.monotonic() - start, 3)
  report.metrics = logs.counters(result)
  fs.write_bytes(report_path(p.lake, p.run_id), report.model_dump_json(indent=2).encode())
  return report


def lock_days(p: ImportPlan) -> None:
  """Takes every day's lock into p.locks, or none (LockedError names the held one)."""
  p.locks = locks.acquire_all(p.lake, [f'dt={inv.dt}' for inv in p.days], p.run_id,
                              'import of {} into this lake', p.break_lock)
  if p.break_lock:   # the run taken over is dead (or fenced off): its staging goes with it
    fs.delete_tree(fs.join(p.lake, STAGING_DIR, p.break_lock), prune_parent=True)


def run(argv: list[str]) -> int:
  options = opts.parse(ImportOptions, argv, './run.sh import')
  fs.configure(options)
  o = options.view_as(ImportOptions)
  p = plan(o)     # a SourceError or LockedError is told by main_guard (exit 3, 4)
  report = runs.locked(p, lock_days, lambda: execute(options, p))
  if report is None:
    print(f'import job {p.run_id} handed over to {options.view_as(StandardOptions).runner}; its '
          f'report will be at {report_path(p.lake, p.run_id)}')
    return 0
  if o.report:
    fs.write_bytes(o.report, report.model_dump_json(indent=2).encode())
  notify.note_days(report.days, report.run_id, lake=p.lake, source=p.source)
  print(summary(report))
  return 0 if report.ok else 1


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
