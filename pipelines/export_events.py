"""Export: lake days -> a customer's destination in the seed 000 schema, as Parquet, JSON lines,
CSV, Avro or XML, partitioned by day, with a manifest and `_SUCCESS` last.

Local:
  ./run.sh export --lake ./lake --date 2023-01-01 --dest ./export [--format parquet]
  ./run.sh export --spec exports/acme.yaml --from_date 2023-01-01 --to_date 2023-01-31
Dataflow:
  python -m pipelines.export_events --lake gs://acme-lake/events --date 2023-01-01 \\
    --dest gs://customer/hackle-export --runner DataflowRunner --project P --region R \\
    --temp_location gs://acme-lake/tmp --setup_file ./setup.py

Each committed lake file of a day (as its `_manifest.json` lists them) becomes one export file
DEST/dt=DAY/part-NNNNN-of-NNNNN.EXT, written to staging and committed like the lake: old files of
the day are removed, `_manifest.json` then `_SUCCESS` are written last. A day with no rows to
export gets a zero-file manifest and `_SUCCESS`, so "no data" differs from "not exported yet".
"""
import datetime
import json
import re
import sys
import time

import apache_beam as beam
import pyarrow.compute as pc
import pydantic
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import options as opts
from pipelines import logs, runs
from schemas.export import ID_PATTERN, ExportSpec
from schemas.reports import ExportDay, ExportReport
from transforms.export import AVRO_CODECS, PARQUET_CODECS, TEXT_CODECS, Format
from transforms.export_days import (CommitExportDays, ExportPlan, RecordExport, StageExportFiles,
                                    dest_folder, marker, target_of)
from transforms.lake import history, iceberg, iceberg_export, locks
from transforms.lake.commit import clear_dead_staging
from transforms.lake.layout import PRESETS, Layout, LayoutError, day_values
from transforms.lake.names import EXPORT_RUNS_DIR, MANIFEST, STAGING_DIR, STATE_DIR, SUCCESS
from transforms.read import SourceError
from transforms.stores import fs
from transforms.stores.fs import partition_dir

__all__ = ['FORMATS', 'ExportOptions', 'fmt_of', 'iceberg_dest', 'lake_manifest', 'since_last', 'unmatched_events',
           'committed_days', 'REQUIRED', 'ID_EXAMPLES', 'CLEVERTAP_MAX_BYTES', 'exported', 'plan',
           'export_minute', 'day_folder', 'check_lake_outside', 'layout_ids', 'build',
           'apply_spec', 'lock_days', 'claim_folders', 'execute', 'report_path', 'run']

FORMATS = ('parquet', 'jsonl', 'csv', 'avro', 'xml', 'iceberg')
ICEBERG_FILES = Format('parquet', 'zstd')   # --format iceberg: the table's data files
# Flags that shape export files or folders: --format iceberg writes the table's own files.
ICEBERG_REFUSED = ('compression', 'partition_template', 'file_template', 'request_id',
                   'database_id')


