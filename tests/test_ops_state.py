"""An export run with --state elsewhere than the destination keeps its history there; status,
reconcile and forget still find it, through the lake's record of the delivery. Expected rows come
from pyarrow reading the delivered files."""
import json
import os

import pytest

from tests import opskit
from tests.opskit import D1, D2

pytestmark = pytest.mark.engine


def test_status_reconcile_and_forget_find_an_export_kept_with_state(tmp_path):
  site = opskit.Site(str(tmp_path))
  paths = opskit.build(site)
  dest, state = site.url('far'), site.url('state')
  site.cli('export_events', '--lake', paths['lake'], '--dest', dest, '--state', state,
           '--from_date', str(D1), '--to_date', str(D2))
  assert not os.path.exists(os.path.join(dest, '_eventferry'))
  doc = json.loads(site.cli('status', '--lake', paths['lake'], '--dest', dest, '--json',
                            check=False).stdout)
  days = {d['dt']: d for d in doc['days']}
  for day in (D1, D2):
    e = days[str(day)]['exports'][dest]
    assert e['rows'] == opskit.rows(os.path.join(dest, f'dt={day}')) > 0 and e['current']
  proc = site.cli('reconcile', '--lake', paths['lake'], '--dest', dest, '--deep')
  assert 'no export history' not in proc.stdout and 'MISMATCH' not in proc.stdout
  gone = os.path.join(dest, f'dt={D1}', 'part-00000-of-00002.parquet')
  os.remove(gone)
  proc = site.cli('reconcile', '--lake', paths['lake'], '--dest', dest, check=False)
  assert proc.returncode == 1 and f'MISMATCH {gone}: missing' in proc.stdout
  # a destination with no history anywhere is one clear note, not a silent empty check
  proc = site.cli('reconcile', '--lake', paths['lake'], '--dest', site.url('nowhere'))
  assert 'no export history there' in proc.stdout and '--state' in proc.stdout
