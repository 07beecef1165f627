"""Who owns a lake day: usage sequences of import and batch ingest, read back with DuckDB.

An import replaces its day (its source is the customer's whole day); a batch ingest adds to the
day what it does not hold yet, so pieces of an archive add up and a rerun adds nothing;
--replace_days replaces the day and says how many rows it removed. Inputs are written with
pyarrow and the json module; the lake is read with DuckDB from the files the manifests list.
"""
import datetime
import gzip
import json
import os

import duckdb
import pytest

from pipelines import import_events
from pipelines import ingest as ingest_pipeline
from tests.conftest import event as import_row, parse_payloads, table, uuid, write_file

pytestmark = pytest.mark.engine

DT = '2023-01-01'
DAY_MS = int(datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000)


def raw_event(n: int, **fields) -> bytes:
  body = {'insert_id': uuid(n), 'event_key': 'purchase', 'ts': DAY_MS + 3_600_000 + n,
          'identifiers': {'id': f'user-{n}', 'device_id': f'DEV-{n}'},
          'hackle_properties': {'osname': 'iOS', 'appversion': '1.0'}}
  body.update(fields)
  return json.dumps(body, ensure_ascii=False).encode()


def lines(path, events: list[bytes], prefix: bytes = b'') -> str:
  data = prefix + b'\n'.join(events) + b'\n'
  path.write_bytes(gzip.compress(data) if str(path).endswith('.gz') else data)
  return str(path)


def ids(lake: str, dt: str = DT, rejected: bool = False) -> list[str]:
  """insert_ids (dead letters: source rows) of the published day, from the files its manifest
  lists; [] when the day is not published."""
  d = os.path.join(lake, '_rejected' if rejected else '', f'dt={dt}')
  if not os.path.exists(os.path.join(d, '_SUCCESS')):
    return []
  files = [os.path.join(d, f['name']) for f in json.load(open(os.path.join(d, '_manifest.json')))['files']]
  if not files:
    return []
  column = 'source_row' if rejected else 'insert_id'
  return sorted(r[0] for r in duckdb.sql(f'SELECT {column} FROM read_parquet({files!r})').fetchall())


def ingest(path: str, lake: str, *flags: str) -> dict:
  """Runs a batch ingest; -> the day's report."""
  run_id = f'r{len(os.listdir(os.path.join(lake, "_runs"))) if os.path.isdir(os.path.join(lake, "_runs")) else 0}'
  assert ingest_pipeline.run(['--input', path, '--lake', lake, '--run_id', run_id,
                              '--runner', 'FnApiRunner', *flags]) == 0
  report = os.path.join(lake, '_runs', f'ingest-{run_id}', f'dt={DT}.json')
  return json.load(open(report)) if os.path.exists(report) else {}


def test_an_ingest_into_an_imported_day_adds_its_events_and_the_day_stays_complete(tmp_path):
  bucket, lake = str(tmp_path / 'bucket'), str(tmp_path / 'lake')
  write_file(f'{bucket}/dt={DT}/part-0.parquet', table([import_row(n) for n in range(50)]))
  open(f'{bucket}/dt={DT}/_SUCCESS', 'wb').close()
  args = ['--source', bucket, '--date', DT, '--lake', lake, '--runner', 'FnApiRunner']
  assert import_events.run(args) == 0
  assert ids(lake) == sorted(uuid(n) for n in range(50))

  report = ingest(lines(tmp_path / 'three.jsonl', [raw_event(n) for n in (100, 101, 102)]
                        + [raw_event(7)]), lake)   # 7: the import has it already
  assert ids(lake) == sorted(uuid(n) for n in [*range(50), 100, 101, 102])
  assert (report['rows_written'], report['rows_duplicate'], report['rows_replaced']) == (3, 1, 0)

  o = import_events.ImportOptions(args).view_as(import_events.ImportOptions)
  complete, why = import_events.committed(o, import_events.inspect(o, datetime.date(2023, 1, 1)))
  assert complete, why   # so a backfill, which skips complete days, keeps the ingested rows
  assert import_events.run(args) == 0   # an import replaces the day: its source is the whole day
  assert ids(lake) == sorted(uuid(n) for n in range(50))