class ExportOptions(PipelineOptions):
  """Export lake days to a customer's destination in the seed 000 schema."""
  FLAG_GROUPS = (iceberg.IcebergOptions,)   # shown in --help beside these

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--spec', default=None,
                        help='YAML job spec (exports/acme.yaml); flags given here override it')
    opts.add_shared(parser, '--lake', help='lake root to export from')
    opts.add_shared(parser, '--dest', help='destination root; days land in DEST/dt=YYYY-MM-DD/ '
                    '(with --format iceberg: the warehouse of the customer\'s catalog)')
    opts.add_date_args(parser, 'export')
    parser.add_argument('--format', default='parquet', help=f'one of {", ".join(FORMATS)}')
    parser.add_argument('--dest_catalog', default=None,
                        help='with --format iceberg: the customer\'s Iceberg catalog, '
                        'sqlite:///PATH, postgresql://USER@HOST/DB, glue or an http(s):// REST URL')
    parser.add_argument('--dest_table', default=None,
                        help=f'with --format iceberg: NAMESPACE.NAME (default {iceberg.DEFAULT_TABLE})'
                        ', created on first use')
    parser.add_argument('--dest_catalog_endpoint', default=None,
                        help='endpoint of the glue --dest_catalog (default: AWS; tests: the emulator)')
    parser.add_argument('--compression', default=None,
                        help=f'parquet: {"|".join(PARQUET_CODECS)} (default snappy); avro: '
                        f'{"|".join(AVRO_CODECS)} (default null); jsonl/csv/xml: '
                        f'{"|".join(TEXT_CODECS)} (default none)')
    parser.add_argument('--csv_delimiter', default=',', help="CSV field delimiter, e.g. '|'")
    parser.add_argument('--csv_header', default='true', help='CSV header line: true or false')
    parser.add_argument('--events', default='', help='only these event keys, comma-separated')
    parser.add_argument('--exclude_events', default='', help='all but these event keys')
    opts.add_shared(parser, '--environment', default=None,
                    help='only this environment (default all)')
    parser.add_argument('--layout', default='hive', help=f'one of {", ".join(PRESETS)} (see README)')
    parser.add_argument('--partition_template', default=None,
                        help="per-day folder, e.g. 'events/dt={dt}' (overrides --layout's)")
    parser.add_argument('--file_template', default=None,
                        help="file name in it, e.g. '{event}-{yyyymmdd}-{index}.{ext}'")
    parser.add_argument('--dataset_id', default='events', help='{dataset} in templates (Adobe)')
    parser.add_argument('--request_id', default=None,
                        help='{request_id} in templates: the export request id that starts '
                        "CleverTap's file names (--layout clevertap needs it)")
    parser.add_argument('--database_id', default=None,
                        help="{database_id} in templates: the database id that ends CleverTap's "
                        'file names (--layout clevertap needs it)')
    parser.add_argument('--export_time', default=None,
                        help="{export_time} as YYYYMMDDHHMM (default: now): deliver a day again "
                        "into the Adobe exportTime= folder it was delivered to (forget does)")
    parser.add_argument('--kind', default='events',
                        help='events (default), or profiles: the latest user_properties per user '
                        '(user_id, else id) as of --date')
    parser.add_argument('--profile_days', type=int, default=30,
                        help='with --kind profiles: lake days up to --date that are read')
    opts.add_shared(parser, '--max_rows_per_file', type=int, default=None,
                    help='split files above this many rows (names get -CCC chunk numbers)')
    parser.add_argument('--max_file_bytes', default=None,
                        help='split files above this size: bytes, or e.g. 100MB, 100MiB, 1.5GB '
                        '(CleverTap: 100MiB, the default with --layout clevertap)')
    parser.add_argument('--max_range_days', type=int, default=60,
                        help='refuse date ranges longer than this (default 60, as CleverTap)')
    opts.add_switch(parser, '--since_last_export',
                    help='only days whose lake commit is newer than their last export here '
                    '(all committed lake days when no date is given); from an Iceberg lake, '
                    'only the rows of files the day gained since the snapshot last exported')
    parser.add_argument('--state', default=None,
                        help='where export history and locks live (default: DEST/_eventferry)')
    opts.add_run_args(parser)


def _csv_list(value: str) -> list[str]:
  return [v.strip() for v in value.split(',') if v.strip()]


def fmt_of(o: ExportOptions) -> Format:
  if o.format not in FORMATS:
    raise opts.UsageError(f'--format {o.format!r} is not one of {", ".join(FORMATS)}')
  if o.format == 'iceberg':
    return ICEBERG_FILES
  codecs = {'parquet': PARQUET_CODECS, 'avro': AVRO_CODECS}.get(o.format, TEXT_CODECS)
  gzip_names = o.layout == 'clevertap' and codecs == TEXT_CODECS   # <...>.<format>.gz
  compression = o.compression or ('gzip' if gzip_names else codecs[0])
  if compression not in codecs:
    raise opts.UsageError(f'--compression {compression!r} does not apply to {o.format}: '
                          f'use one of {", ".join(codecs)}')
  delimiter = o.csv_delimiter
  usable = len(delimiter) == 1 and delimiter.isascii() and (delimiter.isprintable()
                                                            or delimiter == '\t')
  if not usable or delimiter == '"':   # the quote, CR and LF frame the fields themselves
    raise opts.UsageError(f'--csv_delimiter {delimiter!r} cannot separate CSV fields: use one '
                          'printable ASCII character other than the quote ("), or a tab')
  if o.csv_header not in ('true', 'false'):
    raise opts.UsageError(f'--csv_header {o.csv_header!r}: use true or false')
  return Format(o.format, compression, delimiter, o.csv_header == 'true')


