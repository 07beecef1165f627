"""Streaming ingest: raw-event parsing, server days across DST, and the pane/commit policy driven
by TestStream (early, on-time, late and too-late rows across two days and a DST change)."""
import bz2
import collections
import dataclasses
import datetime
import gzip
import json
import lzma
import os
import time
import uuid
import zoneinfo

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_stream import TestStream as Stream
from apache_beam.utils.timestamp import Timestamp

from pipelines import ingest as ingest_pipeline
from pipelines import samples
from schemas.reports import Manifest
from schemas.reasons import Reason
from transforms import ingest, read_raw, validate
from transforms.kernels import raw
from transforms.stores import fs
from transforms.kernels.days import day_bounds, server_days

pytestmark = pytest.mark.engine

NY = zoneinfo.ZoneInfo('America/New_York')
DAY_A, DAY_B = '2023-03-11', '2023-03-12'    # B is 23 hours long in New York


def event(server_ms: int, insert_id: str | None = None, **fields) -> bytes:
  body = {'insert_id': insert_id or str(uuid.uuid4()), 'event_key': 'purchase',
          'ts': server_ms - 500, 'server_ts': server_ms,
          'identifiers': {'id': 'u1', 'device_id': 'd1'}, 'metric_value': '1.5',
          'user_properties': {'Grade': 'gold'}, 'event_properties': {'n': 3},
          'hackle_properties': {'osname': 'iOS', 'appversion': '1.0'}}
  body.update(fields)
  return json.dumps(body).encode()


def chunk(payloads: list[bytes], arrival_ms: int | None) -> raw.RawChunk:
  return raw.RawChunk(source=['test'] * len(payloads), rows=list(range(1, len(payloads) + 1)),
                      payloads=payloads, received_ms=arrival_ms or 0,
                      arrival_ms=None if arrival_ms is None else [arrival_ms] * len(payloads))


def test_days_follow_the_zone_across_daylight_saving():
  start_b, end_b = day_bounds(DAY_B, NY)
  assert (end_b - start_b) == 23 * 3_600_000
  start_fall, end_fall = day_bounds('2023-11-05', NY)
  assert (end_fall - start_fall) == 25 * 3_600_000
  days, index = server_days(np.array([start_b - 1, start_b, end_b - 1, end_b]), NY)
  assert [days[i] for i in index] == [DAY_A, DAY_B, DAY_B, '2023-03-13']


def test_raw_events_parse_into_the_contract_and_bad_payloads_are_explained():
  ms = day_bounds(DAY_A, NY)[0] + 1000
  payloads = [
      event(ms, metric_value=12.5, event_properties={'n': 3, 'ok': True, 'list': [1]}),
      event(ms, ts='2023-03-11T05:00:01.234Z', metric_value='123456789012.123456'),
      b'{"insert_id": ',                                  # cut short
      b'[1, 2]',                                          # not an object
      event(ms, event_key=5),                             # wrong type
      event(ms, identifiers='id=1'),                      # map that is not an object
      event(ms, ts='yesterday'),                          # unreadable ts
      event(ms).replace(b'"purchase"', b'"\xff"'),         # not UTF-8
  ]
  batch, rejected, _ = raw.parse_chunk(chunk(payloads, None))
  assert batch.num_rows == 2
  assert batch.column('metric_value').to_pylist() == ['12.5', '123456789012.123456']
  assert dict(batch.column('event_properties')[0].as_py()) == {'n': '3', 'ok': 'true', 'list': '[1]'}
  assert batch.column('ts')[1].as_py() == datetime.datetime(2023, 3, 11, 5, 0, 1, 234000,
                                                            tzinfo=datetime.timezone.utc)
  got = {(r['source_row'], r['reason']) for r in rejected.to_pylist()}
  assert got == {(3, 'invalid_json'), (4, 'invalid_json'), (5, 'invalid_field_type'),
                 (6, 'invalid_field_type'), (7, 'invalid_ts'), (8, 'invalid_text')}
  assert {r['original'] for r in rejected.to_pylist()} >= {'{"insert_id": ', '[1, 2]'}
  assert 'event_key is a JSON number' in rejected.to_pylist()[2]['detail']


