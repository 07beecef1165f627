"""`reconcile --deep` compares the insert_ids of CSV and XML exports with their lake day's too. The
lake and exports are made by the real import and export; the damage (one insert_id changed, the
file's manifest entry made to match, as a hand 'fix' at the destination would) is done with the
csv module and xml.etree, so only the ids can tell."""
import csv
import gzip
import hashlib
import io
import json
import os
import xml.etree.ElementTree as ET

import pytest

from tests import opskit
from tests.opskit import D1, D2

pytestmark = pytest.mark.engine

STRANGER = '00000000-0000-4000-8000-00000000dead'


@pytest.fixture
def site(ops_template, tmp_path):
  return opskit.copy_of(ops_template, tmp_path)


def reconcile(site, dest, *flags, code):
  proc = site.cli('reconcile', '--lake', site.url('lake'), '--dest', dest, *flags, check=False)
  assert proc.returncode == code, proc.stdout + proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr and 'not compared' not in proc.stdout, proc.stdout
  return [line for line in proc.stdout.splitlines() if line.startswith('MISMATCH ')]


def first_file(folder):
  return os.path.join(folder, json.load(open(os.path.join(folder, '_manifest.json')))['files'][0]['name'])


def replace_file(path, text: bytes) -> None:
  """Writes the file (gzipped again if it was) and makes its manifest entry match it."""
  data = gzip.compress(text) if path.endswith('.gz') else text
  open(path, 'wb').write(data)
  manifest = os.path.join(os.path.dirname(path), '_manifest.json')
  doc = json.load(open(manifest))
  [entry] = [f for f in doc['files'] if f['name'] == os.path.basename(path)]
  doc['bytes'] += len(data) - entry['bytes']
  entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
  json.dump(doc, open(manifest, 'w'))


def text_of(path) -> bytes:
  data = open(path, 'rb').read()
  return gzip.decompress(data) if path.endswith('.gz') else data


@pytest.mark.parametrize('dialect', [('|', 'false', 'gzip'), (',', 'true', 'none')])
def test_deep_compares_the_insert_ids_of_csv_exports(site, dialect):
  delimiter, header, compression = dialect
  dest = site.url('csv')
  site.cli('export_events', '--lake', site.url('lake'), '--dest', dest, '--from_date', str(D1),
           '--to_date', str(D2), '--format', 'csv', '--csv_delimiter', delimiter,
           '--csv_header', header, '--compression', compression)
  assert reconcile(site, dest, '--deep', code=0) == []
  path = first_file(os.path.join(dest, f'dt={D2}'))
  rows = list(csv.reader(io.StringIO(text_of(path).decode(), newline=''), delimiter=delimiter))
  column = rows[0].index('insert_id') if header == 'true' else 5   # the contract's 6th column
  rows[-1][column] = STRANGER
  out = io.StringIO(newline='')
  csv.writer(out, delimiter=delimiter, lineterminator='\r\n').writerows(rows)
  replace_file(path, out.getvalue().encode())
  assert reconcile(site, dest, code=0) == []   # counts, sizes and hashes all agree
  assert reconcile(site, dest, '--deep', code=1) == [
      f"MISMATCH {os.path.join(dest, f'dt={D2}')}: its insert_ids differ from its lake day's "
      '(1 missing, 1 not in the lake day)']


def test_deep_compares_the_insert_ids_of_xml_exports(site):
  dest = site.url('xml')
  site.cli('export_events', '--lake', site.url('lake'), '--dest', dest, '--date', str(D1),
           '--format', 'xml', '--compression', 'gzip')
  assert reconcile(site, dest, '--deep', code=0) == []
  path = first_file(os.path.join(dest, f'dt={D1}'))
  root = ET.fromstring(text_of(path))
  events = root.findall('Event')
  events[0].find('insert_id').text = events[1].find('insert_id').text   # a duplicate, one lost
  replace_file(path, ET.tostring(root, encoding='utf-8', xml_declaration=True))
  assert reconcile(site, dest, code=0) == []
  assert reconcile(site, dest, '--deep', code=1) == [
      f"MISMATCH {os.path.join(dest, f'dt={D1}')}: its insert_ids differ from its lake day's "
      '(1 missing, 0 not in the lake day)']