def iceberg_dest(o: ExportOptions, lake: str | iceberg.IcebergLake) -> iceberg.IcebergLake | None:
  """With --format iceberg, the customer's table (--dest_catalog, --dest_table; --dest is the
  warehouse); checks the flags that go with it."""
  if o.format != 'iceberg':
    if o.dest_catalog:
      raise opts.UsageError('--dest_catalog is the catalog of --format iceberg: add --format '
                            'iceberg, or drop --dest_catalog')
    return None
  if not o.dest_catalog:
    raise opts.UsageError('--format iceberg needs --dest_catalog, the customer\'s catalog: e.g. '
                          '--dest_catalog glue (or sqlite:///PATH, postgresql://USER@HOST/DB, '
                          'an http(s):// REST catalog URL)')
  name = o.dest_table or iceberg.DEFAULT_TABLE
  problem = (iceberg.catalog_problem('--dest_catalog', o.dest_catalog)
             or iceberg.table_problem('--dest_table', name))
  if problem:
    raise opts.UsageError(problem)
  given = [f'--{flag}' for flag in ICEBERG_REFUSED if getattr(o, flag) is not None]
  given += ['--layout'] if o.layout != 'hive' else []
  given += ['--csv_delimiter'] if o.csv_delimiter != ',' else []
  given += ['--csv_header'] if o.csv_header != 'true' else []
  given += ['--kind'] if o.kind != 'events' else []
  if given:
    raise opts.UsageError(f'{", ".join(given)} cannot apply to --format iceberg (the table gets '
                          'its own zstd Parquet files, partitioned by day, of events): drop '
                          f'{"it" if len(given) == 1 else "them"}')
  dest = iceberg.at(o, o.dest, o.dest_catalog, name, o.dest_catalog_endpoint)
  if isinstance(lake, iceberg.IcebergLake) and (lake.catalog, lake.table) == (dest.catalog,
                                                                              dest.table):
    raise opts.UsageError(f'--dest_table {dest.table} in --dest_catalog is the lake\'s own table: '
                          'name the customer\'s table with --dest_table')
  return dest


def lake_manifest(lake: str | iceberg.IcebergLake, day: datetime.date) -> dict:
  if isinstance(lake, iceberg.IcebergLake):
    manifest = iceberg.day_manifest(lake, day.isoformat())
    if manifest is None:
      raise SourceError(f'{lake.table} has no committed day {day}: import the day first, e.g. '
                        f'./run.sh import --date {day} --lake_format iceberg --catalog ... '
                        '--source ...')
    return manifest
  directory = partition_dir(lake, day.isoformat())
  if not fs.exists(fs.join(directory, SUCCESS)):
    raise SourceError(f'{directory} is not a committed lake day (no {SUCCESS}): import the day '
                      f'first, e.g. ./run.sh import --date {day} --lake {lake} --source ...')
  manifest = json.loads(fs.read_bytes(fs.join(directory, MANIFEST)))
  manifest['files'] = [fs.join(directory, f['name']) for f in manifest['files']]
  return manifest


def unmatched_events(events: list[str], files: dict[str, list[str]]) -> list[str]:
  """A line per day where names of --events match no event of the day, listing the day's event
  names (only the lake files' event_key column is read, and only when --events is given)."""
  out = []
  for dt, paths in files.items() if events else ():
    have = set()
    for path in paths:
      have.update(pc.unique(fs.read_parquet(path, ['event_key'])['event_key']).to_pylist())
    missing = [e for e in events if e not in have]
    if missing:
      names = sorted(n for n in have if n is not None)
      out.append(f'dt={dt}: --events {", ".join(missing)} matched no event of the day, so '
                 f'nothing of {"it" if len(missing) == 1 else "them"} is exported (the day has '
                 f'{len(names)} event names: {", ".join(names[:20])}'
                 f'{", ..." if len(names) > 20 else ""})')
  return out


def committed_days(lake: str | iceberg.IcebergLake) -> list[datetime.date]:
  if isinstance(lake, iceberg.IcebergLake):
    return iceberg_export.committed_days(lake)
  pattern = fs.join(lake, 'dt=*', SUCCESS)
  found = FileSystems.match([pattern])[0].metadata_list
  return sorted(datetime.date.fromisoformat(m.path.split('dt=')[-1].split('/')[0]) for m in found)