@pytest.mark.parametrize('block_bytes', [7, 64, 8 << 20])
@pytest.mark.parametrize('suffix', ['.jsonl', '.jsonl.gz'])
@pytest.mark.parametrize('newline', [b'\n', b'\r\n'])
def test_json_lines_keep_their_line_numbers_across_blocks_crlf_and_blank_lines(
    tmp_path, monkeypatch, block_bytes, suffix, newline):
  monkeypatch.setattr(read_raw, 'BLOCK_BYTES', block_bytes)
  monkeypatch.setattr(read_raw, 'CHUNK_ROWS', 3)
  lines = [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', b'{"d": 4}', b'{"e": 5}', b'{"f": 6}', b'{"g": 7}']
  for blank, at in ((b'', 1), (b'   ', 3)):   # blank lines count but are skipped
    text = newline.join(lines[:at] + [blank] + lines[at:])
    path = tmp_path / f'x{at}{suffix}'
    path.write_bytes(gzip.compress(text) if suffix.endswith('.gz') else text)
    meta = beam.io.filesystems.FileSystems.match([str(path)])[0].metadata_list[0]
    chunks = list(read_raw.ReadJsonLines(arrival=False).process(meta))
    assert max(len(c) for c in chunks) <= 3
    got = [(row, payload) for c in chunks for row, payload in zip(c.rows, c.payloads)]
    assert got == [(i + 1 + (i >= at), line) for i, line in enumerate(lines)]
    assert {s for c in chunks for s in c.source} == {str(path)}


COMPRESS = {'.gz': gzip.compress, '.bz2': bz2.compress, '.xz': lzma.compress}


@pytest.mark.parametrize('suffix', sorted(COMPRESS))
def test_a_damaged_compressed_file_keeps_the_lines_before_and_dead_letters_the_rest(
    tmp_path, monkeypatch, suffix):
  """Beam's own decompression returns a truncated file's beginning as if it were all of it."""
  monkeypatch.setattr(read_raw, 'BLOCK_BYTES', 4096)
  ms = day_bounds(DAY_A, NY)[0] + 1000
  lines = [event(ms) for _ in range(3000)]
  whole = COMPRESS[suffix](b'\n'.join(lines) + b'\n')
  read = lambda name: list(read_raw.ReadJsonLines(arrival=False).process(
      beam.io.filesystems.FileSystems.match([str(tmp_path / name)])[0].metadata_list[0]))
  (tmp_path / f'whole{suffix}').write_bytes(whole + COMPRESS[suffix](lines[0] + b'\n'))   # 2 streams
  (tmp_path / f'cut{suffix}').write_bytes(whole[:len(whole) * 2 // 3])
  (tmp_path / f'bad{suffix}').write_bytes(b'not compressed at all')

  assert [p for c in read(f'whole{suffix}') for p in c.payloads] == lines + lines[:1]
  cut = read(f'cut{suffix}')
  payloads = [p for c in cut[:-1] for p in c.payloads]
  assert payloads == lines[:len(payloads)] and len(payloads) < len(lines)
  assert cut[-1].rows == [len(payloads) + 1] and 'ends early' in cut[-1].unreadable
  batch, rejected, _ = raw.parse_chunk(dataclasses.replace(cut[-1], received_ms=ms))
  assert batch.num_rows == 0
  assert rejected.to_pylist() == [{
      'reason': 'unreadable_file', 'detail': Reason.UNREADABLE_FILE.explanation + '; '
      + cut[-1].unreadable, 'source_file': str(tmp_path / f'cut{suffix}'),
      'source_row': len(payloads) + 1, 'original': ''}]
  [bad] = read(f'bad{suffix}')
  assert bad.rows == [1] and 'not valid' in bad.unreadable


def test_a_payload_without_any_time_is_rejected_under_the_day_it_arrived():
  arrived = day_bounds(DAY_B, NY)[0] + 5000
  batch, rejected, _ = raw.parse_chunk(chunk([b'{"insert_id": "x"}'], arrived))
  assert batch.column(raw.SERVER_MS).to_pylist() == [arrived]
  assert validate.validate_batch(batch, 'production').rejected.column('reason').to_pylist() == [
      'invalid_insert_id']


def test_a_chunk_parses_as_its_payloads_do_one_by_one():
  """Columns of mixed JSON types (ts as millis and text, metric_value as number and text, maps
  with and without non-string values) take the chunk-wide paths; one payload alone takes the
  uniform ones. Both must give the same lake rows and the same rejections (a double's text may
  differ, 0.0 or 0, not its value)."""
  ms = day_bounds(DAY_A, NY)[0] + 1000
  payloads = samples.raw_events(datetime.date(2023, 3, 11), 300, seed=5) + [
      event(ms, event_properties={'n': 3, 'ok': True, 'none': None}, metric_value=7),
      event(ms, identifiers=None), event(ms, user_properties=[['k', 'v']]),
      event(ms, ts=2 ** 70), event(ms, server_ts=-1), event(ms, metric_value=True),
      event(ms, ts=1.5), event(ms, ts='2023-03-11T05:00:01Z', metric_value=12.5)]
  whole, whole_rejected, _ = raw.parse_chunk(chunk(payloads, ms))
  parts = [raw.parse_chunk(raw.RawChunk(source=['test'], rows=[i + 1], payloads=[p],
                                        received_ms=ms, arrival_ms=[ms]))[:2]
           for i, p in enumerate(payloads)]
  assert whole.num_rows > 250 and whole_rejected.num_rows > 6
  assert whole_rejected.to_pylist() == [r for _, b in parts for r in b.to_pylist()]

  checked = [validate.validate_batch(b, 'production') for b in [whole] + [b for b, _ in parts]]
  for kind in ('valid', 'rejected'):
    assert getattr(checked[0], kind).to_pylist() == [
        r for c in checked[1:] for r in getattr(c, kind).to_pylist()]


@pytest.mark.parametrize('zone', ['UTC', 'America/New_York'])   # the rows on one day; on two
def test_a_days_part_is_validation_of_its_rows_without_the_rejected_and_too_late_ones(zone):
  """SplitDays leaves the payloads its parser rejected and the rows too late in the batch, for
  validation to skip (one copy of the rows, not three). Each day's part must be what validating
  the day's other rows alone gives: the same rows, rejections and counts, and no map key
  collision counted for a skipped row."""
  tz = zoneinfo.ZoneInfo(zone)
  start, end = day_bounds(DAY_A, tz)
  colliding = {'Grade': 'gold', 'grade': 'silver'}
  payloads = samples.raw_events(datetime.date(2023, 3, 11), 200, seed=9) + [
      event(start + 10, user_properties=colliding),                  # valid, one collision
      event(start + 20, ts=True, user_properties=colliding),         # parser: wrong type
      b'{"insert_id": "cut', b'[1, 2]',                              # parser: not objects
      event(start + 30, insert_id='no', user_properties=colliding),  # validation rejects it
      event(start + 40, user_properties=colliding),                  # too late
      event(start + 50, user_properties=colliding)]                  # too late
  arrival = [start] * (len(payloads) - 2) + [end + 1, end + 2]
  source = raw.RawChunk(source=['f'] * len(payloads), rows=list(range(1, len(payloads) + 1)),
                        payloads=payloads, received_ms=start + 60, arrival_ms=arrival)
  split = ingest.SplitDays(zone, 'production', allowed_lateness_ms=0)
  split.setup()
  split.start_bundle()
  parts = {dt: part for (dt, _), part in split.process(source) if part.valid.num_rows}
  assert list(parts) == ([DAY_A] if zone == 'UTC' else ['2023-03-10', DAY_A])

  batch, _, _ = raw.parse_chunk(source)   # the rows the parser took; of them, those in time
  server, arrived = np.asarray(batch.column(raw.SERVER_MS)), np.asarray(batch.column(raw.ARRIVAL_MS))
  for dt, got in parts.items():
    first, last = day_bounds(dt, tz)
    in_day = (server >= first) & (server < last)
    on_time = arrived <= last
    want = validate.validate_batch(batch.filter(on_time & in_day), 'production',
                                   datetime.date.fromisoformat(dt))
    late = int((~on_time & in_day).sum())
    assert late == (2 if dt == DAY_A else 0)
    assert got.valid.to_pylist() == want.valid.to_pylist()
    assert got.rejected.to_pylist()[late:] == want.rejected.to_pylist()
    assert got.rejected.column('reason').to_pylist()[:late] == ['too_late'] * late
    assert got.stats.rows_in == want.stats.rows_in + late
    assert got.stats.rejected == want.stats.rejected + collections.Counter(too_late=late)
    assert got.stats.flags == want.stats.flags
  # the valid row's and the rejected one's (rejected rows count, as in the import)
  assert want.stats.flags['map_key_collision'] == 2 and want.stats.rejected['invalid_insert_id'] == 1


def _lake_rows(lake: str, dt: str, rejected: bool = False) -> list[dict]:
  root = fs.join(lake, '_rejected') if rejected else lake
  manifest = Manifest.model_validate_json(
      fs.read_bytes(fs.join(fs.partition_dir(root, dt), '_manifest.json')))
  rows = []
  for f in manifest.files:
    rows.extend(pq.read_table(fs.join(fs.partition_dir(root, dt), f.name)).to_pylist())
  return rows


class Snapshot(beam.DoFn):
  """Records, at each report, what a reader of the lake would see at that moment."""
  seen = []

  def __init__(self, lake: str):
    self._lake = lake

  def process(self, report):
    d = fs.partition_dir(self._lake, report.dt)
    files = sorted(p.rsplit('/', 1)[-1] for p in fs.list_files(d)) if fs.exists(d) else []
    manifest = fs.join(d, '_manifest.json')
    version = Manifest.model_validate_json(fs.read_bytes(manifest)).version \
        if fs.exists(manifest) else None
    Snapshot.seen.append((report.dt, report.status, report.rows_written, report.rows_rejected,
                          report.rows_duplicate, '_SUCCESS' in files, version,
                          len([f for f in files if f.endswith('.parquet')])))


def test_early_on_time_late_and_too_late_rows_across_two_days_and_a_dst_change(tmp_path):
  lake = str(tmp_path / 'lake')
  start_a, end_a = day_bounds(DAY_A, NY)
  start_b, end_b = day_bounds(DAY_B, NY)
  hour = 3_600_000
  dup = str(uuid.uuid4())
  first = [event(start_a + i * 1000) for i in range(100)] + [
      event(start_a + 5000, insert_id=dup, ts=start_a + 4000),
      event(start_a + 6000, insert_id=dup, ts=start_a + 3000)]   # earlier ts wins in a pane
  second = [event(start_a + 7200_000 + i) for i in range(50)] + [event(start_a + 9000, insert_id=dup)] \
      + [event(start_b + 60_000 + i) for i in range(60)] + [event(end_b - 1)]
  late = [event(end_a - 10) for _ in range(10)]
  too_late = [event(end_a - 20) for _ in range(5)]
  # Early panes by size here (--flush_rows); processing-time flushes race TestStream's clock, so
  # the Pub/Sub test covers them. Without a flush interval, late rows are written at the close.
  stream = (Stream()
            .advance_watermark_to(Timestamp(micros=start_a * 1000))
            .add_elements([chunk(first, start_a + 200_000)])                # early pane of A
            .add_elements([chunk(second, start_b + 100_000)])
            .advance_watermark_to(Timestamp(micros=end_a * 1000))          # A on time
            .add_elements([chunk(late, end_a + hour)])                      # A late, within 1d
            .advance_watermark_to(Timestamp(micros=end_b * 1000))          # B on time
            .advance_watermark_to(Timestamp(micros=(end_a + 25 * hour) * 1000))  # A closes
            .add_elements([chunk(too_late, end_a + 25 * hour)])             # A too late
            .advance_watermark_to_infinity())
  settings = ingest.WriteSettings(lake=lake, zone=NY.key, run_id='r1',
                                  allowed_lateness_ms=24 * hour, flush_interval_s=None,
                                  flush_rows=100, max_rows_per_file=1_000_000)
  Snapshot.seen = []
  with beam.Pipeline(runner='BundleBasedDirectRunner', argv=['--streaming']) as p:
    _ = (p | stream | ingest.IngestEvents(settings, 'production')
         | beam.ParDo(Snapshot(lake)))

  a = [s for s in Snapshot.seen if s[0] == DAY_A]
  b = [s for s in Snapshot.seen if s[0] == DAY_B]
  # (dt, status, written, rejected, duplicates, _SUCCESS, manifest version, files)
  assert a == [
      (DAY_A, 'open', 101, 0, 1, False, None, 1),         # early: files land, no _SUCCESS
      (DAY_A, 'published', 151, 0, 2, True, 1, 2),       # on time: rest + manifest + _SUCCESS
      (DAY_A, 'published', 161, 0, 2, True, 2, 3),       # late: one more file, manifest v2
      (DAY_A, 'published', 161, 5, 2, True, 3, 3),       # too late: dead-lettered, not written
  ]
  assert b == [(DAY_B, 'published', 61, 0, 0, True, 1, 1)]
  rows_a = _lake_rows(lake, DAY_A)
  assert len(rows_a) == 161 and len({r['insert_id'] for r in rows_a}) == 161
  kept = [r for r in rows_a if r['insert_id'] == dup]
  assert kept[0]['ts'].timestamp() * 1000 == start_a + 3000
  assert all(dict(r['user_properties']) == {'grade': 'gold'} for r in rows_a)
  dead = _lake_rows(lake, DAY_A, rejected=True)
  assert [r['reason'] for r in dead] == ['too_late'] * 5
  assert json.loads(dead[0]['original'])['server_ts'] == end_a - 20


def test_batch_jsonl_ingest_equals_streaming(tmp_path):
  payloads = samples.raw_events(datetime.date(2023, 1, 1), 3000, seed=3)
  (tmp_path / 'in').mkdir()
  half = len(payloads) // 2
  (tmp_path / 'in' / 'a.jsonl').write_bytes(b'\n'.join(payloads[:half]) + b'\n')
  with gzip.open(tmp_path / 'in' / 'b.jsonl.gz', 'wb') as f:
    f.write(b'\n'.join(payloads[half:]) + b'\n')
  batch_lake = str(tmp_path / 'batch')
  day = tmp_path / 'batch' / 'dt=2023-01-01'
  for run_id, flags in (('b1', []), ('b2', []), ('b3', ['--replace_days'])):
    assert ingest_pipeline.run(['--input', str(tmp_path / 'in' / '*'), '--lake', batch_lake,
                                '--run_id', run_id, *flags]) == 0
    parts = {name.split('-')[1] for name in os.listdir(day) if name.startswith('part-')}
    assert parts == {'b1' if run_id == 'b2' else run_id}   # a rerun adds nothing; b3 replaces
  b3 = json.loads((tmp_path / 'batch' / '_runs' / 'ingest-b3' / 'dt=2023-01-01.json').read_text())
  assert b3['rows_replaced'] == b3['rows_written'] > 2800

  stream_lake = str(tmp_path / 'stream')
  settings = ingest.WriteSettings(lake=stream_lake, zone='UTC', run_id='s1',
                                  allowed_lateness_ms=86_400_000, flush_interval_s=300,
                                  flush_rows=1_000_000, max_rows_per_file=1_000_000)
  end = day_bounds('2023-01-01', zoneinfo.ZoneInfo('UTC'))[1]
  stream = (Stream().advance_processing_time(int(time.time()))
            .add_elements([raw.RawChunk(source=[str(tmp_path / 'in' / 'a.jsonl')] * half,
                                        rows=list(range(1, half + 1)), payloads=payloads[:half],
                                        arrival_ms=[end - 1] * half)])
            .add_elements([raw.RawChunk(source=[str(tmp_path / 'in' / 'b.jsonl.gz')] * (len(payloads) - half),
                                        rows=list(range(1, len(payloads) - half + 1)),
                                        payloads=payloads[half:], arrival_ms=[end - 1] * (len(payloads) - half))])
            .advance_watermark_to_infinity())
  with beam.Pipeline(runner='BundleBasedDirectRunner', argv=['--streaming']) as p:
    _ = p | stream | ingest.IngestEvents(settings, 'production')

  def content(lake: str) -> list:
    return sorted(json.dumps(r, default=str, sort_keys=True) for r in _lake_rows(lake, '2023-01-01'))
  assert len(content(batch_lake)) > 2800
  assert content(batch_lake) == content(stream_lake)


def test_a_batch_ingest_refuses_a_day_another_run_holds_and_leaves_it_published(tmp_path):
  """Batch ingest takes each day's lock as the import does: run while an import holds the day, it
  stops with exit 4 naming the lock, and the day it would have added to stays published and whole."""
  from tests.conftest import run_cli
  from transforms.lake import locks
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'a.jsonl').write_bytes(
      b'\n'.join(samples.raw_events(datetime.date(2023, 1, 1), 500, seed=4)) + b'\n')
  lake = str(tmp_path / 'lake')
  args = ['pipelines.ingest', '--input', str(tmp_path / 'in' / 'a.jsonl'), '--lake', lake]
  run_cli(*args, '--run_id', 'i1')
  day = tmp_path / 'lake' / 'dt=2023-01-01'
  before = {n: (day / n).read_bytes() for n in os.listdir(day)}
  assert '_SUCCESS' in before and not os.listdir(tmp_path / 'lake' / '_eventferry' / 'locks')
  locks.acquire(lake, 'dt=2023-01-01', 'import-run-7', 'import of dt=2023-01-01 into this lake')
  proc = run_cli(*args, '--run_id', 'i2', check=False)
  assert proc.returncode == 4, proc.stderr[-2000:]
  assert 'dt=2023-01-01.lock' in proc.stderr and 'import-run-7' in proc.stderr
  assert {n: (day / n).read_bytes() for n in os.listdir(day)} == before
  run_cli(*args, '--run_id', 'i3', '--break_lock', 'import-run-7')   # that run died: take over
  assert sorted(n for n in os.listdir(day) if n.startswith('part-')) == ['part-i1-00000-000.parquet']
  assert not os.listdir(tmp_path / 'lake' / '_eventferry' / 'locks')


def test_ingest_flags_fail_fast(tmp_path):
  with pytest.raises(Exception, match='exactly one source'):
    ingest_pipeline.run(['--lake', str(tmp_path)])
  with pytest.raises(Exception, match='add --streaming'):
    ingest_pipeline.run(['--subscription', 'projects/p/subscriptions/s', '--lake', str(tmp_path)])
  with pytest.raises(Exception, match='matches no file'):
    ingest_pipeline.run(['--input', str(tmp_path / 'none*.jsonl'), '--lake', str(tmp_path)])
  with pytest.raises(Exception, match='--subscription .*projects/PROJECT/subscriptions/NAME'):
    ingest_pipeline.run(['--subscription', 'subs/x', '--lake', str(tmp_path), '--streaming'])
  with pytest.raises(Exception, match='--watch goes with --input'):
    ingest_pipeline.run(['--subscription', 'projects/p/subscriptions/s', '--watch', '1m',
                         '--lake', str(tmp_path), '--streaming'])


def test_the_raw_contract_is_printed_for_senders():
  from pipelines import schema
  text = schema.render('raw')
  assert '"server_ts"' in text and 'hackle_properties' in text
  assert 'too_late' in text and 'invalid_json' in text   # the reason codes a sender may meet
