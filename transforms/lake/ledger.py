"""What a lake and its destinations say about themselves, read back for operators (status,
reconcile, report): run reports, day manifests, export history. Nothing here writes.

Every read goes through transforms/stores/fs.py, so a lake or destination on s3://, gs://, azfs://
or sftp:// reads the same as one on local disk. One listing per root, then one GET per manifest
and per run report; no data file is opened here.
"""
import csv
import dataclasses
import datetime
import hashlib
import io
import json
import posixpath
import re
import typing
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pydantic

from schemas.export import EXPORT_SCHEMA
from schemas.reports import DayReport, ExportReport, Manifest, ManifestFile, RunReport
from transforms.lake import history, iceberg
from transforms.lake.layout import Layout, LayoutError, day_values
from transforms.stores import fs
from transforms.lake.names import (EXPORT_RUNS_DIR, MANIFEST, REJECTED_DIR, RUNS_DIR, STATE_DIR,
                                   SUCCESS, day_markers)

__all__ = ['BLOCK', 'EPOCH', 'ImportDay', 'ExportDay', 'relative', 'day_of', 'Lake', 'TableLake',
           'run_report_path', 'exports', 'footer_rows', 'all_rows', 'sha256', 'insert_ids', 'ids_digest']

BLOCK = 4 * 2**20
EPOCH = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass
class ImportDay:
  """The latest import (or ingest) run's word on a day."""
  run_id: str
  pipeline: str
  started_at: datetime.datetime
  finished_at: datetime.datetime | None
  day: DayReport


@dataclasses.dataclass
class ExportDay:
  """A day's last export to one destination, as its history and run report record it."""
  run_id: str
  exported_at: str
  lake_run_id: str
  folder: str         # the day's folder at the destination
  manifest: str       # its manifest's path
  success: str        # its _SUCCESS path
  rows: int | None    # from the export run report
  format: str | None  # parquet, jsonl, ... (None: exported before the history recorded it)
  whole_day: bool | None   # every row of the lake day (no --events, --environment, profiles)
  flags: dict | None = None   # the export's flags, from the lake's record of the delivery


def relative(root: str, path: str) -> str:
  return path[len(root.rstrip('/')) + 1:] if path.startswith(root.rstrip('/') + '/') else path


def day_of(part: str) -> str | None:
  """'dt=2023-01-01' -> '2023-01-01'; anything else -> None."""
  if not part.startswith('dt='):
    return None
  try:
    return datetime.date.fromisoformat(part[3:]).isoformat()
  except ValueError:
    return None


class Lake:
  """One listing of LAKE, and what it holds: committed days, their manifests, run reports."""

  def __init__(self, root: str):
    self.root = root
    self.files = fs.list_files(root)   # path -> bytes
    self.problems: list[str] = []           # reports or manifests that cannot be read
    self._deliveries: list[dict] | None = None

  def paths_under(self, *parts: str) -> dict[str, int]:
    folder = fs.join(self.root, *parts).rstrip('/') + '/'
    return {p: n for p, n in self.files.items() if p.startswith(folder)}

  def days(self, rejected: bool = False) -> list[str]:
    """Days with a folder in the lake (or in its _rejected/), sorted."""
    found = set()
    for path in self.files:
      parts = relative(self.root, path).split('/')
      if rejected and parts[0] == REJECTED_DIR and len(parts) > 2:
        parts = parts[1:]
      elif rejected or len(parts) < 2:
        continue
      dt = day_of(parts[0])
      if dt:
        found.add(dt)
    return sorted(found)

  def day_dir(self, dt: str, rejected: bool = False) -> str:
    root = fs.join(self.root, REJECTED_DIR) if rejected else self.root
    return fs.partition_dir(root, dt)

  def published(self, dt: str) -> bool:
    return fs.join(self.day_dir(dt), SUCCESS) in self.files

  def manifest_path(self, dt: str, rejected: bool = False) -> str:
    """Where the day's manifest is, as messages name it."""
    return fs.join(self.day_dir(dt, rejected), MANIFEST)

  def file_path(self, dt: str, name: str, rejected: bool = False) -> str:
    """The path of a file the day's manifest lists by `name`."""
    return fs.join(self.day_dir(dt, rejected), name)

  def manifest(self, dt: str, rejected: bool = False) -> Manifest | None:
    path = fs.join(self.day_dir(dt, rejected), MANIFEST)
    return self._load(path, Manifest) if path in self.files else None

  def _load(self, path: str, model):
    try:
      return model.model_validate_json(fs.read_bytes(path))
    except (ValueError, pydantic.ValidationError) as e:
      self.problems.append(f'{path}: cannot be read ({str(e).splitlines()[0]})')
      return None

  def runs(self) -> list[RunReport]:
    """Import run reports (LAKE/_runs/RUN.json) and ingest's (LAKE/_runs/ingest-RUN/dt=D.json,
    one per day, gathered into one report per run), oldest first."""
    reports: list[RunReport] = []
    ingest: dict[str, list[DayReport]] = {}
    for path in sorted(self.paths_under(RUNS_DIR)):
      parts = relative(fs.join(self.root, RUNS_DIR), path).split('/')
      if len(parts) == 1 and parts[0].endswith('.json'):
        report = self._load(path, RunReport)
        if report:
          reports.append(report)
      elif len(parts) == 2 and parts[1].endswith('.json'):
        day = self._load(path, DayReport)
        if day:
          ingest.setdefault(parts[0].removeprefix('ingest-'), []).append(day)
    for run_id, days in ingest.items():
      committed = [m.committed_at for d in days if (m := self.manifest(d.dt)) and m.run_id == run_id]
      reports.append(RunReport(run_id=run_id, pipeline='ingest', source='', lake=self.root,
                               started_at=min(committed, default=EPOCH), days=days))
    return sorted(reports, key=lambda r: r.started_at)

  def imports(self) -> dict[str, ImportDay]:
    """dt -> the latest run's report of the day."""
    out = {}
    for r in self.runs():
      for d in r.days:
        out[d.dt] = ImportDay(r.run_id, r.pipeline, r.started_at, r.finished_at, d)
    return out


  def delivered(self, dest: str) -> dict[str, dict]:
    """dt -> the latest delivery of the day to `dest` that the lake recorded (history.deliveries;
    `dest` spelled as the export records --dest: normalised, without credentials)."""
    if self._deliveries is None:
      self._deliveries = history.deliveries(self.root)
    out: dict[str, dict] = {}
    for d in self._deliveries:
      if d['dest'] == dest and (d['dt'] not in out or out[d['dt']]['exported_at'] <= d['exported_at']):
        out[d['dt']] = d
    return out