REQUIRED = {'lake': './lake', 'dest': 's3://customer-bucket/export'}   # flag -> example
ID_EXAMPLES = {'request_id': '1700000000123', 'database_id': 'W8R-6K4-5W7Z'}
CLEVERTAP_MAX_BYTES = 100 * 2**20   # CleverTap's 100 MB chunks
# The flags that shape what a day's delivery holds: recorded with it, so forget can redo it.
REDO_FLAGS = ('format', 'compression', 'csv_delimiter', 'csv_header', 'events', 'exclude_events',
              'environment', 'layout', 'partition_template', 'file_template', 'dataset_id',
              'request_id', 'database_id', 'kind', 'profile_days', 'max_rows_per_file',
              'max_file_bytes', 'state')
ICEBERG_REDO_FLAGS = ('dest_catalog', 'dest_table', 'dest_catalog_endpoint')


def exported(o: ExportOptions, day: datetime.date) -> tuple[bool, str]:
  """(True, why) when the destination holds the day exported from its current lake commit, else
  (False, why it must run); SourceError when the lake day is not committed."""
  manifest = lake_manifest(_lake(o), day)
  last = history.load(o.state or o.dest).get(day.isoformat())
  if last is None:
    return False, 'not exported to this destination yet'
  if history.changed_since_export({day.isoformat(): last}, day.isoformat(), manifest):
    return False, (f'the lake day was committed again ({manifest.get("pipeline", "import")} run '
                   f'{manifest["run_id"]}) since its last export')
  success = last.get('success') or fs.join(last['dest'], SUCCESS)
  if not fs.exists(success):
    return False, f'{success} is missing'
  return True, f'complete: export run {last["export_run_id"]} from lake run {last["lake_run_id"]}'


def _lake(o: ExportOptions) -> str | iceberg.IcebergLake:
  """--lake, or with --lake_format iceberg the Iceberg lake it is the warehouse of."""
  ice = o.view_as(iceberg.IcebergOptions)
  problem = iceberg.check(ice)
  if problem:
    raise opts.UsageError(problem)
  if ice.lake_format != 'iceberg':
    return o.lake
  return iceberg.from_options(o, o.lake)


