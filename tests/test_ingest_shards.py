"""Streaming ingest with each day spread over many (day, shard) keys, driven by TestStream: early,
on-time, late and too-late rows across two days and a DST change. Expected counts come from the
payloads as the json module reads them and the zone as zoneinfo says (not transforms/kernels/days.py);
the lake is read back with DuckDB from the files the manifests list."""
import collections
import datetime
import json
import os
import uuid
import zoneinfo

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.coders import PickleCoder
from apache_beam.testing.test_stream import TestStream as Stream
from apache_beam.utils.timestamp import Timestamp
from hypothesis import given, settings, strategies as st

from transforms import ingest
from transforms.kernels import raw, seen
from transforms.stores import fs

pytestmark = pytest.mark.engine

NY = zoneinfo.ZoneInfo('America/New_York')
DAY_A, DAY_B = '2023-03-11', '2023-03-12'    # B is 23 hours long in New York
HOUR = 3_600_000
SHARDS = 8


def bounds(dt: str) -> tuple[int, int]:
  day = datetime.date.fromisoformat(dt)
  start = datetime.datetime(day.year, day.month, day.day, tzinfo=NY)
  end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), NY)
  return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def event(server_ms: int, insert_id: str | None = None, **fields) -> bytes:
  body = {'insert_id': insert_id or str(uuid.uuid4()), 'event_key': 'purchase',
          'ts': server_ms - 500, 'server_ts': server_ms,
          'identifiers': {'id': 'u1', 'device_id': 'd1'},
          'hackle_properties': {'osname': 'iOS', 'appversion': '1.0'}}
  body.update(fields)
  return json.dumps(body).encode()


def chunk(name: str, payloads: list[bytes], arrival_ms: int) -> raw.RawChunk:
  return raw.RawChunk(source=[name] * len(payloads), rows=list(range(1, len(payloads) + 1)),
                      payloads=payloads, received_ms=arrival_ms,
                      arrival_ms=[arrival_ms] * len(payloads))


class Reports(beam.DoFn):
  seen: list = []

  def process(self, report):
    Reports.seen.append(report)


def expected(chunks: list[tuple[raw.RawChunk, bool]]) -> dict:
  """Per server day, from the payloads (json) and the zone (zoneinfo): rows in, written ids,
  duplicates, dead letters by reason, and the ids that arrived before the day ended."""
  days: dict = collections.defaultdict(lambda: {'in': 0, 'ids': set(), 'dup': 0,
                                                'rejected': collections.Counter(),
                                                'on_time': set()})
  for c, too_late in chunks:
    for payload, arrival in zip(c.payloads, c.arrival_ms):
      try:
        body = json.loads(payload)
      except ValueError:
        days[datetime.datetime.fromtimestamp(arrival / 1000, NY).date().isoformat()]['in'] += 1
        days[datetime.datetime.fromtimestamp(arrival / 1000, NY).date().isoformat()][
            'rejected']['invalid_json'] += 1
        continue
      dt = datetime.datetime.fromtimestamp(body['server_ts'] / 1000, NY).date().isoformat()
      day = days[dt]
      day['in'] += 1
      if too_late:
        day['rejected']['too_late'] += 1
      elif not isinstance(body['event_key'], str):
        day['rejected']['invalid_field_type'] += 1
      elif body['insert_id'] in day['ids']:
        day['dup'] += 1
      else:
        day['ids'].add(body['insert_id'])
        if arrival < bounds(dt)[1]:
          day['on_time'].add(body['insert_id'])
  return days


def lake_ids(lake: str, dt: str, rejected: bool = False) -> list:
  d = os.path.join(lake, '_rejected' if rejected else '', f'dt={dt}')
  if not os.path.exists(os.path.join(d, '_manifest.json')):   # a day without dead letters
    return []
  files = [os.path.join(d, f['name']) for f in json.load(open(os.path.join(d, '_manifest.json')))['files']]
  column = 'reason' if rejected else 'insert_id'
  return sorted(r[0] for r in duckdb.sql(f'SELECT {column} FROM read_parquet({files!r})').fetchall()) \
      if files else []


