"""`reconcile` against lakes and destinations the real import and export built: each kind of
damage, done to the files here with plain file operations and pyarrow, is one MISMATCH line
naming the file (exit 1); an undamaged copy reconciles clean (exit 0). Local disk for every kind,
S3 (moto) and GCS (gcp-storage-emulator) for the listing and footer checks."""
import hashlib
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from apache_beam.options.pipeline_options import PipelineOptions
from tests import opskit
from tests.opskit import D1, D2
from transforms.stores import fs

pytestmark = pytest.mark.engine


@pytest.fixture
def site(ops_template, tmp_path):
  """A fresh copy of the built lake, source and destination, to damage."""
  return opskit.copy_of(ops_template, tmp_path)


def reconcile(site, *flags, code):
  proc = site.cli('reconcile', '--lake', site.url('lake'), '--dest', site.url('dest'), *flags,
                  check=False)
  assert proc.returncode == code, proc.stdout + proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  return [line for line in proc.stdout.splitlines() if line.startswith('MISMATCH ')]


def day_file(site, dt, n=0, root='lake'):
  return site.url(root, f'dt={dt}', f'part-{n:05d}-of-00002.parquet')   # a file per lake file


def rewrite_manifest(path, change):
  doc = json.load(open(path))
  change(doc)
  json.dump(doc, open(path, 'w'), indent=2)


def test_an_undamaged_lake_and_destination_reconcile_clean_fast_and_deep(site):
  assert reconcile(site, code=0) == []
  assert reconcile(site, '--deep', code=0) == []


def test_a_deleted_file(site):
  os.remove(day_file(site, D1))
  lines = reconcile(site, code=1)
  assert lines == [f'MISMATCH {day_file(site, D1)}: missing (the manifest lists it: '
                   f'{opskit.manifest(site.url("lake", f"dt={D1}"))["files"][0]["bytes"]:,} bytes, '
                   f'{opskit.manifest(site.url("lake", f"dt={D1}"))["files"][0]["rows"]:,} rows)']


def test_a_truncated_file(site):
  path = day_file(site, D2, 1)
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])
  lines = reconcile(site, code=1)
  assert lines == [f'MISMATCH {path}: {len(data) // 2:,} bytes, the manifest says {len(data):,} '
                   '(truncated or rewritten)']


def test_a_changed_byte_is_found_by_deep_which_reads_every_byte(site):
  path = day_file(site, D1, 1)
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 3] ^= 0xFF   # same size, same footer
  open(path, 'wb').write(bytes(data))
  assert hashlib.sha256(data).hexdigest() != opskit.manifest(site.url('lake', f'dt={D1}'))['files'][1]['sha256']
  assert reconcile(site, code=0) == []   # listings and footers cannot see it
  assert reconcile(site, '--deep', code=1) == [
      f"MISMATCH {path}: sha256 differs from the manifest's: its bytes changed since the commit"]


def test_an_extra_file(site):
  extra = site.url('lake', f'dt={D2}', 'part-00009-of-00009.parquet')
  shutil.copy(day_file(site, D2), extra)
  extra_dest = site.url('dest', f'dt={D1}', 'stray.csv')
  open(extra_dest, 'w').write('a,b\n')
  assert reconcile(site, code=1) == [
      f'MISMATCH {extra}: extra file: in the published day, not in its manifest',
      f'MISMATCH {extra_dest}: extra file: in the published day, not in its manifest']


def test_a_manifest_whose_rows_disagree(site):
  path = site.url('lake', f'dt={D1}', '_manifest.json')
  footer = pq.read_metadata(day_file(site, D1)).num_rows

  def add_rows(doc):
    doc['files'][0]['rows'] += 7
    doc['rows'] += 7
  rewrite_manifest(path, add_rows)
  lines = reconcile(site, code=1)
  assert f'MISMATCH {day_file(site, D1)}: {footer:,} rows in its Parquet footer, the manifest ' \
         f'says {footer + 7:,}' in lines
  assert any(line.startswith(f'MISMATCH {path}: ') and 'run report' in line for line in lines)
  rewrite_manifest(path, lambda doc: doc.update(rows=doc['rows'] + 1))   # totals off too
  assert any('its files\' rows add up to' in line for line in reconcile(site, code=1))


