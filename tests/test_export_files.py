"""Export files encoded as rows arrive: every format reads back whole, the manifest's sha256 and
bytes are the file's, sizes stay within the limits, and the bytes do not depend on the run."""
import csv
import gzip
import hashlib
import io
import json
import os
import xml.etree.ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.export import EXPORT_SCHEMA
from tests.conftest import event, table
from transforms import export_files
from transforms.export import Format, to_export

FORMATS = [Format('parquet', 'snappy'), Format('jsonl', 'gzip'), Format('csv', 'none'),
           Format('csv', 'gzip'), Format('avro', 'deflate'), Format('xml', 'gzip')]


def rows(n: int) -> pa.Table:
  lake = table([event(i, event_properties=[('note', f'row {i} ' + 'x' * (i % 50))])
                for i in range(n)])
  lake = lake.append_column('environment', pa.array(['production'] * n))
  return to_export(lake, '2023-01-01')


def insert_ids(path: str, fmt: Format) -> list[str]:
  data = open(path, 'rb').read()
  if fmt.gzipped:
    data = gzip.decompress(data)
  if fmt.name == 'parquet':
    return pq.read_table(io.BytesIO(data))['insert_id'].to_pylist()
  if fmt.name == 'jsonl':
    return [json.loads(line)['insert_id'] for line in data.decode().splitlines()]
  if fmt.name == 'csv':
    records = list(csv.reader(io.StringIO(data.decode())))
    assert records[0] == EXPORT_SCHEMA.names and EXPORT_SCHEMA.names not in records[1:]
    return [r[5] for r in records[1:]]
  if fmt.name == 'avro':
    import fastavro
    return [r['insert_id'] for r in fastavro.reader(io.BytesIO(data))]
  return [e.findtext('insert_id') for e in ET.fromstring(data).iter('Event')]


def write(tmp_path, fmt: Format, pieces: list[pa.Table], **limits):
  def place(c):
    name = f'part-{c:03d}.{fmt.extension}'
    return name, str(tmp_path / name)
  files = export_files.ExportFiles(fmt, EXPORT_SCHEMA, place, **limits)
  for piece in pieces:
    files.write(piece)
  return files.close()


@pytest.mark.parametrize('fmt', FORMATS, ids=lambda f: f.extension + '-' + f.compression)
def test_files_read_back_whole_with_their_manifest_checksums(tmp_path, fmt, monkeypatch):
  monkeypatch.setattr(export_files, 'SLICE_ROWS', 7)     # many slices / row groups per file
  data = rows(40)
  staged = write(tmp_path, fmt, [data.slice(0, 5), data.slice(5, 30), data.slice(35)])
  assert len(staged) == 1 and staged[0].rows == 40
  path = staged[0].path
  raw = open(path, 'rb').read()
  assert staged[0].bytes == len(raw) and staged[0].sha256 == hashlib.sha256(raw).hexdigest()
  assert insert_ids(path, fmt) == data['insert_id'].to_pylist()
  again = write(tmp_path / 'again', fmt, [data.slice(0, 5), data.slice(5, 30), data.slice(35)])
  assert again[0].sha256 == staged[0].sha256               # reruns are byte-identical


@pytest.mark.parametrize('fmt', FORMATS, ids=lambda f: f.extension + '-' + f.compression)
def test_files_stay_within_max_bytes_and_max_rows(tmp_path, fmt, monkeypatch):
  monkeypatch.setattr(export_files, 'SLICE_ROWS', 16)
  data = rows(200)
  whole = write(tmp_path / 'whole', fmt, [data])[0].bytes
  limit = whole // 5
  staged = write(tmp_path / 'cut', fmt, [data], max_bytes=limit)
  assert len(staged) >= 5
  for f in staged:
    assert f.bytes == os.path.getsize(f.path)
    assert f.bytes <= limit or f.rows == 1, (f.bytes, limit)
  assert [i for f in staged for i in insert_ids(f.path, fmt)] == data['insert_id'].to_pylist()
  by_rows = write(tmp_path / 'rows', fmt, [data.slice(0, 50), data.slice(50)], max_rows=60)
  assert [f.rows for f in by_rows] == [60, 60, 60, 20]
  assert [i for f in by_rows for i in insert_ids(f.path, fmt)] == data['insert_id'].to_pylist()
