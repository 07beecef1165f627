"""Forget users: erase their rows from the lake, its dead letters and every delivered export.

  ./run.sh forget --lake LAKE --user_id 49591 [--user_id ...] [--ids_file ids.txt]
    [--identifier user_id] [--from_date D --to_date D] [--dest URL] [--dry_run]

A request runs in three stages, each recorded in its audit file LAKE/_eventferry/forget/REQ.json
before the next starts (REQ derives from the salted hashes of the ids, the keys and the range, so
the same command is the same request):
  1. plan: every committed lake day (and dead-letter day) in range is scanned for rows whose
     `identifiers` hold an id (transforms/lake/forget.py); the deliveries the lake recorded
     (transforms/lake/history.py) of affected days are the destinations to re-deliver;
  2. lake: each affected day, under its lock, gets only its affected files rewritten without the
     rows, through the partition commit (new manifest, `rows_forgotten` added; other files keep
     their bytes);
  3. destinations: each affected delivery is exported again with the flags it was made with
     (folder layouts replace the day, flat CleverTap folders the day's own files, Adobe folders
     are re-exported into the folder they were delivered to).
Killed at any point, the same command (with --break_lock RUN_ID, as for every command) finishes
the request; a finished request is told as such and nothing changes. Ids never reach the audit
file, logs or messages: only their salted hashes are stored.

Exit codes: 0 done (or nothing to do), 1 a destination could not be re-delivered (named; the lake
is clean; rerun later), 2 a wrong flag, 3 a lake day not usable, 4 a lock held, 5 the lake's store
refused.
"""
import datetime
import getpass
import hashlib
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import export_events
from pipelines import logs
from pipelines import options as opts
from schemas.events import LAKE_SCHEMA, REJECTED_SCHEMA
from schemas.reports import Manifest, ManifestFile
from transforms.lake import forget, history, iceberg, iceberg_forget, locks
from transforms.lake.commit import (StagedFile, checkpoint, clear_dead_staging, commit_partition,
                                    drop_staging, write_parquet)
from transforms.lake.names import MANIFEST, REJECTED_DIR, STAGING_DIR, SUCCESS
from transforms.read import SourceError
from transforms.stores import clients, fs

__all__ = ['PIPELINE', 'OWN_FLAGS', 'ForgetOptions', 'split_argv', 'passthrough', 'read_ids',
           'day_range', 'in_range', 'committed', 'tables_of', 'KINDS', 'scan', 'rewrite_day', 'rewrite_table_day',
           'forgotten_so_far', 'audit_path', 'save', 'now', 'make_plan', 'describe', 'redeliver',
           'run', 'execute']

PIPELINE = 'forget'
OWN_FLAGS = ('lake', 'user_id', 'ids_file', 'identifier', 'from_date', 'to_date', 'dest', 'run_id',
             'break_lock', 'retention_days')   # what is not one of these passes through to the re-deliveries


class ForgetOptions(PipelineOptions):
  """Erase users from the lake, its dead letters and every export delivered from it."""
  FLAG_GROUPS = (iceberg.IcebergOptions,)   # shown in --help beside these

  @classmethod
  def _add_argparse_args(cls, parser):
    opts.add_shared(parser, '--lake', help='lake root')
    parser.add_argument('--user_id', action='append', default=[],
                        help='an id to forget (repeat the flag for more)')
    parser.add_argument('--ids_file', default=None,
                        help='a text file of ids to forget, one per line (# starts a comment)')
    parser.add_argument('--identifier', action='append', default=[],
                        help='match ids under this identifiers key only (repeat; default every key)')
    opts.add_shared(parser, '--from_date', help='first lake day to scan (with --to_date)')
    opts.add_shared(parser, '--to_date', help='last lake day to scan, inclusive')
    opts.add_shared(parser, '--dest', help='re-deliver only to this destination (comma-separated '
                    'for several; default every destination the lake recorded)')
    parser.add_argument('--retention_days', type=int, default=None,
                        help='ingest drops the users\' new events of server days up to this many '
                        'days after the request (default: as long as the request exists)')
    opts.add_run_args(parser, report=False)


def split_argv(argv: list[str]) -> tuple[bool, list[str]]:
  """(dry_run, the rest): --dry_run is Beam's own flag (TestOptions), so it is taken off first."""
  dry = any(a.split('=')[0] == '--dry_run' and a.split('=', 1)[-1].lower() != 'false'
            for a in argv)
  return dry, [a for a in argv if a.split('=')[0] != '--dry_run']


