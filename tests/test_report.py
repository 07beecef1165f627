"""The report page, opened in Debian's headless chromium with its network cut off
(tests/browser.py): no console error, no request but the page's own file, the numbers of its
day table equal `status --json`'s, and a screenshot is kept in the test's tmp dir."""
import json
import urllib.parse

import pytest

from tests import browser, opskit
from tests.opskit import D1, D2, D3

pytestmark = [pytest.mark.engine, pytest.mark.skipif(browser.CHROMIUM is None,
                                                     reason='no chromium (apt-get install chromium; .ci/run does)')]
FLAGS = ['--expect_by', '13:00', '--timezone', 'Asia/Seoul']


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  site = opskit.Site(str(tmp_path_factory.mktemp('report')))
  return site, opskit.build(site)


def test_the_page_renders_offline_and_its_tables_equal_status_json(built, tmp_path):
  site, paths = built
  where = ['--lake', paths['lake'], '--source', paths['src'], '--dest', paths['dest'], *FLAGS]
  out = tmp_path / 'report.html'
  site.cli('report', *where, '--out', str(out))
  doc = json.loads(site.cli('status', *where, '--json', check=False).stdout)
  html = out.read_text()
  assert '<script' not in html and 'http://' not in html.replace('http://www.w3.org/2000/svg', '')

  with browser.opened(out.as_uri()) as page:
    assert page.errors() == []
    assert page.requests() == [out.as_uri()]   # the page itself, nothing else
    rows = page.evaluate("""[...document.querySelectorAll('#days tr[data-dt]')].map(tr => [
        tr.dataset.dt, Object.fromEntries([...tr.querySelectorAll('td[data-field]')].map(
            td => [td.dataset.field, td.textContent]))])""")
    runs = page.evaluate("[...document.querySelectorAll('#runs a')].map(a => a.href)")
    charts = page.evaluate("document.querySelectorAll('svg rect').length")
    page.screenshot(str(tmp_path / 'report.png'))

  assert [dt for dt, _ in rows] == [d['dt'] for d in doc['days']] == [str(D1), str(D2), str(D3)]
  for (dt, cells), d in zip(rows, doc['days']):
    for field in ('rows_in', 'rows_written', 'rows_rejected', 'rows_duplicate'):
      assert int(cells[field].replace(',', '')) == d['import'][field], (dt, field)
    assert cells['status'] == d['import']['status']
    assert (cells['late'] == 'LATE') == d['late']
    export = d['exports'][doc['dests'][0]]
    assert cells['export-0'] == (f"{export['rows']:,}" if export else '')
  assert charts > 6
  assert len(runs) == 2 and all(h.startswith('file://') and h.endswith('.json') for h in runs)
  assert all(json.load(open(urllib.parse.unquote(h[len('file://'):])))['run_id'] in h for h in runs)
  assert (tmp_path / 'report.png').stat().st_size > 10_000
  with open((tmp_path / 'report.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
