"""Backfill: import or export a range of days resumably, one Beam job per chunk of days.

Local:
  ./run.sh backfill import --source ./bucket/events --lake ./lake \\
    --from_date 2023-01-01 --to_date 2023-03-31 [--force] [--dry_run] [--days_per_job 7]
  ./run.sh backfill export --spec exports/example.yaml --from_date 2023-01-01 --to_date 2023-03-31
Dataflow (each chunk is one Dataflow job; the plan is made where the command runs):
  python -m pipelines.backfill import --source gs://customer/events --lake gs://acme-lake/events \\
    --from_date 2023-01-01 --to_date 2023-03-31 --runner DataflowRunner --project P \\
    --region asia-northeast3 --temp_location gs://acme-lake/tmp --setup_file ./setup.py

Every day is judged on its own before any job runs, by the pipelines' own functions
(import_events.inspect/committed, export_events.exported): a day the destination already holds
from the same input is skipped unless --force; a day whose input is not usable fails with its
reason and the others go on. A chunk whose job fails is retried day by day, so one bad day cannot
take its neighbours down. Exit 0 when every day is published or skipped, 1 otherwise, 2 for a
wrong flag; with --dry_run, 3 when a day could not run.
"""
import argparse
import dataclasses
import datetime
import json
import sys
import time

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipelines import export_events, import_events, notify, runs
from pipelines import options as opts
from pipelines.logs import LOG
from transforms.lake import iceberg, locks
from transforms.stores import fs
from transforms import export_days
from transforms.read import SourceError

__all__ = ['DAYS_PER_JOB', 'REQUIRED', 'BackfillOptions', 'Day', 'ImportDays', 'ExportDays',
           'KINDS', 'judge', 'handed_over', 'split_argv', 'chunks', 'run_days', 'plan_table',
           'result_table', 'print_help', 'run']

DAYS_PER_JOB = 7   # measured: see README "Backfills"
REQUIRED = {'pipeline': 'import', 'from_date': '2023-01-01', 'to_date': '2023-03-31'}   # + lake


class BackfillOptions(PipelineOptions):
  """Backfill a range of days with the import or export pipeline (their flags apply too)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--pipeline', default=None,
                        help='import or export (or as the first word: ./run.sh backfill import)')
    opts.add_switch(parser, '--force', help='run days that are already complete, too')
    parser.add_argument('--days_per_job', type=int, default=DAYS_PER_JOB,
                        help=f'days per Beam job (default {DAYS_PER_JOB})')
    # --dry_run (print the plan, run nothing) is taken off argv before Beam parses it: Beam's
    # TestOptions owns that flag name.


@dataclasses.dataclass
class Day:
  dt: str
  source: str
  dest: str
  action: str               # run | skip | fail (the plan)
  reason: str
  status: str = ''          # published | refused | failed | skipped | submitted (the outcome)
  message: str = ''
  rows_in: int = 0
  rows_written: int = 0
  rows_rejected: int = 0
  rows_duplicate: int = 0
  seconds: float = 0.0
  run_id: str = ''

  @property
  def date(self) -> datetime.date:
    return datetime.date.fromisoformat(self.dt)


class ImportDays:
  """How a backfill plans, judges and runs import days."""
  option_class = import_events.ImportOptions

  def paths(self, o, dt: str) -> tuple[str, str]:
    ice = o.view_as(iceberg.IcebergOptions)
    lake_day = f'{ice.table}/{iceberg.DAY}={dt}' if ice.lake_format == 'iceberg' else fs.partition_dir(o.lake, dt)
    return fs.partition_dir(o.source, dt), lake_day

  ADVICE = 'rerun the backfill once it is there (a backfill does not wait)'

  def complete(self, o, day: datetime.date) -> tuple[bool, str]:
    return import_events.committed(o, import_events.inspect(o, day, self.ADVICE))

  def run(self, options, o, days: list[Day]) -> None:
    # Inspected again at launch, so that the manifest records what this job really read.
    p = import_events.plan(o, [import_events.inspect(o, d.date, self.ADVICE) for d in days])
    report = runs.locked(p, import_events.lock_days, lambda: import_events.execute(options, p))
    if report is None:
      handed_over(days, p.run_id)
      return
    total = sum(r.rows_in for r in report.days) or 1
    by_dt = {r.dt: r for r in report.days}
    for d in days:
      r = by_dt[d.dt]
      d.status, d.message, d.run_id = r.status, r.message, report.run_id
      d.rows_in, d.rows_written = r.rows_in, r.rows_written
      d.rows_rejected, d.rows_duplicate = r.rows_rejected, r.rows_duplicate
      d.seconds = (report.seconds or 0.0) * (r.rows_in / total if len(days) > 1 else 1)


class ExportDays:
  """How a backfill plans, judges and runs export days."""
  option_class = export_events.ExportOptions

  def layout(self, o) -> export_events.Layout:
    try:
      return export_events.Layout.of(o.layout, o.partition_template, o.file_template)
    except export_events.LayoutError as e:
      raise opts.UsageError(str(e)) from None

  def paths(self, o, dt: str) -> tuple[str, str]:
    """The day's folder as a run starting now would render it; each job names itself
    ({run_id}) when it starts, and a run-scoped folder is claimed then (claim_folders)."""
    folder = export_events.day_folder(o, self.layout(o), dt, 'RUN_ID', export_events.export_minute())
    return fs.partition_dir(o.lake, dt), folder

  def complete(self, o, day: datetime.date) -> tuple[bool, str]:
    return export_events.exported(o, day)

  def run(self, options, o, days: list[Day]) -> None:
    p = export_events.plan(o, [d.date for d in days])
    report = runs.locked(p, export_events.lock_days, lambda: export_events.execute(options, p))
    if report is None:
      handed_over(days, p.run_id)
      return
    total = sum(r.rows for r in report.days) or 1
    by_dt = {r.dt: r for r in report.days}
    for d in days:
      r = by_dt[d.dt]
      d.status, d.run_id, d.dest = 'published', p.run_id, export_days.target_of(p, d.dt)
      d.rows_in = d.rows_written = r.rows
      d.seconds = report.seconds * (r.rows / total if len(days) > 1 else 1)


KINDS: dict[str, type[ImportDays] | type[ExportDays]] = {'import': ImportDays, 'export': ExportDays}


def judge(kind: ImportDays | ExportDays, o, day: datetime.date) -> Day:
  """The day's plan: skip it (complete), run it, or fail it (its input is not usable)."""
  dt = day.isoformat()
  d = Day(dt, *kind.paths(o, dt), 'run', '')
  try:
    done, d.reason = kind.complete(o, day)
  except SourceError as e:
    d.action, d.reason = 'fail', str(e)
    return d
  d.action = 'skip' if done else 'run'
  return d