def test_many_shards_commit_each_day_once_when_all_are_on_time_and_count_every_row(
    tmp_path, monkeypatch):
  lake = str(tmp_path / 'lake')
  start_a, end_a = bounds(DAY_A)
  start_b, end_b = bounds(DAY_B)
  assert end_b - start_b == 23 * HOUR
  rng = np.random.default_rng(7)
  at = lambda start, n, span: [int(start + x) for x in rng.integers(0, span, n)]
  first = [event(ms) for ms in at(start_a, 400, 20 * HOUR)]
  first += first[:25]                                                 # resent: duplicates
  first += [event(start_a + 1000, event_key=5) for _ in range(6)]    # dead letters
  second = [event(ms) for ms in at(start_a, 150, 23 * HOUR)] + first[:10] + [b'{"cut": ']
  second += [event(ms) for ms in at(start_b, 200, 23 * HOUR)] + [event(start_b), event(end_b - 1)]
  late = [event(ms) for ms in at(end_a - HOUR, 60, HOUR)] + second[:5]
  too_late = [event(ms) for ms in at(start_a, 12, 24 * HOUR)]
  c1, c2 = chunk('f1', first, start_a + 21 * HOUR), chunk('f2', second, start_a + 22 * HOUR)
  c3, c4 = chunk('f3', late, end_a + HOUR), chunk('f4', too_late, end_a + 25 * HOUR)
  stream = (Stream()
            .advance_watermark_to(Timestamp(micros=start_a * 1000))
            .add_elements([c1])                                   # early panes of A (40 rows a key)
            .add_elements([c2])
            .advance_watermark_to(Timestamp(micros=end_a * 1000))             # A on time
            .add_elements([c3])                                               # A late, within 1d
            .advance_watermark_to(Timestamp(micros=end_b * 1000))             # B on time
            .advance_watermark_to(Timestamp(micros=(end_a + 25 * HOUR) * 1000))   # A closes
            .add_elements([c4])                                               # A too late
            .advance_watermark_to_infinity())
  published, manifests = collections.defaultdict(list), collections.defaultdict(list)
  write_bytes = fs.write_bytes

  def watching(path, data):   # the real write, logged: when each day is published, what it lists
    dt = path.rsplit('dt=', 1)[-1].split('/')[0]
    if path.endswith(f'{os.sep}dt={dt}{os.sep}_SUCCESS') and '_rejected' not in path:
      listed = json.load(open(os.path.join(os.path.dirname(path), '_manifest.json')))
      published[dt].append(listed['rows'])
    if path.endswith('_manifest.json') and f'lake{os.sep}dt=' in path:   # staged, then renamed
      manifests[dt].append((json.loads(data)['version'], json.loads(data)['rows']))
    return write_bytes(path, data)
  monkeypatch.setattr(fs, 'write_bytes', watching)
  settings_ = ingest.WriteSettings(lake=lake, zone=NY.key, run_id='r1', allowed_lateness_ms=24 * HOUR,
                                   flush_interval_s=None, flush_rows=40,
                                   max_rows_per_file=1_000_000, shards=SHARDS)
  Reports.seen = []
  with beam.Pipeline(runner='BundleBasedDirectRunner', argv=['--streaming']) as p:
    _ = (p | stream | ingest.IngestEvents(settings_, 'production') | beam.ParDo(Reports()))

  want = expected([(c1, False), (c2, False), (c3, False), (c4, True)])
  assert set(want) == {DAY_A, DAY_B}
  assert sum(d['in'] for d in want.values()) == len(first + second + late + too_late)
  for dt in (DAY_A, DAY_B):
    # published once (never unpublished after), then listing every row that arrived before the
    # day ended, from all shards; every later commit is one more manifest version
    assert published[dt] == [len(want[dt]['on_time'])]
    assert manifests[dt][0] == (1, len(want[dt]['on_time']))
    assert [v for v, _ in manifests[dt]] == list(range(1, len(manifests[dt]) + 1))
    reports = [r for r in Reports.seen if r.dt == dt]
    assert len([r for r in reports if r.status == 'published']) == len(manifests[dt])
    final = max(reports, key=lambda r: (r.status == 'published', r.rows_in))
    assert (final.status, final.rows_in, final.rows_written, final.rows_duplicate,
            final.rows_rejected) == ('published', want[dt]['in'], len(want[dt]['ids']),
                                     want[dt]['dup'], sum(want[dt]['rejected'].values()))
    assert final.rejected_by_reason == dict(want[dt]['rejected'])
    assert lake_ids(lake, dt) == sorted(want[dt]['ids'])
    assert lake_ids(lake, dt, rejected=True) == sorted(want[dt]['rejected'].elements())
  assert len(manifests[DAY_A]) > 2 and len(manifests[DAY_B]) == 1   # A: late and too late
  early = [r for r in Reports.seen if r.dt == DAY_A and r.status == 'open']
  assert len(early) >= SHARDS and all(r.rows_written < len(want[DAY_A]['on_time']) for r in early)
  names = json.load(open(os.path.join(lake, f'dt={DAY_A}', '_manifest.json')))['files']
  assert len({f['name'].rsplit('-', 1)[1] for f in names}) == SHARDS   # every shard wrote


class State:
  """Beam's state cells as the DoFn sees them (read, write / add, clear), kept in a list, with
  every write encoded by the coder the DoFn declares: the bytes a runner would store."""
  coder = PickleCoder()

  def __init__(self, bag: bool):
    self.values: list = []
    self.bag = bag
    self.written = 0

  def read(self):
    return list(self.values) if self.bag else (self.values[0] if self.values else None)

  def write(self, value):
    self.values = [value]
    self.written += len(self.coder.encode(value))

  def add(self, value):
    self.values.append(value)
    self.written += len(self.coder.encode(value))

  def clear(self):
    self.values = []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3000), max_size=400), min_size=1, max_size=60))
