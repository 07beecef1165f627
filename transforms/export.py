"""Lake rows -> the export contract, and the file formats a customer can ask for.

Every row encoder takes a slice of an EXPORT_SCHEMA table and returns its bytes; all column work
is vectorized (JSON text via transforms.kernels.jsonify, CSV via Arrow's writer) except Avro and XML.
Parquet is written by pyarrow's ParquetWriter (transforms/export_files.py).
"""
import dataclasses
import datetime
import io
import json
import re
from xml.sax.saxutils import escape

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from schemas.export import EXPORT_SCHEMA, PROFILE_SCHEMA
from transforms.kernels.isotime import iso_millis
from transforms.kernels.jsonify import map_to_json, quote
from transforms.validate import constant

__all__ = ['PARQUET_CODECS', 'TEXT_CODECS', 'AVRO_CODECS', 'MAP_FIELDS', 'AVRO_SCHEMA', 'select',
           'to_export', 'Format', 'ROW_FORMATS', 'profile_rows', 'latest_profiles',
           'to_profile_export']

PARQUET_CODECS = ('snappy', 'zstd', 'gzip', 'none')
TEXT_CODECS = ('none', 'gzip')
AVRO_CODECS = ('null', 'deflate', 'snappy')
MAP_FIELDS = ('identifiers', 'hackle_properties', 'user_properties', 'event_properties')  # JSON text
AVRO_SCHEMA = {
    'type': 'record', 'name': 'ExportEvent', 'namespace': 'eventferry',
    'fields': [{'name': 'server_dt', 'type': {'type': 'int', 'logicalType': 'date'}},
               {'name': 'ts', 'type': {'type': 'long', 'logicalType': 'timestamp-millis'}},
               {'name': 'environment', 'type': 'string'}, {'name': 'event_key', 'type': 'string'},
               {'name': 'identifiers', 'type': 'string'}, {'name': 'insert_id', 'type': 'string'},
               {'name': 'metric_value', 'type': {'type': 'bytes', 'logicalType': 'decimal',
                                                 'precision': 24, 'scale': 6}},
               {'name': 'hackle_properties', 'type': 'string'},
               {'name': 'user_properties', 'type': 'string'},
               {'name': 'event_properties', 'type': 'string'}]}
# XML 1.0 cannot carry these even as character references; they are written as \uXXXX text.
_XML_FORBIDDEN = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')
# A parser turns a raw CR (and CR LF) into LF: CR goes as a character reference.
_XML_ENTITIES = {'\r': '&#13;'}


def select(lake: pa.Table, events: list[str], exclude: list[str], environment: str | None) -> pa.Table:
  """Rows of the chosen event names (all when empty), minus excluded ones, in one environment."""
  if not (events or exclude or environment):
    return lake
  keep = pa.array(np.ones(lake.num_rows, dtype=bool))
  if events:
    keep = pc.and_(keep, pc.is_in(lake['event_key'], pa.array(events)))
  if exclude:
    keep = pc.and_(keep, pc.invert(pc.is_in(lake['event_key'], pa.array(exclude))))
  if environment:
    keep = pc.and_(keep, pc.equal(lake['environment'], environment))
  return lake.filter(keep)


def to_export(lake: pa.Table, dt: str) -> pa.Table:
  """Lake rows of day `dt` -> EXPORT_SCHEMA (seed 000) rows."""
  lake = lake.combine_chunks()
  n = lake.num_rows
  day = constant(datetime.date.fromisoformat(dt), n, pa.date32())
  as_json = {name: map_to_json(lake[name].chunk(0)) if n else pa.array([], pa.string())
             for name in ('identifiers', 'platform_properties', 'user_properties',
                          'event_properties')}
  columns = {'server_dt': day, 'ts': lake['ts'], 'environment': lake['environment'],
             'event_key': lake['event_key'], 'identifiers': as_json['identifiers'],
             'insert_id': lake['insert_id'], 'metric_value': lake['metric_value'],
             'hackle_properties': as_json['platform_properties'],
             'user_properties': as_json['user_properties'],
             'event_properties': as_json['event_properties']}
  return pa.Table.from_arrays([columns[f.name] for f in EXPORT_SCHEMA], schema=EXPORT_SCHEMA)


@dataclasses.dataclass(frozen=True)
class Format:
  """How to encode an export file: format name, compression and CSV dialect."""
  name: str = 'parquet'
  compression: str = 'snappy'
  csv_delimiter: str = ','
  csv_header: bool = True

  @property
  def gzipped(self) -> bool:
    return self.name in ('jsonl', 'csv', 'xml') and self.compression == 'gzip'

  @property
  def extension(self) -> str:
    return self.name + ('.gz' if self.gzipped else '')


# Row formats are encoded a slice of rows at a time (transforms/export_files.py streams them):
# each has the bytes a file starts with, the bytes of a slice of rows, and the bytes it ends with.

def _jsonl(table: pa.Table, fmt: Format, first: bool) -> bytes:
  """One JSON object per line. Maps are nested objects; decimals are exact text; timestamps are
  2023-01-01T00:01:02.333Z."""
  if table.num_rows == 0:
    return b''
  t = table.combine_chunks()
  parts: list = []   # '{"name": ', value, ', "name": ', value, ... joined in one pass
  for i, field in enumerate(t.schema):
    col = t[field.name].chunk(0)
    if field.name in MAP_FIELDS:
      value = col
    elif pa.types.is_timestamp(field.type):
      value = iso_millis(col, '"')
    else:
      value = quote(col.cast(pa.string()))
    parts += [('{' if i == 0 else ', ') + f'"{field.name}": ', value]
  return _concatenated(pc.binary_join_element_wise(*parts, '}\n', ''))