def plan(o: ExportOptions, days: list[datetime.date] | None = None) -> ExportPlan:
  """Plans the options' days, or the given ones."""
  opts.require(o, REQUIRED)
  for flag in ('dest', 'state'):
    if getattr(o, flag) and opts.lies_inside(getattr(o, flag), o.lake):
      raise opts.UsageError(f'--{flag} {getattr(o, flag)} lies inside --lake {o.lake}: the export '
                            'would overwrite the lake\'s own files; export to a location outside '
                            'the lake')
  fmt = fmt_of(o)
  if o.max_rows_per_file is not None and o.max_rows_per_file < 1:
    raise opts.UsageError('--max_rows_per_file must be a positive number')
  max_bytes = opts.parse_size('--max_file_bytes', o.max_file_bytes)
  events, exclude = _csv_list(o.events), _csv_list(o.exclude_events)
  if events and exclude:
    raise opts.UsageError('give --events or --exclude_events, not both')
  try:
    layout = Layout.of(o.layout, o.partition_template, o.file_template)
  except LayoutError as e:
    raise opts.UsageError(str(e)) from None
  if o.kind not in ('events', 'profiles'):
    raise opts.UsageError(f'--kind {o.kind!r}: use events or profiles')
  if o.kind == 'profiles' and (o.from_date or o.since_last_export or o.format in ('avro', 'xml')
                               or layout.by_hour or layout.by_event):
    raise opts.UsageError('--kind profiles exports one --date as parquet, jsonl or csv '
                          '(no ranges, --since_last_export, avro, xml or {hh}/{event} file names '
                          'yet)')
  dated = o.date or o.from_date or o.to_date or days
  lake = _lake(o)
  dest = iceberg_dest(o, lake)
  if days is None:
    days = (committed_days(lake) if o.since_last_export and not dated else opts.date_range(o))
  if dated and len(days) > o.max_range_days:
    raise opts.UsageError(f'--from_date..--to_date spans {len(days)} days, more than '
                          f'--max_range_days {o.max_range_days}: split the range or raise the limit')
  manifests = {day.isoformat(): lake_manifest(lake, day) for day in days}
  state = o.state or o.dest
  appends: dict[str, int] = {}
  if o.since_last_export:
    manifests, appends = since_last(lake, history.load(state), manifests, layout,
                                    (fmt.name, dest.table if dest else None))
  if len(manifests) > 1 and not layout.per_day:   # name the flag the user gave, not a default
    if o.partition_template:
      raise opts.UsageError(f'--partition_template {layout.partition!r} has no {{dt}}: export '
                            'one day per run, or add {dt} to the template')
    raise opts.UsageError(f'--layout {o.layout} puts a run\'s days in one folder '
                          f'({layout.partition}): export one day per run (--date, or '
                          f'./run.sh backfill export for a range)')
  if o.kind == 'profiles':
    as_of = days[0]
    for back in range(1, o.profile_days):
      try:
        earlier = lake_manifest(lake, as_of - datetime.timedelta(days=back))
      except SourceError:
        continue   # a day that was never imported holds no profiles
      manifests[as_of.isoformat()]['files'] += earlier['files']
  ids = layout_ids(o, layout)
  warnings = unmatched_events(events, {dt: m['files'] for dt, m in manifests.items()})
  for warning in warnings:
    logs.LOG.warning(warning)
  max_bytes = max_bytes or (CLEVERTAP_MAX_BYTES if o.layout == 'clevertap' else None)
  export_time = export_minute()
  if o.export_time is not None:
    if not re.fullmatch(r'\d{12}', o.export_time):
      raise opts.UsageError(f'--export_time {o.export_time!r}: use YYYYMMDDHHMM, e.g. '
                            '--export_time 202301020304')
    export_time = o.export_time
  run_id = o.run_id or opts.new_run_id()
  table = None
  if dest is not None:
    try:
      table = iceberg_export.dest_table(dest)
    except iceberg_export.TableMismatch as e:
      raise opts.UsageError(str(e)) from None
  p = ExportPlan(run_id, o.lake, o.dest, fmt, events, exclude,
                 o.environment, {dt: m['files'] for dt, m in manifests.items()},
                 {dt: {'lake_run_id': m['run_id'], 'lake_committed_at': m['committed_at'],
                       'lake_rows': m['rows'], 'lake_snapshot_id': m.get('snapshot_id')}
                  for dt, m in manifests.items()},
                 o.max_rows_per_file, max_bytes, o.kind, state, layout, o.dataset_id,
                 export_time, ids, warnings, break_lock=o.break_lock, flags=redo_flags(o),
                 delivered_to=opts.normal_path(o.dest), appends=appends, iceberg_dest=dest,
                 dest_root=iceberg.data_root(table, run_id) if table is not None else '',
                 dest_schema=iceberg.file_schema(table) if table is not None else None)
  check_lake_outside(p)
  return p


def since_last(lake: str | iceberg.IcebergLake, done: dict, manifests: dict[str, dict],
               layout: Layout, into: tuple[str, str | None]) -> tuple[dict[str, dict], dict[str, int]]:
  """The days --since_last_export exports, and of those the days that only gained files since
  their last export (dt -> how many lake files that export read): for them the manifest lists
  only the new files, whose rows are added to the day's export. A Hive lake day is exported
  whole when its commit is newer than the one exported; an Iceberg lake day when its files
  differ from those of the snapshot last exported, and only its new files when they are a
  superset and the last export can take more files (same format, a per-day folder whose file
  names number the lake files). `into`: the export's file format and Iceberg table (or None)."""
  if not isinstance(lake, iceberg.IcebergLake):
    return {dt: m for dt, m in manifests.items() if history.changed_since_export(done, dt, m)}, {}
  addable = (not layout.flat and not layout.run_scoped and layout.uses('index')
             and layout.uses('count'))
  chosen, appends = {}, {}
  for dt, m in manifests.items():
    last = done.get(dt) or {}
    change = iceberg_export.change_since(lake, dt, last.get('lake_snapshot_id'), m['files'])
    if change.kind == 'same':
      continue
    if (change.kind == 'added' and addable and (last.get('format'), last.get('dest_table')) == into
        and fs.exists(last.get('success') or fs.join(last['dest'], SUCCESS))):
      m = {**m, 'files': change.files}
      appends[dt] = change.exported
    chosen[dt] = m
  return chosen, appends


