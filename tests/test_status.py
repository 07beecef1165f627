"""`status` on lakes and destinations the real import and export built, on local disk, S3 (moto)
and GCS (gcp-storage-emulator): every number is checked against pyarrow's reading of the files
the commands left, and the exit code against what is late or refused."""
import json

import pytest

from apache_beam.options.pipeline_options import PipelineOptions
from tests import opskit
from tests.opskit import D1, D2, D3, D4, EVENTS
from transforms.stores import fs

pytestmark = pytest.mark.engine


@pytest.fixture(scope='module', params=['local', 's3', 'gcs'])
def built(request, tmp_path_factory):
  if request.param == 'local':
    site = opskit.Site(str(tmp_path_factory.mktemp('status')))
  else:
    store = request.getfixturevalue(f'{request.param}_store')
    fs.configure(PipelineOptions(store.flags))
    site = opskit.Site(store.url('status'), store.flags, store.env)
  return site, opskit.build(site)


def status(site, *args, check_code=None):
  proc = site.cli('status', *args, check=False)
  if check_code is not None:
    assert proc.returncode == check_code, proc.stdout + proc.stderr[-3000:]
  return proc


def test_status_json_equals_what_the_files_hold(built):
  site, paths = built
  proc = status(site, '--lake', paths['lake'], '--source', paths['src'], '--dest', paths['dest'],
                '--json', check_code=1)   # D3 was refused
  doc = json.loads(proc.stdout)
  days = {d['dt']: d for d in doc['days']}
  assert sorted(days) == [str(D1), str(D2), str(D3)]   # D4 never ran: no gap, no expect_by
  dest = doc['dests'][0]
  for day in (D1, D2):
    d, dt = days[str(day)], str(day)
    lake_rows = opskit.rows(fs.partition_dir(paths['lake'], dt))
    rejected = opskit.rows(fs.partition_dir(fs.join(paths['lake'], '_rejected'), dt))
    source_rows = EVENTS[day].num_rows
    assert d['source_ready'] is True
    assert d['import']['status'] == 'published'
    assert d['import']['rows_in'] == source_rows
    assert d['import']['rows_written'] == lake_rows == d['lake']['rows']
    assert d['import']['rows_rejected'] == rejected > 0
    assert d['import']['rows_duplicate'] == source_rows - lake_rows - rejected > 0
    assert d['import']['rejected_share'] == pytest.approx(rejected / source_rows, abs=1e-6)
    assert d['exports'][dest]['rows'] == opskit.rows(fs.partition_dir(paths['dest'], dt))
    assert d['exports'][dest]['current'] is True
    assert d['lake']['files'] == 2
  refused = days[str(D3)]
  assert refused['import']['status'] == 'refused' and refused['lake'] is None
  assert refused['import']['rows_rejected'] == opskit.rows(
      fs.partition_dir(fs.join(paths['lake'], '_rejected'), str(D3)))
  assert refused['exports'][dest] is None
  assert doc['refused'] == 1 and doc['late'] == 0


def test_a_day_not_imported_by_the_deadline_is_late(built):
  site, paths = built
  proc = status(site, '--lake', paths['lake'], '--source', paths['src'], '--from_date', str(D1),
                '--to_date', str(D4), '--expect_by', '13:00', '--timezone', 'Asia/Seoul',
                '--json', check_code=1)
  days = {d['dt']: d for d in json.loads(proc.stdout)['days']}
  assert [dt for dt, d in days.items() if d['late']] == [str(D3), str(D4)]
  assert days[str(D4)]['source_ready'] is False and days[str(D4)]['import'] is None
  assert days[str(D1)]['deadline'] == '2023-01-02T04:00:00Z'   # 13:00 KST on D+1
  assert days[str(D1)]['late_by_s'] > 0   # imported years after its deadline


def test_exit_0_when_nothing_is_late_or_refused_and_the_table_names_each_day(built):
  site, paths = built
  proc = status(site, '--lake', paths['lake'], '--dest', paths['dest'], '--from_date', str(D1),
                '--to_date', str(D2), '--expect_by', '23:59', check_code=0)
  lines = proc.stdout.splitlines()
  for day in (D1, D2):
    line = next(x for x in lines if x.startswith(str(day)))
    assert 'published' in line and 'LATE' not in line, line
    assert f'{opskit.rows(fs.partition_dir(paths["lake"], str(day))):,}' in line
  assert '2 days, 0 late, 0 refused or failed' in proc.stdout


def test_wrong_flags_are_one_line_and_exit_2(tmp_path):
  site = opskit.Site(str(tmp_path))
  for args, words in ((['--expect_by', '13:00'], '--lake is required'),
                      (['--lake', str(tmp_path), '--expect_by', '1pm'], '--expect_by'),
                      (['--lake', str(tmp_path), '--timezone', 'Mars/Base', '--expect_by', '1:00'],
                       '--timezone'),
                      (['--lake', str(tmp_path), '--frobnicate'], '--frobnicate')):
    proc = status(site, *args, check_code=2)
    assert words in proc.stderr and 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