def test_a_run_report_whose_accounting_does_not_hold(site):
  [path] = [os.path.join(site.url('lake', '_runs'), n) for n in os.listdir(site.url('lake', '_runs'))
            if str(D1) in open(os.path.join(site.url('lake', '_runs'), n)).read()
            and json.load(open(os.path.join(site.url('lake', '_runs'), n)))['days'][0]['status']
            == 'published']

  def more_duplicates(doc):
    doc['days'][0]['rows_duplicate'] += 3
  rewrite_manifest(path, more_duplicates)
  lines = reconcile(site, code=1)
  assert len(lines) == 1 and lines[0].startswith(f'MISMATCH {path}: dt={D1}: ') \
      and 'rows in !=' in lines[0], lines


def restage(path: str, table) -> None:
  """Rewrites an export file and its manifest entry to match, as a tool that 'fixed' a
  destination by hand would: every file check passes, only the rows tell."""
  pq.write_table(table, path)
  folder = os.path.dirname(path)
  data = open(path, 'rb').read()

  def update(doc):
    [entry] = [f for f in doc['files'] if f['name'] == os.path.basename(path)]
    doc['rows'] += table.num_rows - entry['rows']
    doc['bytes'] += len(data) - entry['bytes']
    entry.update(rows=table.num_rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
  rewrite_manifest(os.path.join(folder, '_manifest.json'), update)


def test_a_destination_day_missing_rows(site):
  path = day_file(site, D2, root='dest')
  exported = pq.read_table(path)
  restage(path, exported.slice(0, exported.num_rows - 10))
  lake_rows = sum(pq.read_metadata(day_file(site, D2, n)).num_rows for n in (0, 1))
  assert reconcile(site, code=1) == [
      f'MISMATCH {site.url("dest", f"dt={D2}")}: {lake_rows - 10:,} rows, its lake day holds '
      f'{lake_rows:,} (+10)']


def test_a_destination_day_with_other_rows_is_found_by_deep(site):
  path = day_file(site, D1, root='dest')
  exported = pq.read_table(path)
  ids = exported['insert_id'].to_pylist()
  ids[5] = '00000000-0000-4000-8000-00000000dead'
  restage(path, exported.set_column(exported.schema.get_field_index('insert_id'), 'insert_id',
                                    [ids]).cast(exported.schema))
  assert reconcile(site, code=0) == []   # same count
  assert reconcile(site, '--deep', code=1) == [
      f"MISMATCH {site.url('dest', f'dt={D1}')}: its insert_ids differ from its lake day's "
      '(1 missing, 1 not in the lake day)']


@pytest.mark.parametrize('name', ['s3', 'gcs'])
def test_reconcile_on_object_stores(name, request):
  store = request.getfixturevalue(f'{name}_store')
  fs.configure(PipelineOptions(store.flags))
  site = opskit.Site(store.url('reconcile'), store.flags, store.env)
  opskit.build_small(site)
  assert reconcile(site, '--deep', code=0) == []
  gone, cut = day_file(site, D1, 0), day_file(site, D1, 1)
  data = fs.read_bytes(cut)
  fs.delete([gone])
  fs.write_bytes(cut, data[:-100])
  extra = site.url('dest', f'dt={D1}', 'stray.parquet')
  fs.write_bytes(extra, b'x')
  assert reconcile(site, code=1) == [
      f'MISMATCH {gone}: missing (the manifest lists it: '
      f'{opskit.manifest(site.url("lake", f"dt={D1}"))["files"][0]["bytes"]:,} bytes, '
      f'{opskit.manifest(site.url("lake", f"dt={D1}"))["files"][0]["rows"]:,} rows)',
      f'MISMATCH {cut}: {len(data) - 100:,} bytes, the manifest says {len(data):,} '
      '(truncated or rewritten)',
      f'MISMATCH {extra}: extra file: in the published day, not in its manifest']