def handed_over(days: list[Day], run_id: str) -> None:
  for d in days:
    d.status, d.run_id, d.message = 'submitted', run_id, f'job {run_id} handed over'


def split_argv(argv: list[str]) -> tuple[str | None, bool, list[str]]:
  """(pipeline, dry_run, the rest): `import`/`export` may come first instead of --pipeline."""
  dry = any(a.split('=')[0] == '--dry_run' and a.split('=', 1)[-1].lower() != 'false'
            for a in argv)
  rest = [a for a in argv if a.split('=')[0] != '--dry_run']
  what = None
  if rest and rest[0] in KINDS:
    what, rest = rest[0], rest[1:]
  return what, dry, rest


def chunks(days: list[Day], size: int) -> list[list[Day]]:
  return [days[i:i + size] for i in range(0, len(days), size)]


def run_days(kind, options, o, todo: list[Day], size: int, progress) -> None:
  """Runs `todo` in jobs of `size` days; a failed job's days are retried one by one."""
  for chunk in chunks(todo, size):
    o.run_id = None
    try:
      kind.run(options, o, chunk)
    except opts.UsageError:
      raise
    except Exception as e:   # a job failed, for whatever reason: it must not stop the others
      if len(chunk) > 1:
        LOG.warning('backfill: the job for %s..%s failed (%s); retrying its days one by one',
                    chunk[0].dt, chunk[-1].dt, _first_line(e))
        run_days(kind, options, o, chunk, 1, progress)
        continue
      chunk[0].status, chunk[0].message = 'failed', _first_line(e)
    progress()


def _first_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  return text.splitlines()[0] if isinstance(e, locks.LockedError) else text.splitlines()[-1]


def plan_table(what: str, days: list[Day], size: int) -> str:
  todo = [d for d in days if d.action == 'run']
  lines = [f'backfill {what} plan: {len(days)} days, {len(todo)} to run in '
           f'{len(chunks(todo, size))} job(s) of up to {size} days (--days_per_job)',
           f"{'day':<10} {'action':<6} source -> destination"]
  for d in days:
    lines.append(f'{d.dt:<10} {d.action:<6} {d.source} -> {d.dest}')
    lines.append(f'{"":<10} {"":<6} {d.reason}')
  return '\n'.join(lines)


def result_table(what: str, days: list[Day], seconds: float) -> str:
  lines = [f"{'day':<10} {'status':<9} {'rows in':>10} {'written':>10} {'rejected':>9} "
           f"{'dupes':>8} {'seconds':>8}"]
  for d in days:
    lines.append(f'{d.dt:<10} {d.status:<9} {d.rows_in:>10,} {d.rows_written:>10,} '
                 f'{d.rows_rejected:>9,} {d.rows_duplicate:>8,} {d.seconds:>8.1f}')
    note = d.reason if d.status == 'skipped' else d.message
    if note:
      lines.append(f'{"":<10}   {note}')
  counts = {s: sum(d.status == s for d in days)
            for s in ('published', 'skipped', 'refused', 'failed', 'submitted')}
  rows = sum(d.rows_in for d in days)
  lines.append(f'backfill {what}: ' + ', '.join(f'{n} {s}' for s, n in counts.items()
                                                if n or s != 'submitted')
               + f'; {rows:,} events in {seconds:.1f}s ({rows / seconds if seconds else 0:,.0f} '
               'events/s). Days of one job share its seconds in proportion to their rows.')
  return '\n'.join(lines)


