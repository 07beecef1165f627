"""`./run.sh reconcile`: are the lake's and the destinations' days still what their manifests say?

  ./run.sh reconcile --lake ./lake [--dest ./export ...] [--from_date D --to_date D] [--deep]

For every day (lake, its rejected rows, each destination's exports): each file the manifest lists
is there with its size; no file the manifest does not list lies in the day's folder; the Parquet
footers' row counts equal the manifest's; the manifest's totals add up; the import's accounting
holds (rows in = written + rejected + duplicate, and the lake and rejected days hold the rows its
run report says); each exported day holds its lake day's rows. That reads listings, manifests,
run reports and Parquet footers only. `--deep` reads every byte: each file's sha256 against the
manifest, and the insert_ids of each exported day (Parquet, JSON lines, Avro) against the lake
day's (one checksum of the sorted ids).

Each mismatch is one line naming the file and what differs; exit 1 when there is any, 0 when
none, 2 for a wrong flag. Store flags are the import's and export's.
"""
import dataclasses
import re
import sys
import time

from pipelines import logs
from pipelines import options as opts
from pipelines import status
from schemas.reports import Manifest
from transforms.lake import ledger
from transforms.stores import fs
from transforms.lake.names import MANIFEST, SUCCESS

__all__ = ['Findings', 'check_files', 'check_lake', 'check_tables', 'check_accounting', 'check_dest',
           'compare_ids', 'reconcile', 'run']


@dataclasses.dataclass
class Findings:
  deep: bool
  mismatches: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  days: int = 0
  files: int = 0

  def differ(self, path: str, what: str) -> None:
    self.mismatches.append(f'{fs.redact(path)}: {what}')


def check_files(f: Findings, folder: str, m: Manifest, listing: dict[str, int],
                owns_folder: bool = True, day_names: tuple[str, re.Pattern] | None = None,
                manifest_at: str | None = None) -> None:
  """The manifest's files against the folder's listing (and their bytes, with --deep). In a
  flat folder (not `owns_folder`) an extra file is one named as the day's (`day_names`).
  `manifest_at`: how messages name the manifest (default FOLDER/_manifest.json)."""
  markers = {MANIFEST, SUCCESS}
  manifest_at = manifest_at or fs.join(folder, MANIFEST)
  if sum(x.rows for x in m.files) != m.rows:
    f.differ(manifest_at, f'says {m.rows:,} rows, its files\' rows add up to '
             f'{sum(x.rows for x in m.files):,}')
  if sum(x.bytes for x in m.files) != m.bytes:
    f.differ(manifest_at, f'says {m.bytes:,} bytes, its files\' bytes add up '
             f'to {sum(x.bytes for x in m.files):,}')
  for entry in m.files:
    path = fs.join(folder, entry.name)
    f.files += 1
    if path not in listing:
      f.differ(path, f'missing (the manifest lists it: {entry.bytes:,} bytes, {entry.rows:,} rows)')
      continue
    if listing[path] != entry.bytes:
      f.differ(path, f'{listing[path]:,} bytes, the manifest says {entry.bytes:,} (truncated or '
               'rewritten)')
      continue
    if entry.name.endswith('.parquet'):
      try:
        rows = ledger.footer_rows(path)
      except (OSError, ValueError) as e:   # pyarrow's ArrowInvalid is a ValueError
        f.differ(path, f'not readable as Parquet ({str(e).splitlines()[0]})')
        continue
      if rows != entry.rows:
        f.differ(path, f'{rows:,} rows in its Parquet footer, the manifest says {entry.rows:,}')
    if f.deep and entry.sha256 and ledger.sha256(path) != entry.sha256:
      f.differ(path, 'sha256 differs from the manifest\'s: its bytes changed since the commit')
    elif f.deep and not entry.sha256 and entry.name.endswith('.parquet'):   # Iceberg: no checksum
      try:
        rows = ledger.all_rows(path)
      except (OSError, ValueError) as e:
        f.differ(path, f'not readable as Parquet ({str(e).splitlines()[0]})')
        continue
      if rows != entry.rows:
        f.differ(path, f'{rows:,} rows decoded, the table records {entry.rows:,}')
  listed = {fs.join(folder, x.name) for x in m.files}
  for path in sorted(set(listing) - listed):
    name = ledger.relative(folder, path)
    if owns_folder and name not in markers and not name.startswith('_'):
      f.differ(path, 'extra file: in the published day, not in its manifest')
    elif not owns_folder and day_names and day_names[1].fullmatch(name):
      f.differ(path, f'extra file: named as a file of day {day_names[0]}, not in its manifest')