def export_minute() -> str:
  """{export_time} of a run that starts now: the minute, UTC, YYYYMMDDHHMM."""
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d%H%M')


def day_folder(o: ExportOptions, layout: Layout, dt: str, run_id: str, export_time: str) -> str:
  """Where run `run_id`, started at `export_time`, exports day `dt` (the plan's target_of)."""
  return dest_folder(o.dest, layout, day_values(dt, o.dataset_id, layout_ids(o, layout), run_id,
                                                export_time))


def redo_flags(o: ExportOptions) -> dict:
  names = REDO_FLAGS + (ICEBERG_REDO_FLAGS if o.format == 'iceberg' else ())
  flags = {f: getattr(o, f) for f in names if getattr(o, f) not in (None, '')}
  if 'dest_catalog' in flags and iceberg.redacted(flags['dest_catalog']) != flags['dest_catalog']:
    del flags['dest_catalog']   # a password is never recorded: forget is then given --dest_catalog
  if 'state' in flags:
    flags['state'] = opts.normal_path(flags['state'])
  return flags


def check_lake_outside(p: ExportPlan) -> None:
  """A lake inside --dest is fine unless it lies in a folder the export replaces (a day's
  folder: its commit deletes what else the folder holds), stages in or keeps its state in."""
  owned = [fs.join(p.dest, STAGING_DIR), fs.join(p.state, STATE_DIR)]
  if not p.layout.flat:
    owned += [target_of(p, dt) for dt in p.files]
  for folder in owned:
    if opts.lies_inside(p.lake, folder):
      raise opts.UsageError(f'--lake {p.lake} lies inside {folder}, which the export to --dest '
                            f'{p.dest} replaces: export to a location that does not hold the lake')


def layout_ids(o: ExportOptions, layout: Layout) -> dict[str, str]:
  """--request_id and --database_id as given: checked, and required when the layout names them."""
  ids = {}
  for flag in ('request_id', 'database_id'):
    value = getattr(o, flag)
    if value is None and layout.uses(flag):
      raise opts.UsageError(f'--layout {o.layout} names files with {{{flag}}}: give --{flag}, '
                            f'e.g. --{flag} {ID_EXAMPLES[flag]}')
    if value is not None and not re.fullmatch(ID_PATTERN, value):
      raise opts.UsageError(f'--{flag} {value!r}: use 1 to 64 letters, digits, "_" or "-", '
                            f'starting with a letter or digit, e.g. --{flag} {ID_EXAMPLES[flag]}')
    if value is not None:
      ids[flag] = value
  return ids


def build(pipeline: beam.Pipeline, p: ExportPlan) -> beam.PCollection:
  """Stages the export files of the plan's days, commits each day, records the export."""
  staged = pipeline | 'ExportFiles' >> StageExportFiles(p)
  committed = staged | 'CommitExportDay' >> CommitExportDays(p)
  _ = committed | 'RecordExport' >> RecordExport(p)
  return committed


def apply_spec(o: ExportOptions, argv: list[str]) -> None:
  """Fills the options the command line did not give from the --spec file."""
  if not o.spec:
    return
  try:
    raw = yaml.safe_load(fs.read_bytes(o.spec)) or {}
    spec = ExportSpec.model_validate(raw)
  except (OSError, yaml.YAMLError) as e:
    raise opts.UsageError(f'--spec {o.spec}: cannot read it as YAML ({e})') from None
  except pydantic.ValidationError as e:
    problems = '; '.join(f"field '{'.'.join(map(str, err['loc']))}': {err['msg']}"
                         for err in e.errors())
    raise opts.UsageError(f'--spec {o.spec}: {problems}. Fix the file; `./run.sh export --help` '
                          'explains each field (fields are the flag names)') from None
  given = {a[2:].split('=')[0] for a in argv if a.startswith('--')}
  for name, value in spec.model_dump().items():
    if name in given:
      continue
    if isinstance(value, list):
      value = ','.join(value)
    elif isinstance(value, bool):
      value = str(value).lower()
    setattr(o, name, value)