def print_help() -> None:
  parser = argparse.ArgumentParser(prog='./run.sh backfill import|export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  BackfillOptions._add_argparse_args(parser)
  parser.add_argument('--dry_run', action='store_true',
                      help='print each day, its source and destination, and whether it would run')
  parser.print_help()


def run(argv: list[str]) -> int:
  what, dry, argv = split_argv(argv)
  if '-h' in argv or '--help' in argv:
    print_help()
    if what:
      print(f'\nThe {what} flags:')
      opts.parse(KINDS[what].option_class, ['--help'], '')
    return 0
  for flag, value in zip(argv, argv[1:] + ['']):
    if flag.split('=')[0] == '--pipeline':
      what = what or (flag.split('=', 1)[1] if '=' in flag else value)
  if what not in KINDS:
    raise opts.UsageError('say what to backfill: ./run.sh backfill import ... or '
                          './run.sh backfill export ... (or --pipeline=import|export)')
  kind = KINDS[what]()
  options = opts.parse(kind.option_class, argv, f'./run.sh backfill {what}')
  o = options.view_as(kind.option_class)
  b = options.view_as(BackfillOptions)
  if isinstance(o, export_events.ExportOptions):
    export_events.apply_spec(o, argv)
    export_events.fmt_of(o)      # wrong flags stop the backfill before any day runs
    if o.kind != 'events':
      raise opts.UsageError('backfill export takes --kind events only')
    if b.days_per_job > o.max_range_days:
      raise opts.UsageError(f'--days_per_job {b.days_per_job} is above --max_range_days '
                            f'{o.max_range_days}')
  elif isinstance(o, import_events.ImportOptions):
    import_events.check(o)
    if o.wait_for_success:
      raise opts.UsageError('--wait_for_success does not apply to a backfill: a day without '
                            '_SUCCESS is reported as failed; rerun the backfill to pick it up')
  opts.require(o, {k: v for k, v in REQUIRED.items() if k != 'pipeline'})
  if o.run_id:
    raise opts.UsageError('--run_id: a backfill names each of its jobs itself; leave it out')
  if b.days_per_job < 1:
    raise opts.UsageError('--days_per_job must be at least 1')

  days = [judge(kind, o, day) for day in opts.date_range(o)]
  if b.force:
    for d in days:
      if d.action == 'skip':
        d.action, d.reason = 'run', f'--force ({d.reason})'
  size = b.days_per_job
  if isinstance(kind, ExportDays) and not kind.layout(o).per_day:
    size = 1                     # days that share one folder (e.g. exportTime=) are one job each
  if options.view_as(GoogleCloudOptions).template_location:
    size = max(1, sum(d.action == 'run' for d in days))   # a Flex Template launch is one job
  if dry:
    print(plan_table(what, days, size))
    return 3 if any(d.action == 'fail' for d in days) else 0

  for d in days:
    if d.action == 'skip':
      d.status = 'skipped'
    elif d.action == 'fail':
      d.status, d.message = 'failed', d.reason
  todo = [d for d in days if d.action == 'run']
  start = time.monotonic()

  def progress():
    done = [d for d in days if d.status]
    rows = sum(d.rows_in for d in done)
    seconds = time.monotonic() - start
    failed = sum(d.status in ('failed', 'refused') for d in done)
    rate = rows / seconds if seconds else 0
    LOG.info(f'backfill {what}: {len(done)}/{len(days)} days done ({failed} not published), '
             f'{rows:,} events, {rate:,.0f} events/s, {seconds:.1f}s',
             extra={'fields': {'days_done': len(done), 'days': len(days), 'not_published': failed,
                               'events': rows, 'events_per_s': round(rate),
                               'seconds': round(seconds, 3)}})

  run_days(kind, options, o, todo, size, progress)
  seconds = time.monotonic() - start
  if o.report:
    fs.write_bytes(o.report, json.dumps({'pipeline': f'backfill {what}', 'seconds': seconds,
                                              'days': [dataclasses.asdict(d) for d in days]},
                                             indent=2).encode())
  notify.note_days(days, lake=getattr(o, 'lake', None), dest=getattr(o, 'dest', None))
  print(result_table(what, days, seconds))
  return 0 if all(d.status in ('published', 'skipped', 'submitted') for d in days) else 1


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