def check_lake(f: Findings, lake: ledger.Lake, days: list[str]) -> dict[str, Manifest]:
  """The lake's and its rejected rows' days; returns the published lake days' manifests."""
  runs = {r.run_id: {d.dt: d for d in r.days} for r in lake.runs()}
  if isinstance(lake, ledger.TableLake):
    return check_tables(f, lake, days, runs)
  manifests = {}
  for dt in days:
    folder = lake.day_dir(dt)
    listing = lake.paths_under(f'dt={dt}')
    rejected_listing = lake.paths_under(ledger.relative(lake.root, lake.day_dir(dt, True)))
    if not listing and not rejected_listing:
      continue
    f.days += 1
    m = lake.manifest(dt) if lake.published(dt) else None
    if listing and m is None:
      f.notes.append(f'{fs.redact(folder)}: not published (no {SUCCESS} or no manifest): '
                     'not checked')
    if m:
      manifests[dt] = m
      check_files(f, folder, m, listing)
    rejected = lake.manifest(dt, rejected=True)
    if rejected:
      check_files(f, lake.day_dir(dt, True), rejected, rejected_listing)
    if m:
      check_accounting(f, lake, dt, m, rejected, runs.get(m.run_id, {}).get(dt))
  return manifests


def check_tables(f: Findings, lake: ledger.TableLake, days: list[str], runs: dict) -> dict[str, Manifest]:
  """An Iceberg lake's days: each file the table's snapshot lists for the day is there with the
  size and (footer) row count the table records; files no snapshot lists are left to
  `./run.sh maintain` (orphans are no mismatch). Returns the committed days' manifests."""
  manifests = {}
  for dt in days:
    m, rejected = lake.manifest(dt), lake.manifest(dt, rejected=True)
    if m is None and rejected is None:
      continue
    f.days += 1
    for day in (m, rejected):
      if day:
        check_files(f, lake.root, day, lake.files, owns_folder=False,
                    manifest_at=lake.manifest_path(dt, day is rejected))
    if m:
      manifests[dt] = m
      check_accounting(f, lake, dt, m, rejected, runs.get(m.run_id, {}).get(dt))
  return manifests


def check_accounting(f: Findings, lake: ledger.Lake, dt: str, m: Manifest,
                     rejected: Manifest | None, day) -> None:
  report = ledger.run_report_path(lake.root, m.run_id)
  if day is None:
    f.notes.append(f'{fs.redact(lake.day_dir(dt))}: no run report of run {m.run_id}: '
                   'the accounting was not checked')
    return
  if day.rows_in != day.rows_written + day.rows_rejected + day.rows_duplicate:
    f.differ(report, f'dt={dt}: {day.rows_in:,} rows in != {day.rows_written:,} written + '
             f'{day.rows_rejected:,} rejected + {day.rows_duplicate:,} duplicate')
  if day.rows_written != m.rows:
    f.differ(lake.manifest_path(dt), f'{m.rows:,} rows, the run report of '
             f'run {m.run_id} says {day.rows_written:,} were written')
  if rejected and rejected.run_id == m.run_id and rejected.rows != day.rows_rejected:
    f.differ(lake.manifest_path(dt, True), f'{rejected.rows:,} rejected rows, '
             f'the run report of run {m.run_id} says {day.rows_rejected:,}')


