"""`./run.sh ingest --input GLOB --watch INTERVAL --streaming` on the local streaming runner: files
dropped into a folder while the pipeline runs land in the lake, each once, never half-read."""
import datetime
import json
import os
import time

import pyarrow.parquet as pq
import pytest

from schemas.reports import Manifest
from tests.conftest import parquet_rows, running_cli, wait_for
from tests.test_ingest import event
from transforms.watch import _Listing

pytestmark = pytest.mark.process


def _write(path, lines: list[bytes]) -> None:
  """Written aside, then renamed in: how a file should appear in a watched folder."""
  with open(f'{path}.tmp', 'wb') as f:
    f.write(b'\n'.join(lines) + b'\n')
  os.rename(f'{path}.tmp', path)


def test_a_file_is_emitted_once_and_only_when_it_stopped_changing(tmp_path):
  listing, pattern = _Listing(), str(tmp_path / '*.jsonl')
  (tmp_path / 'a.jsonl').write_bytes(b'{}\n')
  assert listing.settled(pattern) == []                      # first sight: may still be growing
  with open(tmp_path / 'a.jsonl', 'ab') as f:
    f.write(b'{}\n')
  (tmp_path / 'b.jsonl').write_bytes(b'{}\n')
  assert listing.settled(pattern) == []                      # a grew; b is new
  assert [os.path.basename(m.path) for m in listing.settled(pattern)] == ['a.jsonl', 'b.jsonl']
  assert listing.settled(pattern) == []                      # never twice
  assert listing.settled(str(tmp_path / 'none' / '*.jsonl')) == []


def test_watching_a_folder_lands_new_files_as_they_arrive(tmp_path):
  landing, lake = tmp_path / 'landing', str(tmp_path / 'lake')
  landing.mkdir()
  now = int(time.time() * 1000) - 1000
  today = datetime.datetime.fromtimestamp(now / 1000, datetime.timezone.utc).date()
  yesterday, old = today - datetime.timedelta(days=1), today - datetime.timedelta(days=3)
  noon = lambda d: int(datetime.datetime(d.year, d.month, d.day, 12,
                                         tzinfo=datetime.timezone.utc).timestamp() * 1000)
  first = [event(now) for _ in range(1000)]
  _write(landing / 'a.jsonl', first + [b'{"insert_id": "cut'])   # one malformed line, row 1001

  part = lambda root, d: os.path.join(root, f'dt={d.isoformat()}')
  rejected = os.path.join(lake, '_rejected')
  with running_cli('pipelines.ingest', '--input', str(landing / '*.jsonl'), '--watch', '1s',
                   '--lake', lake, '--streaming', '--flush_interval', '2s', '--run_id', 'w1',
                   log=tmp_path / 'ingest.log') as proc:
    wait_for(lambda: parquet_rows(part(lake, today)) >= 1000, proc, 120)
    resent = [event(now, json.loads(e)['insert_id']) for e in first[:50]]
    _write(landing / 'b.jsonl', [event(now) for _ in range(500)] + resent
           + [event(noon(yesterday)) for _ in range(300)] + [event(noon(old)) for _ in range(20)])
    wait_for(lambda: (parquet_rows(part(lake, today)) == 1500
                      and parquet_rows(part(lake, yesterday)) == 300
                      and parquet_rows(part(rejected, old)) == 20
                      and parquet_rows(part(rejected, today)) == 1), proc, 120)
  output = (tmp_path / 'ingest.log').read_text()
  assert parquet_rows(part(lake, today)) == 1500, output[-3000:]   # 50 resent ids dropped
  assert parquet_rows(part(lake, yesterday)) == 300, output[-3000:]
  assert not os.path.exists(os.path.join(part(lake, today), '_SUCCESS'))   # today is still open
  manifest = Manifest.model_validate_json(open(os.path.join(part(lake, yesterday), '_manifest.json')).read())
  assert manifest.rows == 300 and os.path.exists(os.path.join(part(lake, yesterday), '_SUCCESS'))
  written = pq.read_table(part(lake, today))
  assert written.num_rows == len(set(written['insert_id'].to_pylist()))
  dead = pq.read_table(part(rejected, old)).to_pylist() + pq.read_table(part(rejected, today)).to_pylist()
  assert [(r['source_file'], r['source_row']) for r in dead if r['reason'] == 'invalid_json'] == \
      [(str(landing / 'a.jsonl'), 1001)]
  assert {r['source_file'] for r in dead if r['reason'] == 'too_late'} == {str(landing / 'b.jsonl')}
  assert sum(r['reason'] == 'too_late' for r in dead) == 20