def lock_days(p: ExportPlan) -> None:
  """Takes every day's lock into p.locks, or none (LockedError names the held one); then, as
  the only run of those days, removes what dead runs staged for them and claims their folders."""
  p.locks = locks.acquire_all(p.state, sorted({p.layout.unit(p.day_values(dt)) for dt in p.files}),
                              p.run_id, 'export of {} to this destination', p.break_lock)
  try:
    clear_dead_staging(fs.join(p.dest, STAGING_DIR), p.run_id, {p.unit(dt) for dt in p.files})
    if p.layout.run_scoped:
      claim_folders(p)
  except BaseException:
    locks.release(p.locks, p.run_id)
    raise


def claim_folders(p: ExportPlan) -> None:
  """Each day's folder of a run-scoped layout: the run's minute, or the next minute whose folder
  no other day holds (so days exported within one minute never share a folder); and the folders
  earlier runs of the day claimed, for the commit to replace."""
  for dt in p.files:
    owner = fs.join(p.dest, p.unit(dt))   # this day of this dataset at this destination
    minute = datetime.datetime.strptime(p.export_time, '%Y%m%d%H%M')
    while True:
      p.export_times[dt] = minute.strftime('%Y%m%d%H%M')
      folder = target_of(p, dt)
      if history.claim(p.state, folder, owner, p.run_id):
        break
      minute += datetime.timedelta(minutes=1)
    p.replaces[dt] = [f for f in history.claimed(p.state, owner) if f != folder]


def execute(options: PipelineOptions, p: ExportPlan) -> ExportReport | None:
  """Runs the planned job (after lock_days) and writes its report; None when the job was only
  handed over (opts.handed_over). If the job fails, the caller releases the locks."""
  started_at = datetime.datetime.now(datetime.timezone.utc)
  start = time.monotonic()
  with opts.progress_shown(options, 'export',
                           sum(c['lake_rows'] for c in p.lake_commits.values())):
    result = opts.run_job(options, lambda pipeline: build(pipeline, p), p.locks)
  if result is None:
    return None
  days = []
  for dt in p.files:
    m = json.loads(fs.read_bytes(marker(p, dt, 0)))
    added = m.get('rows_added')   # rows added to the day's export: the manifest lists them all
    days.append(ExportDay(dt=dt, rows=m['rows'] if added is None else added, files=len(m['files']),
                          bytes=m['bytes'], partition=m['partition'],
                          snapshot_id=m.get('snapshot_id'), appended=added is not None))
  report = ExportReport(run_id=p.run_id, lake=p.lake, dest=p.dest,
                        format=f'{p.format_name}/{p.fmt.compression}', started_at=started_at,
                        seconds=round(time.monotonic() - start, 3),
                        metrics=logs.counters(result), days=days, warnings=p.warnings)
  fs.write_bytes(report_path(p.state, p.run_id), report.model_dump_json(indent=2).encode())
  return report


def report_path(state: str, run_id: str) -> str:
  return fs.join(state, STATE_DIR, EXPORT_RUNS_DIR, f'{run_id}.json')


def run(argv: list[str]) -> int:
  options = opts.parse(ExportOptions, argv, './run.sh export')
  fs.configure(options)
  apply_spec(options.view_as(ExportOptions), argv)
  p = plan(options.view_as(ExportOptions))   # a SourceError or LockedError is told by main_guard
  if not p.files:
    print('nothing to export: every chosen lake day was exported since its last import')
    return 0
  done = runs.locked(p, lock_days, lambda: execute(options, p))
  if done is None:
    print(f'export job {p.run_id} handed over to {options.view_as(StandardOptions).runner}')
    return 0
  o = options.view_as(ExportOptions)
  if o.report:
    fs.write_bytes(o.report, done.model_dump_json(indent=2).encode())
  print(f'eventferry export run {p.run_id}: {p.lake} -> {p.dest} ({done.format})')
  for d in done.days:
    print(f'{d.dt}  {d.rows:>10,} rows  {d.files:>4} files  {d.bytes / 2**20:>8.1f} MiB  '
          f'-> {d.partition}/' + (' (added to the day)' if d.appended else '')
          + (f'  {p.iceberg_dest.table} snapshot {d.snapshot_id}' if p.iceberg_dest else ''))
  total = sum(d.rows for d in done.days)
  rate = total / done.seconds if done.seconds else 0
  print(f'{total:,} rows in {done.seconds:.1f}s ({rate:,.0f} rows/s). Report: '
        f'{report_path(p.state, p.run_id)}')
  return 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
