"""`./run.sh status`: one row per day: source ready, imported, exported to each destination, late.

  ./run.sh status --lake ./lake [--source ./bucket/events] [--dest ./export ...] \\
    [--from_date 2023-01-01 --to_date 2023-01-31] [--expect_by 13:00 --timezone Asia/Seoul] [--json]

Reads run reports, day manifests and export histories (transforms/lake/ledger.py); no data file. A day
is late when it is not published in the lake by --expect_by on the next day in --timezone (the
import contract: day D is imported on D+1). Exit 0 when no day is late or refused, 1 otherwise
(for cron and alerting checks), 2 for a wrong flag. Store flags are the import's and export's.
"""
import argparse
import datetime
import json
import re
import sys
import zoneinfo

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import notify
from pipelines import options as opts
from transforms.lake import iceberg, ledger
from transforms.stores import fs
from transforms.lake.names import HISTORY, STATE_DIR, SUCCESS

__all__ = ['StoreOptions', 'parser', 'parse', 'lake_of', 'chosen_days', 'parse_time', 'deadline', 'iso',
           'status', 'day_status', 'table', 'run']


class StoreOptions(PipelineOptions):
  """The store flags (and Beam's) that reach the lake and destinations, and an Iceberg lake's."""
  FLAG_GROUPS = (iceberg.IcebergOptions,)


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
  """The flags status, reconcile and report share."""
  p = argparse.ArgumentParser(prog=prog, description=(doc or '').split('\n\n')[0], add_help=False)
  p.add_argument('-h', '--help', action='store_true')
  p.add_argument('--lake', help='lake root (local, s3://, gs://, azfs://, sftp://)')
  p.add_argument('--dest', action='append', default=[],
                 help='an export destination (its _eventferry/ state); repeat for several')
  p.add_argument('--date', help='one day, YYYY-MM-DD')
  p.add_argument('--from_date', help='first day (with --to_date; default: every day found)')
  p.add_argument('--to_date', help='last day, inclusive')
  p.add_argument('--timezone', default='UTC', help='IANA zone of --expect_by, e.g. Asia/Seoul')
  return p


def parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
  """Our flags; the rest must be store or Beam flags (checked, then given to the stores)."""
  o, rest = p.parse_known_args(argv)
  if o.help:
    p.print_help()
    print("\nStore flags are the import's and export's (./run.sh import --help, README: Clouds);"
          "\nan Iceberg lake: --lake_format iceberg --catalog C [--table NS.NAME] (docs/iceberg.md).")
    raise SystemExit(0)
  options = opts.parse(StoreOptions, rest, p.prog)
  fs.configure(options)
  opts.require(o, {'lake': './lake'})
  problem = iceberg.check(options.view_as(iceberg.IcebergOptions))
  if problem:
    raise opts.UsageError(problem)
  o.tables = (iceberg.from_options(options, o.lake)
              if options.view_as(iceberg.IcebergOptions).lake_format == 'iceberg' else None)
  o.dest = list(dict.fromkeys(o.dest))
  for dest in o.dest:
    if opts.lies_inside(dest, o.lake):
      raise opts.UsageError(f'--dest {dest} lies inside --lake {o.lake}: give the export '
                            'destination, not a lake folder')
  return o


def lake_of(o) -> ledger.Lake:
  """The lake the flags name: a Hive lake's folders, or an Iceberg lake's tables."""
  return ledger.TableLake(o.tables) if o.tables else ledger.Lake(o.lake)


def chosen_days(o, found: list[str]) -> list[str]:
  """The --date/--from_date..--to_date days, else every day found."""
  if o.date or o.from_date or o.to_date:
    return [d.isoformat() for d in opts.date_range(o)]
  return sorted(set(found))


def exports_of(lake: ledger.Lake, dest: str) -> dict[str, ledger.ExportDay]:
  """The days exported to `dest`, with what the lake recorded of their deliveries (the export's
  flags, and the --state folder an export kept its history in)."""
  return ledger.exports(dest, lake.delivered(fs.redact(opts.normal_path(dest))))