def check_dest(f: Findings, lake: ledger.Lake, dest: str, exported: dict[str, ledger.ExportDay],
               days: list[str], manifests: dict[str, Manifest]) -> None:
  if not exported:
    f.notes.append(status.no_history(dest))
  listings: dict[str, dict[str, int]] = {}   # a flat folder is listed once for all its days
  for dt in days:
    e = exported.get(dt)
    if e is None:
      continue
    f.days += 1
    if not fs.exists(e.success):
      f.notes.append(f'{fs.redact(e.folder)}: not published (no {e.success.split("/")[-1]}): '
                     'not checked')
      continue
    try:
      m = Manifest.model_validate_json(fs.read_bytes(e.manifest))
    except (OSError, ValueError) as err:
      f.differ(e.manifest, f'cannot be read ({str(err).splitlines()[0]})')
      continue
    flat = ledger.relative(dest, e.manifest) != f'{ledger.relative(dest, e.folder)}/{MANIFEST}'
    if e.folder not in listings:
      listings[e.folder] = {p: n for p, n in fs.list_files(e.folder).items()
                            if not ledger.relative(e.folder, p).startswith('_')}
    names = ledger.day_names(e, dt) if flat else None
    if flat and names is None:
      f.notes.append(f'{fs.redact(e.folder)}: day {dt} shares the folder and the lake holds no '
                     'record of its export\'s layout: extra files not looked for')
    check_files(f, e.folder, m, listings[e.folder], owns_folder=not flat,
                day_names=(dt, names) if names else None)
    lake_day = manifests.get(dt)
    if lake_day is None:
      f.differ(e.folder, f'exported from lake run {e.lake_run_id}, but the lake day is not '
               'published')
    elif lake_day.run_id != e.lake_run_id:
      f.differ(e.folder, f'exported from lake run {e.lake_run_id}; the lake day was committed again '
               f'since ({lake_day.pipeline} run {lake_day.run_id}): export it again')
    elif e.whole_day is False:
      f.notes.append(f'{fs.redact(e.folder)}: a filtered export: rows not compared')
    elif m.rows != lake_day.rows:
      f.differ(e.folder, f'{m.rows:,} rows, its lake day holds {lake_day.rows:,} '
               f'({lake_day.rows - m.rows:+,})')
    elif f.deep:
      compare_ids(f, lake, dt, e, m, lake_day)


def compare_ids(f: Findings, lake: ledger.Lake, dt: str, e: ledger.ExportDay, m: Manifest,
                lake_day: Manifest) -> None:
  ids = read_ids(f, [fs.join(e.folder, x.name) for x in m.files], e.format or 'parquet', e.flags)
  lake_ids = read_ids(f, [lake.file_path(dt, x.name) for x in lake_day.files], 'parquet')
  if ids is None or lake_ids is None:
    return
  if ledger.ids_digest(ids) != ledger.ids_digest(lake_ids):
    f.differ(e.folder, f'its insert_ids differ from its lake day\'s ({len(set(lake_ids) - set(ids)):,} '
             f'missing, {len(set(ids) - set(lake_ids)):,} not in the lake day)')


def read_ids(f: Findings, paths: list[str], fmt: str,
             flags: dict | None = None) -> list[str | None] | None:
  """The insert_ids of the files; None (and a mismatch naming the file) when one is unreadable."""
  ids: list[str | None] = []
  for path in paths:
    try:
      ids += ledger.insert_ids(path, fmt, flags)
    except (OSError, ValueError, KeyError, IndexError, fs.Unreadable) as err:
      f.differ(path, f'its insert_ids cannot be read as {fmt} ({str(err).splitlines()[0]})')
      return None
  return ids


def reconcile(o) -> Findings:
  f = Findings(deep=o.deep)
  lake = status.lake_of(o)
  found = lake.days() + lake.days(rejected=True)
  exported = {dest: status.exports_of(lake, dest) for dest in o.dest}
  days = status.chosen_days(o, found + [dt for e in exported.values() for dt in e])
  manifests = check_lake(f, lake, days)
  for dest in o.dest:
    check_dest(f, lake, dest, exported[dest], days, manifests)
  f.mismatches += lake.problems
  return f


def run(argv: list[str]) -> int:
  p = status.parser('./run.sh reconcile', __doc__)
  p.add_argument('--deep', action='store_true',
                 help='also read every byte: sha256 of each file, insert_ids of exported days')
  o = status.parse(p, argv)
  start = time.monotonic()
  f = reconcile(o)
  for line in f.mismatches:
    print(f'MISMATCH {line}')
  for line in f.notes:
    print(f'note: {line}')
  how = 'deep: every byte' if f.deep else 'listings, manifests and footers'
  print(f'reconciled {f.days} days ({f.files} files, {how}) in {time.monotonic() - start:.1f}s: '
        + (f'{len(f.mismatches)} mismatches' if f.mismatches else 'everything matches its manifest'))
  if f.mismatches:   # on stderr too, for logs, alerts and --notify_url
    logs.LOG.error(f'{len(f.mismatches)} mismatches with the manifests; the first: '
                   f'{f.mismatches[0]}')
  return 1 if f.mismatches else 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