def test_an_archive_in_two_pieces_adds_up_and_a_rerun_adds_nothing(tmp_path):
  lake = str(tmp_path / 'lake')
  first = lines(tmp_path / 'first.jsonl', [raw_event(n) for n in range(30)])
  second = lines(tmp_path / 'second.jsonl.gz', [raw_event(n) for n in range(30, 60)] + [raw_event(10)])
  ingest(first, lake)
  assert ids(lake) == sorted(uuid(n) for n in range(30))
  report = ingest(second, lake)
  assert ids(lake) == sorted(uuid(n) for n in range(60))
  assert (report['rows_written'], report['rows_duplicate']) == (30, 1)
  for piece, rows in ((first, 30), (second, 31)):   # reruns
    report = ingest(piece, lake)
    assert ids(lake) == sorted(uuid(n) for n in range(60))
    assert (report['rows_written'], report['rows_duplicate'], report['rows_in']) == (0, rows, rows)

  report = ingest(first, lake, '--replace_days')
  assert ids(lake) == sorted(uuid(n) for n in range(30))
  assert (report['rows_written'], report['rows_replaced']) == (30, 60)
  assert not os.path.exists(os.path.join(lake, '_staging'))   # nothing left behind


def test_dead_letters_alone_publish_no_lake_day_and_leave_a_published_one_as_it_was(tmp_path):
  """A file that cannot be read is filed under its modification day: that day gets its dead
  letter, and its lake day stays as it was (absent, or published with its rows)."""
  lake = str(tmp_path / 'lake')
  broken = tmp_path / 'broken.jsonl.gz'
  broken.write_bytes(b'not compressed at all')
  for day in ('2023-03-01', DT):
    stamp = datetime.datetime.fromisoformat(day + 'T12:00:00+00:00').timestamp()
    os.utime(broken, (stamp, stamp))
    if day == DT:
      ingest(lines(tmp_path / 'ok.jsonl', [raw_event(n) for n in range(5)]), lake)
    before = {n: open(os.path.join(lake, f'dt={day}', n), 'rb').read()
              for n in os.listdir(os.path.join(lake, f'dt={day}'))} \
        if os.path.isdir(os.path.join(lake, f'dt={day}')) else {}
    assert ingest_pipeline.run(['--input', str(broken), '--lake', lake, '--runner', 'FnApiRunner']) == 0
    assert len(ids(lake, day, rejected=True)) == 1
    after = {n: open(os.path.join(lake, f'dt={day}', n), 'rb').read()
             for n in os.listdir(os.path.join(lake, f'dt={day}'))} \
        if os.path.isdir(os.path.join(lake, f'dt={day}')) else {}
    assert after == before
  assert ids(lake, '2023-03-01') == [] and len(ids(lake)) == 5


def test_a_dead_letter_with_a_readable_time_is_filed_under_its_server_day(tmp_path):
  lake = str(tmp_path / 'lake')
  ingest(lines(tmp_path / 'a.jsonl', [raw_event(1), raw_event(2, event_key=5),
                                      raw_event(3, identifiers='id=3')]), lake)
  assert ids(lake) == [uuid(1)]
  assert ids(lake, rejected=True) == [2, 3]


@pytest.mark.parametrize('name', ['bom.jsonl', 'bom.jsonl.gz'])
def test_a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_its_first_event(tmp_path, name):
  lake = str(tmp_path / 'lake')
  ingest(lines(tmp_path / name, [raw_event(n) for n in range(3)], prefix=b'\xef\xbb\xbf'), lake)
  assert ids(lake) == [uuid(n) for n in range(3)]
  assert not os.path.isdir(os.path.join(lake, '_rejected'))


def _parse(payloads: list[bytes], c_parser: bool, monkeypatch):
  batch, rejected = parse_payloads(payloads, c_parser, monkeypatch)
  return batch.to_pylist(), rejected.to_pylist()


@pytest.mark.parametrize('c_parser', [True, False])
def test_property_numbers_keep_the_json_text_they_were_sent_as(c_parser, monkeypatch):
  literals = ['0.000001', '1e3', '1E+03', '-0', '1.0', '12345678901234567890123',
              '0.30000000000000004', '1e400', '-1.50']
  body = ', '.join(f'"p{i}": {t}' for i, t in enumerate(literals))
  [row], _ = _parse([raw_event(1).replace(b'"hackle_properties"',
                                          ('"event_properties": {' + body + '}, "hackle_properties"').encode())],
                    c_parser, monkeypatch)
  assert dict(row['event_properties']) == {f'p{i}': t for i, t in enumerate(literals)}


