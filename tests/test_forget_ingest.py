"""Ingest after a forget request: rows of forgotten users arriving later (batch files, or a
stream still open for late data) are dropped and counted, under the request's keys only. Inputs
are JSON lines written with the json module; the lake is read back with DuckDB."""
import datetime
import json
import os
import time
import zoneinfo

import apache_beam as beam
import duckdb
import pytest
from apache_beam.testing.test_stream import TestStream as Stream

from pipelines import ingest as ingest_pipeline
from tests.conftest import run_cli, uuid
from transforms import ingest
from transforms.kernels import raw
from transforms.kernels.days import day_bounds

pytestmark = pytest.mark.engine

DT = '2023-01-01'
DAY_MS = int(datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000)
ALICE, BOB = 'forget-alice-5a', 'forget-bob-6b'


def payload(n: int, identifiers: dict) -> bytes:
  return json.dumps({'insert_id': uuid(n), 'event_key': 'purchase', 'ts': DAY_MS + 3_600_000 + n,
                     'identifiers': {'id': f'user-{n}', 'device_id': f'DEV-{n}', **identifiers},
                     'hackle_properties': {'osname': 'iOS', 'appversion': '1.0'}}).encode()


def payloads() -> list[bytes]:
  """40 events: every 5th of ALICE (user_id), every 7th of BOB under 'id' (kept: the request
  names user_id only), every 9th of BOB under user_id (dropped)."""
  out = []
  for n in range(40):
    ids = {}
    if n % 5 == 0:
      ids = {'user_id': ALICE}
    elif n % 7 == 0:
      ids = {'id': BOB}
    elif n % 9 == 0:
      ids = {'user_id': BOB}
    out.append(payload(n, ids))
  return out


def dropped(p: bytes) -> bool:
  return json.loads(p)['identifiers'].get('user_id') in (ALICE, BOB)


def lake_rows(lake: str) -> list[str]:
  d = os.path.join(lake, f'dt={DT}')
  files = [os.path.join(d, f['name'])
           for f in json.load(open(os.path.join(d, '_manifest.json')))['files']]
  return sorted(r[0] for r in duckdb.sql(
      f'SELECT insert_id FROM read_parquet({files!r})').fetchall())


def forget_request(lake: str) -> None:
  os.makedirs(lake, exist_ok=True)
  proc = run_cli('pipelines.forget', '--lake', lake, '--user_id', ALICE, '--user_id', BOB,
                 '--identifier', 'user_id')
  assert 'finished' in proc.stdout


def test_batch_ingest_drops_and_counts_forgotten_users(tmp_path):
  lake = str(tmp_path / 'lake')
  forget_request(lake)
  events = payloads()
  (tmp_path / 'a.jsonl').write_bytes(b'\n'.join(events) + b'\n')
  assert ingest_pipeline.run(['--input', str(tmp_path / 'a.jsonl'), '--lake', lake,
                              '--run_id', 'i1']) == 0
  report = json.load(open(os.path.join(lake, '_runs', 'ingest-i1', f'dt={DT}.json')))
  expected = sorted(json.loads(p)['insert_id'] for p in events if not dropped(p))
  assert lake_rows(lake) == expected
  assert report['rows_forgotten'] == 40 - len(expected) and report['status'] == 'published'
  assert report['rows_in'] == 40 and report['rows_written'] == len(expected)
  for d, _, files in os.walk(lake):
    for f in files:
      data = open(os.path.join(d, f), 'rb').read()
      assert ALICE.encode() not in data, f
  assert BOB.encode() not in open(os.path.join(lake, '_eventferry', 'forget',
                                               os.listdir(os.path.join(lake, '_eventferry',
                                                                       'forget'))[0]), 'rb').read()


def test_a_stream_open_for_late_data_drops_forgotten_users(tmp_path):
  lake = str(tmp_path / 'lake')
  forget_request(lake)
  events = payloads()
  end = day_bounds(DT, zoneinfo.ZoneInfo('UTC'))[1]
  settings = ingest.WriteSettings(lake=lake, zone='UTC', run_id='s1',
                                  allowed_lateness_ms=86_400_000, flush_interval_s=300,
                                  flush_rows=1_000_000, max_rows_per_file=1_000_000)
  on_time, late = events[:20], events[20:]
  stream = (Stream().advance_processing_time(int(time.time()))
            .add_elements([raw.RawChunk(source=['sub'] * 20, rows=[0] * 20, payloads=on_time,
                                        arrival_ms=[end - 1] * 20)])
            .advance_watermark_to(end / 1000 + 1)
            .add_elements([raw.RawChunk(source=['sub'] * 20, rows=[0] * 20, payloads=late,
                                        arrival_ms=[end + 60_000] * 20)])
            .advance_watermark_to_infinity())
  with beam.Pipeline(runner='BundleBasedDirectRunner', argv=['--streaming']) as p:
    _ = p | stream | ingest.IngestEvents(settings, 'production')
  assert lake_rows(lake) == sorted(json.loads(x)['insert_id'] for x in events if not dropped(x))


def test_a_request_drops_new_events_only_for_its_retention(tmp_path):
  """--retention_days N: ingest drops the users' events of server days up to N days after the
  request's day, and keeps those of later days (counted by the model below, not the code)."""
  lake = str(tmp_path / 'lake')
  os.makedirs(lake)
  run_cli('pipelines.forget', '--lake', lake, '--user_id', ALICE, '--retention_days', '1')
  today = datetime.datetime.now(datetime.timezone.utc).date()
  days = [today + datetime.timedelta(k) for k in range(3)]   # within, last day of, after retention
  events, kept = [], {}
  for k, d in enumerate(days):
    ms = int(datetime.datetime(d.year, d.month, d.day, 12, tzinfo=datetime.timezone.utc)
             .timestamp() * 1000)
    for n in range(10):
      ids = {'user_id': ALICE} if n % 2 == 0 else {}
      body = json.loads(payload(100 * k + n, ids))
      body['ts'] = body['server_ts'] = ms + n
      events.append(json.dumps(body).encode())
      if not ids or d > today + datetime.timedelta(1):
        kept.setdefault(d.isoformat(), []).append(body['insert_id'])
  (tmp_path / 'a.jsonl').write_bytes(b'\n'.join(events) + b'\n')
  assert ingest_pipeline.run(['--input', str(tmp_path / 'a.jsonl'), '--lake', lake,
                              '--run_id', 'r1']) == 0
  for d in days:
    folder = os.path.join(lake, f'dt={d.isoformat()}')
    files = [os.path.join(folder, f['name'])
             for f in json.load(open(os.path.join(folder, '_manifest.json')))['files']]
    got = sorted(r[0] for r in duckdb.sql(f'SELECT insert_id FROM read_parquet({files!r})').fetchall())
    assert got == sorted(kept[d.isoformat()]), d
    report = json.load(open(os.path.join(lake, '_runs', 'ingest-r1', f'dt={d.isoformat()}.json')))
    assert report['rows_forgotten'] == 10 - len(kept[d.isoformat()])


def test_a_negative_retention_is_refused_in_one_line(tmp_path):
  proc = run_cli('pipelines.forget', '--lake', str(tmp_path), '--user_id', ALICE,
                 '--retention_days', '-1', check=False)
  assert proc.returncode == 2 and proc.stderr.strip().count('\n') == 0
  assert '--retention_days' in proc.stderr
