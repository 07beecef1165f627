"""Export tests' builders and independent readers.

Lake days are built here with pyarrow in the lake schema (not with the project's sample generator
or import), and export files are read back with readers that are not the project's: pyarrow for
Parquet, fastavro for Avro, xml.etree for XML, the csv module for CSV, the json module for JSON
lines. Every reader returns rows as plain Python values in one shape (see `expected`), so a
test compares lake and export with ==.
"""
import csv
import datetime
import decimal
import gzip
import hashlib
import io
import json
import os
import re
import xml.etree.ElementTree as ET

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import export_events
from schemas.events import LAKE_SCHEMA

UTC = datetime.timezone.utc
MAPS = ('identifiers', 'platform_properties', 'user_properties', 'event_properties')
EXPORT_MAPS = {'identifiers': 'identifiers', 'hackle_properties': 'platform_properties',
               'user_properties': 'user_properties', 'event_properties': 'event_properties'}
# XML 1.0 cannot carry these characters at all (docs/export.md: what survives a round trip).
XML_LOST = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')


def lake_day(lake: str, dt: str, files: list) -> None:
  """A committed lake day: one Parquet file per list of rows or table (lake schema), its manifest, then
  `_SUCCESS`, as the import's commit leaves them."""
  day = os.path.join(lake, f'dt={dt}')
  os.makedirs(day, exist_ok=True)
  listed = []
  for i, rows in enumerate(files):
    name = f'part-{i:05d}-of-{len(files):05d}.parquet'
    if not isinstance(rows, pa.Table):
      rows = pa.Table.from_pylist(rows, schema=LAKE_SCHEMA)
    pq.write_table(rows, os.path.join(day, name))
    data = open(os.path.join(day, name), 'rb').read()
    listed.append({'name': name, 'rows': len(rows), 'bytes': len(data),
                   'sha256': hashlib.sha256(data).hexdigest()})
  manifest = {'run_id': f'lake-{dt}', 'pipeline': 'import', 'source': 'test', 'partition': day,
              'committed_at': datetime.datetime.now(UTC).isoformat(), 'schema_fingerprint': '',
              'rows': sum(f['rows'] for f in listed), 'bytes': sum(f['bytes'] for f in listed),
              'files': listed}
  with open(os.path.join(day, '_manifest.json'), 'w') as f:
    json.dump(manifest, f)
  open(os.path.join(day, '_SUCCESS'), 'w').close()


def lake_row(n: int, dt: str = '2023-01-01', **over) -> dict:
  row = {'ts': datetime.datetime.fromisoformat(dt).replace(tzinfo=UTC)
               + datetime.timedelta(seconds=n),
         'environment': 'production', 'event_key': 'purchase',
         'identifiers': [('id', f'user-{n}'), ('device_id', f'DEV-{n}')],
         'insert_id': f'00000000-0000-4000-8000-{n:012x}',
         'metric_value': decimal.Decimal('1.500000'),
         'user_properties': [('grade', 'GOLD')], 'event_properties': [('category', '레저')],
         'platform_properties': [('osname', 'Android')]}
  row.update(over)
  return row


def export(lake, dest, *flags) -> int:
  """The export command, in this process."""
  return export_events.run(['--lake', str(lake), '--dest', str(dest), *flags])


def expected(rows: list[dict], dt: str) -> list[dict]:
  """Lake rows as the export contract states them: maps as dicts (in key order), ts in UTC."""
  out = []
  for r in rows:
    e = {'server_dt': datetime.date.fromisoformat(dt), 'ts': r['ts'].astimezone(UTC),
         'environment': r['environment'], 'event_key': r['event_key'],
         'insert_id': r['insert_id'], 'metric_value': r['metric_value']}
    for name, lake_name in EXPORT_MAPS.items():
      e[name] = dict(r[lake_name] or [])
    out.append(e)
  return sorted(out, key=lambda e: e['insert_id'])


def _from_text(row: dict, maps_as_json: bool = True) -> dict:
  """A row read as text (CSV, XML, JSON) -> typed values."""
  out = dict(row)
  out['server_dt'] = datetime.date.fromisoformat(row['server_dt'])
  assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z', row['ts']), row['ts']
  out['ts'] = datetime.datetime.fromisoformat(row['ts'].replace('Z', '+00:00'))
  out['metric_value'] = decimal.Decimal(row['metric_value'])
  if maps_as_json:
    for name in EXPORT_MAPS:
      out[name] = json.loads(row[name])
  return out


def _parquet(data: bytes) -> list[dict]:
  rows = pq.read_table(io.BytesIO(data)).to_pylist()
  for r in rows:
    for name in EXPORT_MAPS:
      r[name] = json.loads(r[name])
  return rows


def _avro(data: bytes) -> list[dict]:
  rows = list(fastavro.reader(io.BytesIO(data)))
  for r in rows:
    for name in EXPORT_MAPS:
      r[name] = json.loads(r[name])
  return rows