def test_seen_ids_drop_exactly_what_was_written_and_writes_follow_the_panes(panes):
  ids = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(3001)]
  base, fresh = State(bag=False), State(bag=True)
  written: set[str] = set()
  for pane in panes:
    distinct = list(dict.fromkeys(ids[n] for n in pane))   # a pane is de-duplicated first
    kept = seen.drop_seen(pa.table({'insert_id': distinct}), base, fresh)['insert_id'].to_pylist()
    assert kept == [i for i in distinct if i not in written]
    written.update(kept)
    assert len(fresh.read()) < seen.MAX_FRESH
  # amortized: at most (2 + 1 / RATIO) writes of 16 bytes per distinct id, plus each array's
  # header (about 150 bytes; at most two arrays a pane)
  assert base.written + fresh.written <= 16 * (2 + 1 / seen.RATIO) * len(written) + 2 * 200 * len(panes)


def test_seen_keys_are_the_ids_bytes_and_lookups_match_numpy():
  """uuid_keys against uuid.UUID(...).bytes (on a slice too: Arrow offsets); held_in, which
  searches 8-byte halves, against np.isin, on random ids and on ids that share first halves."""
  ids = [str(uuid.uuid4()) for _ in range(5000)]
  keys = seen.uuid_keys(pa.array(ids))
  assert keys.tobytes() == b''.join(uuid.UUID(i).bytes for i in ids)   # tolist() would cut trailing NULs
  assert seen.uuid_keys(pa.array(ids).slice(1234, 100)).tobytes() == keys[1234:1334].tobytes()
  rng = np.random.default_rng(3)
  shared = rng.integers(0, 256, (5000, 16), dtype=np.uint8)
  shared[:, :8] = shared[rng.integers(0, 20, 5000), :8]   # 20 first halves among 5000 ids
  for pool in (np.unique(keys), np.unique(np.ascontiguousarray(shared).view('S16').ravel())):
    known = pool[rng.random(len(pool)) < 0.5]
    for asked in (pool[rng.permutation(len(pool))], pool):   # shuffled, and in order
      assert (seen.held_in(known, asked) == np.isin(asked, known)).all()


def test_a_pane_writes_its_own_ids_not_the_days():
  """At 100k ids already held, a pane of 1,000 new ids writes about 16 kB, not 1.6 MB."""
  base, fresh = State(bag=False), State(bag=True)
  held = np.frombuffer(np.random.default_rng(1).bytes(16 * 100_000), dtype='S16')
  seen.replace(base, fresh, np.unique(held))
  before = base.written + fresh.written
  new = pa.table({'insert_id': [str(uuid.uuid4()) for _ in range(1000)]})
  assert seen.drop_seen(new, base, fresh).num_rows == 1000
  assert base.written + fresh.written - before < 16 * 1000 + 200


@pytest.mark.parametrize('flags', [['--day_shards', '0'], ['--day_shards', '5000']])
def test_day_shards_out_of_range_is_refused(tmp_path, flags):
  from pipelines import ingest as ingest_pipeline
  (tmp_path / 'a.jsonl').write_bytes(event(bounds(DAY_A)[0]) + b'\n')
  with pytest.raises(Exception, match='--day_shards'):
    ingest_pipeline.run(['--input', str(tmp_path / 'a.jsonl'), '--lake', str(tmp_path), *flags])


def test_a_batch_ingest_over_many_shards_adds_up_and_a_rerun_adds_nothing(tmp_path):
  """Each shard reads back the ids and dead letters of its own shard the day holds: pieces of an
  archive add up, a rerun (dead letters included) adds nothing, --replace_days replaces."""
  from tests.test_ingest_days import DT, ids, ingest as run, lines, raw_event
  lake = str(tmp_path / 'lake')
  bad = [raw_event(n, event_key=n) for n in range(900, 940)]
  first = lines(tmp_path / 'first.jsonl', [raw_event(n) for n in range(300)] + bad)
  second = lines(tmp_path / 'second.jsonl', [raw_event(n) for n in range(250, 500)])
  flags = ('--day_shards', '6')
  report = run(first, lake, *flags)
  assert (report['rows_in'], report['rows_written'], report['rows_rejected']) == (340, 300, 40)
  report = run(second, lake, *flags)
  assert (report['rows_written'], report['rows_duplicate']) == (200, 50)
  assert len(set(ids(lake))) == len(ids(lake)) == 500
  for piece, rows in ((first, 340), (second, 250)):
    report = run(piece, lake, *flags)
    assert (report['rows_written'], report['rows_in'], report['status']) == (0, rows, 'published')
  assert len(ids(lake)) == 500 and len(ids(lake, rejected=True)) == 40   # no dead letter twice
  report = run(second, lake, '--replace_days', *flags)
  assert len(ids(lake)) == 250 and report['rows_replaced'] == 500
  day = os.listdir(os.path.join(lake, f'dt={DT}'))
  assert len({n.rsplit('-', 1)[1] for n in day if n.startswith('part-')}) == 6
  assert not os.listdir(os.path.join(lake, '_eventferry', 'locks'))