def _concatenated(strings: pa.Array) -> bytes:
  """All values of a string array back to back, straight from its data buffer."""
  offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
      strings.offset:strings.offset + len(strings) + 1]
  return strings.buffers()[2][offsets[0]:offsets[-1]].to_pybytes()


def _timestamps_as_text(table: pa.Table) -> pa.Table:
  for i, field in enumerate(table.schema):
    if pa.types.is_timestamp(field.type):
      table = table.set_column(i, field.name, iso_millis(table[field.name].combine_chunks()))
  return table


def _csv(table: pa.Table, fmt: Format, first: bool) -> bytes:
  """RFC 4180 rows; the header line (--csv_header) only at the top of a file."""
  t = _timestamps_as_text(table)
  sink = pa.BufferOutputStream()
  pacsv.write_csv(t, sink, write_options=pacsv.WriteOptions(
      include_header=fmt.csv_header and first, delimiter=fmt.csv_delimiter,
      quoting_style='needed'))
  return sink.getvalue().to_pybytes()


def _avro_blocks(table: pa.Table, fmt: Format, first: bool) -> bytes:
  """Avro data blocks. Blocks do not depend on each other and the sync marker is fixed (so reruns
  are byte-identical), so the blocks of each slice can follow one file header."""
  encoded = _avro_file(table.to_pylist(), fmt)
  return encoded[len(_avro_file([], fmt)):]


def _avro_file(rows: list[dict], fmt: Format) -> bytes:
  import fastavro
  sink = io.BytesIO()
  fastavro.writer(sink, fastavro.parse_schema(AVRO_SCHEMA), rows, codec=fmt.compression,
                  sync_marker=b'eventferry-sync!')
  return sink.getvalue()


def _xml_text(value: str) -> str:
  value = _XML_FORBIDDEN.sub(lambda m: f'\\u{ord(m.group()):04x}', value)
  return escape(value, _XML_ENTITIES)


def _xml(table: pa.Table, fmt: Format, first: bool) -> bytes:
  """CleverTap's element layout: one <Event> per row, maps as <entry><key/><value/></entry>;
  a null map value is an entry without <value> (an empty string is an empty <value>)."""
  out = []
  for row in _timestamps_as_text(table).to_pylist():
    out.append('<Event>')
    for name, value in row.items():
      if name in MAP_FIELDS:
        entries = ''.join(f'<entry><key>{_xml_text(k)}</key>' +
                          ('' if v is None else f'<value>{_xml_text(v)}</value>') +
                          '</entry>' for k, v in json.loads(value).items())
        out.append(f'<{name}>{entries}</{name}>')
      else:
        out.append(f'<{name}>{_xml_text(str(value))}</{name}>')
    out.append('</Event>\n')
  return ''.join(out).encode()


# format -> (bytes a file starts with, rows -> bytes, bytes it ends with)
ROW_FORMATS = {
    'jsonl': (lambda fmt: b'', _jsonl, b''),
    'csv': (lambda fmt: b'', _csv, b''),
    'xml': (lambda fmt: b'<?xml version="1.0" encoding="UTF-8"?>\n<Events>\n', _xml,
            b'</Events>\n'),
    'avro': (lambda fmt: _avro_file([], fmt), _avro_blocks, b''),
}


def profile_rows(lake: pa.Table) -> pa.Table:
  """Each lake row as (user_key, user_id, id, last_seen, insert_id, user_properties)."""
  user_id = pc.map_lookup(lake['identifiers'], 'user_id', 'first')
  device = pc.fill_null(pc.map_lookup(lake['identifiers'], 'id', 'first'), '')
  named = pc.if_else(pc.fill_null(pc.equal(user_id, ''), True), None, user_id)
  return pa.table({'user_key': pc.coalesce(named, device), 'user_id': pc.fill_null(user_id, ''),
                   'id': device, 'last_seen': lake['ts'], 'insert_id': lake['insert_id'],
                   'user_properties': lake['user_properties']})


def latest_profiles(rows: pa.Table) -> pa.Table:
  """One row per user_key: the latest last_seen (ties: the greater insert_id), by user_key."""
  if rows.num_rows == 0:
    return rows
  order = pc.sort_indices(rows, sort_keys=[('user_key', 'ascending'), ('last_seen', 'descending'),
                                           ('insert_id', 'descending')])
  keys = rows['user_key'].take(order).combine_chunks()
  first = np.ones(len(keys), dtype=bool)
  first[1:] = np.asarray(pc.not_equal(keys[1:], keys[:-1]))
  return rows.take(order.filter(pa.array(first)))


def to_profile_export(profiles: pa.Table, as_of: str) -> pa.Table:
  profiles = profiles.combine_chunks()
  n = profiles.num_rows
  props = (map_to_json(profiles['user_properties'].chunk(0)) if n else pa.array([], pa.string()))
  columns = {'as_of': constant(datetime.date.fromisoformat(as_of), n, pa.date32()),
             'user_key': profiles['user_key'], 'user_id': profiles['user_id'],
             'id': profiles['id'], 'last_seen': profiles['last_seen'], 'user_properties': props}
  return pa.Table.from_arrays([columns[f.name] for f in PROFILE_SCHEMA], schema=PROFILE_SCHEMA)