class TableLake(Lake):
  """An Iceberg lake (--lake_format iceberg) read as a Lake: its days are the days whose commit
  the tables record, a day's manifest is what the table's current snapshot lists for it (files
  named relative to the warehouse; Iceberg keeps no checksum, so sha256 is empty), and run reports
  lie under WAREHOUSE/_runs as in a Hive lake. The tables are loaded once."""

  def __init__(self, tables: iceberg.IcebergLake):
    super().__init__(iceberg.store_path(tables.warehouse))
    self.tables = tables
    self._loaded = {name: iceberg.table(tables, name) for name in (tables.table, tables.rejected_table)}
    self._manifests: dict[tuple[str, bool], Manifest | None] = {}

  def _name(self, rejected: bool) -> str:
    return self.tables.rejected_table if rejected else self.tables.table

  def days(self, rejected: bool = False) -> list[str]:
    return iceberg.committed_days(self.tables, tbl=self._loaded[self._name(rejected)])

  def day_dir(self, dt: str, rejected: bool = False) -> str:
    return f'{self._name(rejected)}/{iceberg.DAY}={dt}'

  def manifest_path(self, dt: str, rejected: bool = False) -> str:
    return f'{self.day_dir(dt, rejected)} (the table\'s current snapshot)'

  def file_path(self, dt: str, name: str, rejected: bool = False) -> str:
    return fs.join(self.root, name)

  def published(self, dt: str) -> bool:
    return self.manifest(dt) is not None

  def manifest(self, dt: str, rejected: bool = False) -> Manifest | None:
    if (dt, rejected) not in self._manifests:
      self._manifests[dt, rejected] = self._read(dt, rejected)
    return self._manifests[dt, rejected]

  def _read(self, dt: str, rejected: bool) -> Manifest | None:
    name = self._name(rejected)
    record = iceberg.day_record(self._loaded[name], dt)
    if record is None or record.get('complete') is False:   # an ingest day still open: unpublished
      return None
    day = iceberg.day_manifest(self.tables, dt, name, self._loaded[name])
    if day is None:
      return None
    return Manifest(run_id=day['run_id'] or '', pipeline=day['pipeline'] or 'import',
                    source=day['source'] or '', partition=self.day_dir(dt, rejected),
                    committed_at=datetime.datetime.fromisoformat(day['committed_at']),
                    schema_fingerprint=day['schema_fingerprint'] or '', rows=day['rows'],
                    bytes=day['bytes'], source_fingerprint=day['source_fingerprint'] or '',
                    lake_snapshot_id=day['snapshot_id'], rows_forgotten=day['rows_forgotten'],
                    files=[ManifestFile(name=relative(self.root, path), rows=rows, bytes=size, sha256='')
                           for path, rows, size in day['entries']])


def run_report_path(lake: str, run_id: str) -> str:
  return fs.join(lake, RUNS_DIR, f'{run_id}.json')


def exports(dest: str, delivered: dict[str, dict] | None = None) -> dict[str, ExportDay]:
  """dt -> the day's last export to `dest`, from its history: kept at the destination, or where
  the lake's record of the deliveries (`delivered`: Lake.delivered) says an export run with
  --state kept it."""
  delivered = delivered or {}
  states = [dest] + [d['flags']['state'] for d in delivered.values() if d['flags'].get('state')]
  found: dict[str, ExportDay] = {}
  reports: dict[str, ExportReport | None] = {}
  for state in dict.fromkeys(states):
    for dt, h in history.load(state).items():
      if dt not in found or found[dt].exported_at < h['exported_at']:
        found[dt] = _export_day(dest, state, dt, h, reports, delivered.get(dt))
  return found