def passthrough(argv: list[str]) -> list[str]:
  """argv without forget's own flags: the store and runner flags the re-deliveries need."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    name = a.split('=')[0][2:] if a.startswith('--') else None
    if name in OWN_FLAGS:
      skip = '=' not in a
      continue
    out.append(a)
  return out


def read_ids(o: ForgetOptions) -> list[str]:
  ids = [i.strip() for i in o.user_id if i.strip()]
  if o.ids_file:
    try:
      text = fs.read_bytes(o.ids_file).decode('utf-8')
    except (OSError, clients.StoreError, UnicodeDecodeError) as e:
      kind = 'is not UTF-8 text' if isinstance(e, UnicodeDecodeError) else 'cannot be read'
      raise opts.UsageError(f'--ids_file {o.ids_file} {kind}: give a text file of ids, one per '
                            'line') from None
    ids += [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith('#')]
  if not ids:
    raise opts.UsageError('no id to forget: give --user_id ID (repeatable) or --ids_file FILE')
  return sorted(set(ids))


def day_range(o: ForgetOptions) -> tuple[str | None, str | None]:
  if bool(o.from_date) != bool(o.to_date):
    raise opts.UsageError('--from_date and --to_date go together: give both (inclusive range), '
                          'or neither for every day of the lake')
  if not o.from_date:
    return None, None
  first, last = opts.parse_date('--from_date', o.from_date), opts.parse_date('--to_date', o.to_date)
  if last < first:
    raise opts.UsageError(f'--to_date {last} is before --from_date {first}')
  return first.isoformat(), last.isoformat()


def in_range(dt: str, first: str | None, last: str | None) -> bool:
  return first is None or (first <= dt <= (last or dt))


def committed(root: str, first: str | None, last: str | None) -> list[str]:
  return [d.isoformat() for d in export_events.committed_days(root)
          if in_range(d.isoformat(), first, last)]


def tables_of(o) -> iceberg.IcebergLake | None:
  """An Iceberg lake's tables (--lake_format iceberg), else None: the Hive lake's folders."""
  ice = o.view_as(iceberg.IcebergOptions)
  problem = iceberg.check(ice)
  if problem:
    raise opts.UsageError(problem)
  return iceberg.from_options(o, o.lake) if ice.lake_format == 'iceberg' else None


def _table(tables: iceberg.IcebergLake, kind: str) -> str:
  return tables.table if kind == 'lake' else tables.rejected_table


# The lake: a day's partition (lake or dead letters), scanned and rewritten.

KINDS = {'lake': ('identifiers', LAKE_SCHEMA), 'rejected': ('original', REJECTED_SCHEMA)}


def _matches(kind: str, column, ids, keys) -> pa.Array:
  if kind == 'lake':
    return forget.identifier_rows(column, ids, keys)
  return forget.rejected_rows(column, ids, keys)


def _root(lake: str, kind: str) -> str:
  return lake if kind == 'lake' else fs.join(lake, REJECTED_DIR)


def scan(lake: str, kind: str, dt: str, ids, keys, tables: iceberg.IcebergLake | None = None
         ) -> dict[str, int]:
  """{file name: rows to remove} of the files of a committed day that hold an id."""
  if tables:
    return iceberg_forget.scan(tables, _table(tables, kind), dt, KINDS[kind][0],
                               lambda column: _matches(kind, column, ids, keys))
  target = fs.partition_dir(_root(lake, kind), dt)
  manifest = Manifest.model_validate_json(fs.read_bytes(fs.join(target, MANIFEST)))
  found = {}
  for f in manifest.files:
    column = fs.read_parquet(fs.join(target, f.name), [KINDS[kind][0]])[KINDS[kind][0]]
    n = pc.sum(_matches(kind, column, ids, keys)).as_py() or 0
    if n:
      found[f.name] = n
  return found


def _entry(path: str, name: str) -> ManifestFile:
  """A file's manifest entry from its bytes (after an interrupted commit the old one may lie)."""
  data = fs.read_bytes(path)
  rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
  return ManifestFile(name=name, rows=rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def rewrite_day(lake: str, kind: str, dt: str, ids, keys, run_id: str, resumed: bool,
                fence: locks.Fence) -> None:
  """Rewrites the day's files that hold an id without those rows, keeping the others' bytes, and
  commits the day (its manifest's rows_forgotten grows by the rows removed). `resumed`: this
  request had started the day's commit before (a run that died), so the day may be unpublished
  and its files newer than its manifest: every kept file's entry is then read from its bytes."""
  column, schema = KINDS[kind]
  target = fs.partition_dir(_root(lake, kind), dt)
  published = fs.exists(fs.join(target, SUCCESS))
  if not published and not resumed:
    raise SourceError(f'{target} is not committed (no {SUCCESS}) and this request did not '
                      'unpublish it: rerun the run that writes the day, then this command')
  manifest = Manifest.model_validate_json(fs.read_bytes(fs.join(target, MANIFEST)))
  staging = fs.join(lake, STAGING_DIR, run_id, f'{kind}-dt={dt}')
  staged: list[StagedFile] = []
  entries: list[ManifestFile] = []
  for f in manifest.files:
    path = fs.join(target, f.name)
    table = fs.read_parquet(path)
    mask = _matches(kind, table[column], ids, keys)
    if pc.sum(mask).as_py():
      kept_rows = table.filter(pc.invert(mask)).cast(schema)
      staged.append(write_parquet(kept_rows, fs.join(staging, f.name), f.name))
    else:
      entries.append(f if published else _entry(path, f.name))
  if published and not staged:
    return
  entries += [ManifestFile(name=s.name, rows=s.rows, bytes=s.bytes, sha256=s.sha256)
              for s in staged]
  entries.sort(key=lambda e: e.name)
  rows = sum(e.rows for e in entries)
  removed = manifest.rows - rows
  new = manifest.model_copy(update={
      'run_id': run_id, 'pipeline': PIPELINE, 'files': entries, 'rows': rows,
      'bytes': sum(e.bytes for e in entries), 'rows_forgotten': manifest.rows_forgotten + removed,
      'committed_at': datetime.datetime.now(datetime.timezone.utc)})
  commit_partition(target, staged, new, fence=fence,
                   kept=[e.name for e in entries if e.name not in {s.name for s in staged}])
  fs.delete_tree(staging, prune_parent=True)


def rewrite_table_day(tables: iceberg.IcebergLake, kind: str, dt: str, ids, keys, run_id: str,
                      fence: locks.Fence) -> None:
  """An Iceberg lake's day without the rows (one overwrite snapshot), then no snapshot or file
  that still holds them (transforms/lake/iceberg_forget.py). A rerun finds no row and purges."""
  name = _table(tables, kind)
  iceberg_forget.rewrite(tables, name, dt, KINDS[kind][0],
                         lambda column: _matches(kind, column, ids, keys), run_id,
                         lambda: fence.check('committing', f'{name}/dt={dt}'))
  checkpoint('forget_table_committed', f'{name}/dt={dt}')
  iceberg_forget.purge(tables, name, dt)


def forgotten_so_far(lake: str, kind: str, dt: str, tables: iceberg.IcebergLake | None = None) -> int:
  if tables:
    return iceberg_forget.rows_forgotten(tables, _table(tables, kind), dt)
  target = fs.partition_dir(_root(lake, kind), dt)
  return Manifest.model_validate_json(fs.read_bytes(fs.join(target, MANIFEST))).rows_forgotten


# The audit file.

def audit_path(lake: str, request: str) -> str:
  return fs.join(forget.forget_dir(lake), f'{request}.json')


def save(lake: str, audit: dict) -> None:
  fs.write_bytes(audit_path(lake, audit['request_id']),
                      json.dumps(audit, indent=2, sort_keys=True).encode())


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat()


# Plan.

def make_plan(lake: str, ids, keys, first, last, only: list[str],
              tables: iceberg.IcebergLake | None = None) -> dict:
  days: dict[str, dict] = {}
  for kind in KINDS:
    found_days = ([dt for dt in iceberg.committed_days(tables, _table(tables, kind))
                   if in_range(dt, first, last)] if tables else committed(_root(lake, kind), first, last))
    for dt in found_days:
      found = scan(lake, kind, dt, ids, keys, tables)
      if found:
        days.setdefault(dt, {})[kind] = {'rows': sum(found.values()), 'files': sorted(found)}
  dests = []
  for d in history.deliveries(lake):
    if only and not any(opts.lies_inside(d['target'], o) for o in only):
      continue
    hit = sorted(dt for dt in d['lake_days'] if 'lake' in days.get(dt, {}))
    if hit:
      key = hashlib.sha1(f'{d["dest"]}|{d["unit"]}|{d["dt"]}'.encode()).hexdigest()[:16]
      dests.append({'key': key, 'dt': d['dt'], 'dest': d['dest'], 'target': d['target'],
                    'unit': d['unit'], 'lake_days': hit, 'files': d['files'], 'rows': d['rows'],
                    'format': d['flags'].get('format'), 'layout': d['flags'].get('layout'),
                    'delivery': d})
  return {'days': dict(sorted(days.items())), 'destinations': dests}


def describe(plan: dict) -> list[str]:
  lines = []
  for dt, kinds in plan['days'].items():
    parts = [f'{kind}: {k["rows"]:,} rows in {len(k["files"])} files ({", ".join(k["files"])})'
             for kind, k in kinds.items()]
    lines.append(f'dt={dt}  ' + '; '.join(parts))
  for d in plan['destinations']:
    lines.append(f'dest {d["target"]}  day {d["dt"]} ({d["layout"]}, {d["format"]}): re-deliver '
                 f'{len(d["files"])} files')
  if not lines:
    lines.append('no row of the lake holds these ids: nothing to forget')
  return lines


# Run.

def redeliver(lake: str, d: dict, argv: list[str], run_id: str, break_lock: str | None) -> dict:
  """Exports the delivery's day again with the flags it was made with; what it delivered now."""
  delivery = d['delivery']
  # the minute it was delivered at: Adobe's folder and CleverTap's file names carry it
  flags = [f'--{k}={v}' for k, v in delivery['flags'].items()]
  flags.append(f'--export_time={delivery["export_time"]}')
  args = ['--lake', lake, '--dest', delivery['dest'], '--date', delivery['dt'], *flags,
          '--run_id', run_id, *(['--break_lock', break_lock] if break_lock else []),
          *passthrough(argv)]
  export_events.run(args)
  mine = [x for x in history.deliveries(lake)
          if (x['dt'], x['dest'], x['unit']) == (d['dt'], d['dest'], d['unit'])]
  return {'files': len(mine[-1]['files']), 'rows': mine[-1]['rows'], 'at': mine[-1]['exported_at']}


def run(argv: list[str]) -> int:
  dry, argv = split_argv(argv)
  options = opts.parse(ForgetOptions, argv, './run.sh forget')
  fs.configure(options)
  o = options.view_as(ForgetOptions)
  opts.require(o, {'lake': './lake'})
  if o.retention_days is not None and o.retention_days < 0:
    raise opts.UsageError(f'--retention_days {o.retention_days} is negative: give 0 or more days')
  ids = read_ids(o)
  keys = sorted({k.strip().lower() for k in o.identifier if k.strip()}) or None
  first, last = day_range(o)
  only = [x.strip() for x in (o.dest or '').split(',') if x.strip()]
  salt = forget.salt(o.lake, create=not dry) or os.urandom(32)
  hashes = sorted(forget.hashed(salt, i) for i in ids)
  request = forget.request_id(hashes, keys, first, last)
  path = audit_path(o.lake, request)
  audit = json.loads(fs.read_bytes(path)) if fs.exists(path) else None
  print(f'forget request {request}: {len(ids)} ids, keys '
        f'{", ".join(keys) if keys else "every identifier key"}, days '
        f'{f"{first}..{last}" if first else "all"}')
  if audit and audit['outcome'] == 'finished':
    print(f'request {request} finished at {audit["finished_at"]}: nothing to do '
          f'(audit: {path})')
    return 0
  if dry:
    plan = audit['plan'] if audit else make_plan(o.lake, ids, keys, first, last, only, tables_of(o))
    for line in describe(plan):
      print(line)
    print('dry run: nothing was changed')
    return 0
  run_id = o.run_id or opts.new_run_id()
  held = [locks.acquire(o.lake, f'forget-{request}', run_id, f'forget request {request}',
                        o.break_lock)]
  try:
    return execute(o, argv, audit, request, ids, keys, first, last, only, hashes, run_id, held)
  finally:
    locks.release(held, run_id)


def execute(o, argv, audit, request, ids, keys, first, last, only, hashes, run_id, held) -> int:
  start = time.monotonic()
  tables = tables_of(o)
  if audit is None:
    audit = {'request_id': request, 'created_at': now(), 'who': getpass.getuser(),
             'id_hashes': hashes, 'ids': len(ids), 'keys': keys, 'from_date': first,
             'to_date': last, 'only_dests': only, 'runs': [],
             'drop_new_until': forget.drop_until(datetime.date.today(), o.retention_days),
             'plan': make_plan(o.lake, ids, keys, first, last, only, tables),
             'days': {}, 'destinations': {}, 'outcome': 'running'}
  audit['runs'].append({'run_id': run_id, 'who': getpass.getuser(), 'started_at': now()})
  save(o.lake, audit)
  for line in describe(audit['plan']):
    print(line)
  checkpoint('forget_planned', o.lake)
  for dt, kinds in audit['plan']['days'].items():
    done = audit['days'].setdefault(dt, {})
    for kind in kinds:
      if kind in done and done[kind].get('done'):
        continue
      lock = locks.acquire(o.lake, f'dt={dt}', run_id, f'run writing dt={dt} of this lake',
                           o.break_lock)
      held.append(lock)
      try:
        clear_dead_staging(fs.join(o.lake, STAGING_DIR), run_id, {f'{kind}-dt={dt}'})
        resumed = kind in done
        if not resumed:   # the day's commit starts: a rerun may find it unpublished
          done[kind] = {'done': False, 'before': forgotten_so_far(o.lake, kind, dt, tables)}
          save(o.lake, audit)
        if tables:
          rewrite_table_day(tables, kind, dt, ids, keys, run_id, locks.Fence(lock, run_id))
        else:
          rewrite_day(o.lake, kind, dt, ids, keys, run_id, resumed, locks.Fence(lock, run_id))
      except BaseException:
        drop_staging(fs.join(o.lake, STAGING_DIR, run_id))
        raise
      finally:
        locks.release([lock], run_id)
        held.remove(lock)
      # counted by the manifest, so a commit a killed run finished is counted too
      done[kind] = {'done': True, 'rows_forgotten':
                    forgotten_so_far(o.lake, kind, dt, tables) - done[kind]['before']}
      save(o.lake, audit)
  checkpoint('forget_lake_done', o.lake)
  failed = []
  for d in audit['plan']['destinations']:
    if audit['destinations'].get(d['key'], {}).get('done'):
      continue
    try:
      result = redeliver(o.lake, d, argv, run_id, o.break_lock)
      audit['destinations'][d['key']] = {'done': True, 'dest': d['dest'], 'target': d['target'],
                                         'dt': d['dt'], **result}
    except (Exception, SystemExit) as e:  # noqa: BLE001 - told, recorded, and the exit is 1
      reason = _reason(e)
      audit['destinations'][d['key']] = {'done': False, 'dest': d['dest'], 'target': d['target'],
                                         'dt': d['dt'], 'error': reason}
      failed.append(f'{d["target"]} (day {d["dt"]}): {reason}')
    save(o.lake, audit)
  audit['seconds'] = round(audit.get('seconds', 0) + time.monotonic() - start, 3)
  if failed:
    audit['outcome'] = 'unfinished'
    save(o.lake, audit)
    for line in failed:
      logs.LOG.error('not re-delivered: %s', line)
    logs.LOG.error('forget request %s: the lake is clean, %d destinations still hold the rows '
                   '(above); fix their access and run the same command again', request,
                   len(failed))
    return 1
  audit['outcome'], audit['finished_at'] = 'finished', now()
  save(o.lake, audit)
  removed = sum(k['rows_forgotten'] for day in audit['days'].values() for k in day.values())
  print(f'forget request {request} finished: {removed:,} rows removed from '
        f'{len(audit["days"])} days, {len(audit["destinations"])} deliveries redone '
        f'({audit["seconds"]:.1f}s). Audit: {audit_path(o.lake, request)}')
  return 0


def _reason(e: BaseException) -> str:
  for kind in (clients.StoreError, SourceError, locks.LockedError, opts.UsageError):
    message = opts.raised(e, kind)
    if message is not None:
      return message
  return f'{type(e).__name__}: {e}'


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