def _jsonl(data: bytes) -> list[dict]:
  text = data.decode('utf-8')
  assert text == '' or text.endswith('\n')
  # split on LF only: str.splitlines would also split on U+2028 and friends, which JSON allows raw
  return [_from_text(json.loads(line), maps_as_json=False) for line in text.split('\n')[:-1]]


def _csv(data: bytes, delimiter: str = ',', header: bool = True) -> list[dict]:
  reader = csv.reader(io.StringIO(data.decode('utf-8'), newline=''), delimiter=delimiter)
  lines = list(reader)
  names = ['server_dt', 'ts', 'environment', 'event_key', 'identifiers', 'insert_id',
           'metric_value', 'hackle_properties', 'user_properties', 'event_properties']
  if header:
    assert lines[0] == names
    lines = lines[1:]
  return [_from_text(dict(zip(names, line))) for line in lines]


def _xml(data: bytes) -> list[dict]:
  root = ET.fromstring(data)
  assert root.tag == 'Events'
  rows = []
  for e in root.iter('Event'):
    row = {}
    for child in e:
      if child.tag in EXPORT_MAPS:
        # a null value is an entry without <value>; an empty string is an empty <value>
        row[child.tag] = {entry.find('key').text or '': (None if entry.find('value') is None
                                                         else entry.find('value').text or '')
                          for entry in child.iter('entry')}
      else:
        row[child.tag] = child.text or ''
    rows.append(_from_text(row, maps_as_json=False))
  return rows


READERS = {'parquet': _parquet, 'avro': _avro, 'jsonl': _jsonl, 'csv': _csv, 'xml': _xml}


def read_export(path: str, fmt: str, **csv_dialect) -> list[dict]:
  data = open(path, 'rb').read()
  if path.endswith('.gz'):
    data = gzip.decompress(data)
  return READERS[fmt](data, **csv_dialect) if fmt == 'csv' else READERS[fmt](data)


def data_files(dest: str) -> list[str]:
  """Every export data file under dest (not markers, staging or export state)."""
  found = []
  for d, dirs, files in os.walk(dest):
    dirs[:] = [x for x in dirs if x not in ('_eventferry', '_staging')]
    found += [os.path.join(d, f) for f in files if not f.startswith('_')]
  return sorted(found)


def committed_files(dest: str) -> list[str]:
  """The data files that committed days' manifests list (what a reader trusting `_SUCCESS` and
  the manifest reads)."""
  found = []
  for d, dirs, files in os.walk(dest):
    dirs[:] = [x for x in dirs if x not in ('_eventferry', '_staging')]
    for f in files:
      if f.startswith('_SUCCESS'):
        manifest = '_manifest' + f[len('_SUCCESS'):] + '.json'
        listed = json.load(open(os.path.join(d, manifest)))['files']
        found += [os.path.join(d, m['name']) for m in listed]
  return sorted(found)


def xml_expected(rows: list[dict]) -> list[dict]:
  """What XML carries of expected rows: characters XML 1.0 cannot hold become \\uXXXX text."""
  def lost(v):
    return None if v is None else XML_LOST.sub(lambda m: f'\\u{ord(m.group()):04x}', v)
  out = []
  for r in rows:
    r = dict(r)
    for k in ('environment', 'event_key', 'insert_id'):
      r[k] = lost(r[k])
    for name in EXPORT_MAPS:
      r[name] = {lost(k): lost(v) for k, v in r[name].items()}
    out.append(r)
  return out


def bulk_rows(n: int, dt: str = '2023-01-01', props: int = 8) -> pa.Table:
  """n lake rows built column by column (fast enough for a day that takes seconds to export)."""
  import numpy as np
  start = int(datetime.datetime.fromisoformat(dt).replace(tzinfo=UTC).timestamp() * 1000)
  ids = [f'00000000-0000-4000-8000-{i:012x}' for i in range(n)]

  def map_of(width: int, keys: list[str], values) -> pa.MapArray:
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.MapArray.from_arrays(offsets, pa.array(keys * n), values)
  props_values = pa.array([f'value-{i % 997:04d}-' + 'v' * 24 for i in range(n * props)])
  columns = {
      'ts': pa.array(start + np.arange(n) * (86_400_000 // max(n, 1)), pa.timestamp('ms', 'UTC')),
      'environment': pa.array(['production'] * n), 'event_key': pa.array(['purchase'] * n),
      'identifiers': map_of(1, ['id'], pa.array(ids)), 'insert_id': pa.array(ids),
      'metric_value': pa.array([decimal.Decimal('1.5')] * n, pa.decimal128(24, 6)),
      'user_properties': map_of(1, ['grade'], pa.array(['GOLD'] * n)),
      'event_properties': map_of(props, [f'k{j}' for j in range(props)], props_values),
      'platform_properties': map_of(1, ['osname'], pa.array(['Android'] * n))}
  return pa.Table.from_arrays([columns[f.name] for f in LAKE_SCHEMA], schema=LAKE_SCHEMA)