def _export_day(dest: str, state: str, dt: str, h: dict, reports: dict,
                delivery: dict | None) -> ExportDay:
  run_id = h['export_run_id']
  if run_id not in reports:
    path = fs.join(state, STATE_DIR, EXPORT_RUNS_DIR, f'{run_id}.json')
    reports[run_id] = (ExportReport.model_validate_json(fs.read_bytes(path))
                       if fs.exists(path) else None)
  report = reports[run_id]
  rows = next((d.rows for d in report.days if d.dt == dt), None) if report else None
  # The history names the folder as the export run spelled --dest; re-root it on `dest`.
  folder = h.get('dest', fs.partition_dir(dest, dt))
  if report and folder.startswith(report.dest.rstrip('/')):
    folder = fs.join(dest, folder[len(report.dest.rstrip('/')):].lstrip('/')) \
        if folder.rstrip('/') != report.dest.rstrip('/') else dest
  flat = posixpath.basename(h.get('success') or SUCCESS) != SUCCESS   # days side by side
  manifest_name, success_name = day_markers(dt.replace('-', '')) if flat else (MANIFEST, SUCCESS)
  flags = delivery['flags'] if delivery and delivery['run_id'] == run_id else None
  return ExportDay(run_id, h['exported_at'], h['lake_run_id'], folder,
                   fs.join(folder, manifest_name), fs.join(folder, success_name),
                   rows, h.get('format'), h.get('whole_day'), flags)


def day_names(e: ExportDay, dt: str) -> re.Pattern | None:
  """The file names a day owns in a flat folder, from the layout its export recorded (None when
  the lake holds no record of that export, or its layout is not flat)."""
  if e.flags is None:
    return None
  f = e.flags
  try:
    layout = Layout.of(f.get('layout'), f.get('partition_template'), f.get('file_template'))
  except LayoutError:
    return None
  values = day_values(dt, f.get('dataset_id', 'events'),
                      {k: f[k] for k in ('request_id', 'database_id') if k in f})
  return layout.day_names(values) if layout.flat else None


def footer_rows(path: str) -> int:
  """A Parquet file's row count from its footer (a ranged read at the end of the file)."""
  with fs.open_read(path) as f:
    return pq.ParquetFile(f).metadata.num_rows


def all_rows(path: str) -> int:
  """A Parquet file's rows, counted by decoding every column (a checksum-free file's --deep check)."""
  return fs.read_parquet(path).num_rows


def sha256(path: str) -> str:
  """Every byte of the file, streamed."""
  digest = hashlib.sha256()
  with fs.open_read(path) as f:
    for block in iter(lambda: f.read(BLOCK), b''):
      digest.update(block)
  return digest.hexdigest()


def insert_ids(path: str, fmt: str, flags: dict | None = None) -> list[str | None]:
  """The insert_id of every row of a data file in `fmt`, decompressed by extension. CSV is read
  with the delimiter and header its export recorded (`flags`; else the defaults)."""
  if fmt == 'parquet':
    return fs.read_parquet(path, ['insert_id'])['insert_id'].to_pylist()
  if fmt == 'xml':   # streamed: an Event's elements are dropped once its insert_id is kept
    parser: ET.XMLPullParser = ET.XMLPullParser(events=['end'])
    ids: list[str | None] = []
    for block in fs.read_blocks(path, BLOCK):
      parser.feed(block)
      for _, element in typing.cast(typing.Iterator[tuple[str, ET.Element]], parser.read_events()):
        if element.tag == 'Event':
          ids.append(element.findtext('insert_id'))
          element.clear()
    parser.close()
    return ids
  data = io.BytesIO(b''.join(fs.read_blocks(path, BLOCK)))
  if fmt == 'avro':
    import fastavro
    return [typing.cast(dict, r)['insert_id'] for r in fastavro.reader(data)]
  if fmt == 'csv':
    return _csv_ids(data, flags or {})
  if fmt != 'jsonl':
    raise ValueError(f'no reader for {fmt!r} files')
  return [json.loads(line)['insert_id'] for line in data if line.strip()]


def _csv_ids(data: io.BytesIO, flags: dict) -> list[str | None]:
  rows = csv.reader(io.TextIOWrapper(data, encoding='utf-8', newline=''),
                    delimiter=flags.get('csv_delimiter', ','))
  header = flags.get('csv_header', 'true') == 'true'
  column = next(rows, []).index('insert_id') if header else EXPORT_SCHEMA.names.index('insert_id')
  return [row[column] for row in rows]


def ids_digest(ids: typing.Iterable[str | None]) -> str:
  """One checksum of a day's rows that ignores their order: sha256 of the sorted insert_ids."""
  digest = hashlib.sha256()
  for i in sorted('' if i is None else i for i in ids):
    digest.update(i.encode() + b'\n')
  return digest.hexdigest()
