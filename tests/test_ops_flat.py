"""`status` and `reconcile` on CleverTap's flat layout, where the days of a destination lie side by
side in one folder and only the file names (and `_manifest-YYYYMMDD.json`, `_SUCCESS-YYYYMMDD`)
say which day a file belongs to. The lake and destination are built by the real import and export;
the numbers expected come from gzip + json reading the delivered files, and each kind of damage is
done here with plain file operations."""
import gzip
import json
import os
import re
import shutil

import pytest

from tests import opskit
from tests.opskit import D1, D2

pytestmark = pytest.mark.engine

REQ, DB = '1700000000123', 'W8R-6K4-5W7Z'
CLEVERTAP = ('--layout', 'clevertap', '--request_id', REQ, '--database_id', DB)


@pytest.fixture(scope='module')
def template(ops_template, tmp_path_factory):
  """opskit's lake (D1, D2 published; D3 refused), D1 and D2 delivered flat as gzipped JSON lines
  in one run, next to a file of the customer's own and another request's file of D1."""
  site = opskit.copy_of(ops_template, tmp_path_factory.mktemp('ops-flat'))
  flat = site.url('flat')
  site.cli('export_events', '--lake', site.url('lake'), '--dest', flat, '--from_date', str(D1),
           '--to_date', str(D2), '--format', 'jsonl', *CLEVERTAP)
  open(os.path.join(flat, 'customer-notes.txt'), 'w').write('theirs\n')
  open(os.path.join(flat, f'999-202301020000-purchase-{ymd(D1)}-00000-000-{DB}.jsonl.gz'),
       'wb').write(gzip.compress(b'{}\n'))   # another request's file: not this day's
  return site.root


@pytest.fixture
def site(template, tmp_path):
  return opskit.copy_of(template, tmp_path)


def ymd(day) -> str:
  return str(day).replace('-', '')


def day_files(site, day) -> list[str]:
  """The day's delivered files, found by their names (the layout's rule, not the manifest)."""
  folder = site.url('flat')
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if re.fullmatch(rf'{REQ}-\d{{12}}-.+-{ymd(day)}-\d{{5}}-\d{{3}}-{DB}\.jsonl\.gz', n))


def read_rows(path) -> list[dict]:
  return [json.loads(line) for line in gzip.decompress(open(path, 'rb').read()).splitlines()]


def reconcile(site, *flags, code):
  proc = site.cli('reconcile', '--lake', site.url('lake'), '--dest', site.url('flat'), *flags,
                  check=False)
  assert proc.returncode == code, proc.stdout + proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  return [line for line in proc.stdout.splitlines() if line.startswith('MISMATCH ')]


def test_status_counts_each_flat_day_from_its_own_files(site):
  proc = site.cli('status', '--lake', site.url('lake'), '--dest', site.url('flat'), '--json',
                  check=False)
  assert proc.returncode == 1, proc.stderr   # D3 was refused
  doc = json.loads(proc.stdout)
  days = {d['dt']: d for d in doc['days']}
  for day in (D1, D2):
    files = day_files(site, day)
    assert len(files) >= 2   # one file per event name at least
    e = days[str(day)]['exports'][site.url('flat')]
    assert e['rows'] == sum(len(read_rows(p)) for p in files) \
        == opskit.rows(site.url('lake', f'dt={day}'))
    assert e['current'] is True and e['folder'] == site.url('flat')
  assert days[str(opskit.D3)]['exports'][site.url('flat')] is None


def test_an_undamaged_flat_destination_reconciles_clean_fast_and_deep(site):
  assert reconcile(site, code=0) == []
  assert reconcile(site, '--deep', code=0) == []


def test_a_deleted_and_a_truncated_flat_file(site):
  gone, cut = day_files(site, D1)[0], day_files(site, D2)[-1]
  os.remove(gone)
  data = open(cut, 'rb').read()
  open(cut, 'wb').write(data[:len(data) // 2])
  manifest = json.load(open(site.url('flat', f'_manifest-{ymd(D1)}.json')))
  [entry] = [f for f in manifest['files'] if f['name'] == os.path.basename(gone)]
  assert reconcile(site, code=1) == [
      f'MISMATCH {gone}: missing (the manifest lists it: {entry["bytes"]:,} bytes, '
      f'{entry["rows"]:,} rows)',
      f'MISMATCH {cut}: {len(data) // 2:,} bytes, the manifest says {len(data):,} '
      '(truncated or rewritten)']


def test_a_changed_byte_in_a_flat_file_is_found_by_deep(site):
  path = day_files(site, D2)[0]
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01
  open(path, 'wb').write(bytes(data))
  assert reconcile(site, code=0) == []
  lines = reconcile(site, '--deep', code=1)
  assert lines[0] == (f"MISMATCH {path}: sha256 differs from the manifest's: its bytes changed "
                      'since the commit')


def test_an_extra_file_of_a_flat_day_is_found_and_other_files_are_left_alone(site):
  """A file named as the day's own (a leftover of another run of this request) is extra; the
  customer's file, another request's file and the other day's files are not this day's. Which
  names a day owns comes from the lake's record of the delivery, so this copy exports its own."""
  site.cli('export_events', '--lake', site.url('lake'), '--dest', site.url('flat'),
           '--from_date', str(D1), '--to_date', str(D2), '--format', 'jsonl', *CLEVERTAP)
  assert reconcile(site, code=0) == []
  first = day_files(site, D1)[0]
  extra = os.path.join(site.url('flat'), re.sub(r'-\d{12}-', '-202001010000-',
                                                os.path.basename(first)))
  shutil.copy(first, extra)
  assert reconcile(site, code=1) == [
      f'MISMATCH {extra}: extra file: named as a file of day {D1}, not in its manifest']