def no_history(dest: str) -> str:
  return (f'--dest {fs.redact(dest)}: no export history there ({STATE_DIR}/{HISTORY}) and no '
          'delivery to it recorded in the lake: nothing exported to it is known (an export run '
          'with --state keeps its history there; the lake records it since deliveries were '
          'recorded: export the days again)')


def parse_time(flag: str, value: str | None) -> datetime.time | None:
  """'13:00' or '9:30' -> a time of day; None stays None."""
  if value is None:
    return None
  m = re.fullmatch(r'\s*(\d{1,2}):(\d{2})\s*', value)
  if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
    raise opts.UsageError(f'{flag} {value!r} is not a time of day: use HH:MM, e.g. {flag} 13:00')
  return datetime.time(int(m.group(1)), int(m.group(2)))


def deadline(dt: str, by: datetime.time, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
  """Day D is due at `by` on D+1 in `zone`."""
  due = datetime.date.fromisoformat(dt) + datetime.timedelta(days=1)
  return datetime.datetime.combine(due, by, tzinfo=zone).astimezone(datetime.timezone.utc)


def iso(t: datetime.datetime | None) -> str | None:
  return t.astimezone(datetime.timezone.utc).isoformat().replace('+00:00', 'Z') if t else None


def status(o, now: datetime.datetime | None = None) -> dict:
  """The status document (--json prints it as is)."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  by = parse_time('--expect_by', o.expect_by)
  zone = opts.parse_zone('--timezone', o.timezone)
  lake = lake_of(o)
  imports = lake.imports()
  exports = {dest: exports_of(lake, dest) for dest in o.dest}
  lake.problems += [no_history(dest) for dest, days in exports.items() if not days]
  found = lake.days() + list(imports) + [dt for e in exports.values() for dt in e]
  if by and found and not (o.date or o.from_date or o.to_date):   # a gap is a missing day
    first, last = (datetime.date.fromisoformat(d) for d in (min(found), max(found)))
    found += [(first + datetime.timedelta(days=i)).isoformat() for i in range((last - first).days)]
  days = [day_status(o, dt, lake, imports.get(dt), exports, by, zone, now)
          for dt in chosen_days(o, found)]
  return {'lake': fs.redact(o.lake), 'source': fs.redact(o.source) if o.source else None,
          'dests': [fs.redact(d) for d in o.dest], 'generated_at': iso(now),
          'expect_by': o.expect_by, 'timezone': o.timezone,
          'late': sum(d['late'] for d in days),
          'refused': sum(d['import'] is not None and d['import']['status'] in ('refused', 'failed')
                         for d in days),
          'problems': lake.problems, 'days': days}


def day_status(o, dt, lake: ledger.Lake, imported: ledger.ImportDay | None, exports: dict,
               by, zone, now) -> dict:
  m = lake.manifest(dt) if lake.published(dt) else None
  row: dict = {'dt': dt, 'source_ready': None, 'import': None, 'lake': None, 'deadline': None,
               'late': False, 'late_by_s': None, 'exports': {}}
  if o.source:
    row['source_ready'] = fs.exists(fs.join(fs.partition_dir(o.source, dt), SUCCESS))
  if imported:
    d = imported.day
    when = m.committed_at if m and m.run_id == imported.run_id else imported.finished_at
    row['import'] = {'status': d.status, 'run_id': imported.run_id, 'pipeline': imported.pipeline,
                     'rows_in': d.rows_in, 'rows_written': d.rows_written,
                     'rows_rejected': d.rows_rejected,
                     'rejected_share': round(d.rows_rejected / d.rows_in, 6) if d.rows_in else 0.0,
                     'rows_duplicate': d.rows_duplicate,
                     'rejected_by_reason': d.rejected_by_reason, 'at': iso(when),
                     'message': d.message,
                     'report': ledger.run_report_path(o.lake, imported.run_id)
                     if imported.pipeline == 'import' else None}
  if m:
    row['lake'] = {'rows': m.rows, 'files': len(m.files), 'bytes': m.bytes, 'run_id': m.run_id,
                   'committed_at': iso(m.committed_at)}
  if by:
    due = deadline(dt, by, zone)
    row['deadline'] = iso(due)
    if m:
      row['late_by_s'] = max(0.0, round((m.committed_at - due).total_seconds(), 3))
    row['late'] = m is None and now > due
  for dest, days in exports.items():
    e = days.get(dt)
    row['exports'][fs.redact(dest)] = e and {
        'run_id': e.run_id, 'at': e.exported_at, 'rows': e.rows, 'folder': fs.redact(e.folder),
        'current': bool(m and m.run_id == e.lake_run_id and fs.exists(e.success))}
  return row


def table(doc: dict) -> str:
  """The human table: one line per day."""
  dests = doc['dests']
  head = (f"{'day':<10} {'source':<6} {'import':<9} {'in':>9} {'written':>9} {'rejected':>8} "
          f"{'dupes':>7} {'imported at (UTC)':<17} {'late':<5}"
          + ''.join(f' {"-> dest " + str(i + 1):>22}' for i in range(len(dests))))
  lines = [f"eventferry status of {doc['lake']}" + (f" (due {doc['expect_by']} "
                                                      f"{doc['timezone']} the next day)"
                                                      if doc['expect_by'] else ''), head]
  for d in doc['days']:
    i = d['import'] or {}
    ready = {None: '-', True: 'ready', False: 'no'}[d['source_ready']]
    at = (i.get('at') or '')[:16].replace('T', ' ')
    late = 'LATE' if d['late'] else _span(d['late_by_s'])
    counts = (f"{i['rows_in']:>9,} {i['rows_written']:>9,} {i['rows_rejected']:>8,} "
              f"{i['rows_duplicate']:>7,}" if i else f"{'':>9} {'':>9} {'':>8} {'':>7}")
    cells = ''.join(f" {_export_cell(d['exports'].get(dest)):>22}" for dest in dests)
    lines.append(f"{d['dt']:<10} {ready:<6} {i.get('status', '-'):<9} {counts} {at:<17} "
                 f"{late:<5}{cells}")
    if i.get('message'):
      lines.append(f"{'':<10}   {i['message']}")
  for n, dest in enumerate(dests):
    lines.append(f'dest {n + 1}: {dest}')
  lines.append(f"{len(doc['days'])} days, {doc['late']} late, {doc['refused']} refused or failed")
  lines += [f'warning: {p}' for p in doc['problems']]
  return '\n'.join(lines)


def _span(seconds: float | None) -> str:
  """How late a published day was, as +42m, +5h or +3d."""
  if not seconds:
    return ''
  for unit, size, limit in (('m', 60, 120), ('h', 3600, 48), ('d', 86400, None)):
    if limit is None or seconds / size < limit:
      return f'+{seconds / size:.0f}{unit}'
  return ''


def _export_cell(e: dict | None) -> str:
  if not e:
    return '-'
  rows = f"{e['rows']:,}" if e['rows'] is not None else '?'
  return f"{rows} {e['at'][5:16].replace('T', ' ')}" + ('' if e['current'] else ' STALE')


def run(argv: list[str]) -> int:
  p = parser('./run.sh status', __doc__)
  p.add_argument('--source', help="the customer's prefix: is each day's _SUCCESS there?")
  p.add_argument('--expect_by', help='a day is late when not imported by this time (HH:MM, '
                 'in --timezone) on the next day')
  p.add_argument('--json', action='store_true', help='print the status as JSON')
  o = parse(p, argv)
  doc = status(o)
  print(json.dumps(doc, indent=2) if o.json else table(doc))
  bad = [d for d in doc['days'] if d['late'] or
         (d['import'] and d['import']['status'] in ('refused', 'failed'))]
  notify.note_days([{'dt': d['dt'], 'status': 'late' if d['late'] else d['import']['status'],
                     'message': f"not in the lake by {d['deadline']}" if d['late']
                     else d['import']['message']} for d in bad], lake=o.lake)
  return 1 if bad else 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