@pytest.mark.parametrize('c_parser', [True, False])
def test_epoch_seconds_and_micros_are_refused_and_millis_taken(c_parser, monkeypatch):
  seconds, millis = DAY_MS // 1000 + 60, DAY_MS + 60_000
  rows, rejected = _parse([raw_event(1, ts=seconds), raw_event(2, ts=millis),
                           raw_event(3, ts=millis * 1000), raw_event(4, server_ts=seconds)],
                          c_parser, monkeypatch)
  assert [r['insert_id'] for r in rows] == [uuid(2)]
  assert rows[0]['ts'] == datetime.datetime(2023, 1, 1, 0, 1, tzinfo=datetime.timezone.utc)
  assert [(r['source_row'], r['reason']) for r in rejected] == [
      (1, 'invalid_ts'), (3, 'invalid_ts'), (4, 'invalid_field_type')]
  assert f'ts is {seconds}, epoch seconds by its size; send epoch milliseconds ({seconds * 1000})' \
      in rejected[0]['detail']
  assert 'epoch microseconds' in rejected[1]['detail'] and 'server_ts' in rejected[2]['detail']


@pytest.mark.parametrize('c_parser', [True, False])
def test_a_lone_surrogate_is_explained_as_such(c_parser, monkeypatch):
  key = lambda n, text: raw_event(n, event_key='@').replace(b'"@"', text)
  _, rejected = _parse([key(1, b'"x\\ud800"'), key(2, b'"\\udc00y"'), key(3, b'"\\\\ud800"')],
                       c_parser, monkeypatch)   # 3: a backslash, then the text ud800
  assert [(r['source_row'], r['reason']) for r in rejected] == [(1, 'invalid_text'), (2, 'invalid_text')]
  assert all('truncated' not in r['detail'] and 'surrogate' in r['detail'] for r in rejected)
  assert '\\ud800' in rejected[0]['detail'] and '\\udc00' in rejected[1]['detail']


def test_two_runs_of_other_days_share_the_arrival_day_of_their_dead_letters(tmp_path):
  """Malformed rows are filed under their file's arrival day, which two batch runs of other
  days share: the second waits for the first (stopped holding that day) instead of refusing,
  and the arrival day ends with both runs' dead letters."""
  import signal
  import subprocess
  import sys
  import time
  from tests.conftest import ROOT
  from transforms.lake.commit import STOP_AT
  lake, arrived = str(tmp_path / 'lake'), datetime.datetime(2023, 6, 1, 12, tzinfo=datetime.timezone.utc)
  paths = []
  for k, day_ms in enumerate((DAY_MS, DAY_MS + 86_400_000)):
    path = lines(tmp_path / f'raw{k}.jsonl', [raw_event(10 * k + n, ts=day_ms + n) for n in range(3)]
                 + [b'{"insert_id": "cut sho', b'[1, 2]'])
    os.utime(path, (arrived.timestamp(), arrived.timestamp()))
    paths.append(path)

  def start(path: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'pipelines.ingest', '--input', path, '--lake', lake],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
  first = start(paths[0], {STOP_AT: 'staged:_rejected/dt=2023-06-01'})
  try:
    deadline = time.monotonic() + 300
    while open(f'/proc/{first.pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'T':
      assert first.poll() is None and time.monotonic() < deadline, first.communicate()
      time.sleep(0.3)
    second = start(paths[1], {})
    told = []   # its stderr up to the line that says it waits (or to its end)
    for line in iter(second.stderr.readline, ''):
      told.append(line)
      if 'waiting up to' in line:
        break
    assert 'waiting up to 600 s for' in told[-1] and 'dt=2023-06-01' in told[-1], told
    assert second.poll() is None
  finally:
    os.kill(first.pid, signal.SIGCONT)
  for proc in (first, second):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
  assert ids(lake, '2023-06-01', rejected=True) == [4, 4, 5, 5]
  assert ids(lake, DT) == sorted(uuid(n) for n in range(3))
  assert ids(lake, '2023-01-02') == sorted(uuid(n) for n in range(10, 13))
