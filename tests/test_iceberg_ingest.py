"""Ingest into the Iceberg lake (--lake_format iceberg): the same raw events ingested into a Hive
lake are the oracle, read by DuckDB's read_parquet; the Iceberg tables are read by pyiceberg's
scan and DuckDB's iceberg extension (fixture duckdb_iceberg). Batch (JSON-lines files) and
streaming (TestStream: early, on-time, late and too-late rows): one snapshot per pane, the
on-time one marked complete, an open day refused by export with exit 3; reruns, a retried commit
and a run killed at each stage of its commit; export of an ingested day equals the Hive one.
"""
import datetime
import json
import os
import signal
import uuid

import apache_beam as beam
import duckdb
import pyarrow as pa
import pytest
from apache_beam.testing.test_stream import TestStream as Stream
from apache_beam.utils.timestamp import Timestamp

from pipelines import ingest as ingest_pipeline
from pipelines import options, samples
from tests.conftest import run_cli
from tests.icebergkit import duckdb_rows, hive_rows, load, pyiceberg_rows
from tests.test_ingest_pubsub import pubsub  # noqa: F401 - the emulator fixture (skips without it)
from transforms import ingest
from transforms.kernels import raw
from transforms.kernels.days import day_bounds

pytestmark = pytest.mark.engine

DT = '2023-01-01'
HOUR = 3_600_000


def raw_input(folder, events: int = 3000) -> str:
  """Raw events of DT as SDKs send them (some malformed, invalid or resent: pipelines/samples.py)
  in a plain and a gzip JSON-lines file; -> their glob."""
  import gzip
  os.makedirs(folder, exist_ok=True)
  payloads = samples.raw_events(datetime.date(2023, 1, 1), events, seed=3)
  half = len(payloads) // 2
  with open(os.path.join(folder, 'a.jsonl'), 'wb') as f:
    f.write(b'\n'.join(payloads[:half]) + b'\n')
  with gzip.open(os.path.join(folder, 'b.jsonl.gz'), 'wb') as f:
    f.write(b'\n'.join(payloads[half:]) + b'\n')
  return os.path.join(folder, '*')


def batch(glob: str, lake: str, *flags: str, run_id: str = 'r1') -> int:
  return options.main_guard(ingest_pipeline.run, ['--input', glob, '--lake', lake, '--run_id',
                                                  run_id, *flags])


def iceberg_flags(tmp_path) -> list[str]:
  return ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/catalog.db']


def rejected_rows_hive(lake: str, days: list[str]) -> set[tuple]:
  rows = set()
  for day in days:
    folder = os.path.join(lake, '_rejected', f'dt={day}')
    if os.path.isdir(folder):
      rows |= {(*r, day) for r in duckdb.sql(
          f"select reason, detail, source_file, source_row, original "
          f"from read_parquet('{folder}/*.parquet')").fetchall()}
  return rows


def rejected_rows_iceberg(tbl) -> set[tuple]:
  return {(r['reason'], r['detail'], r['source_file'], r['source_row'], r['original'],
           str(r['dt'])) for r in tbl.scan().to_arrow().to_pylist()}


def days_of(lake: str) -> list[str]:
  return sorted({n[3:] for root in (lake, os.path.join(lake, '_rejected')) if os.path.isdir(root)
                 for n in os.listdir(root) if n.startswith('dt=')})


def tables(warehouse: str, tmp_path):
  flags = iceberg_flags(tmp_path)[2:]
  return load(warehouse, flags), load(warehouse, flags + ['--table', 'eventferry.events_rejected'])


def summaries(tbl, dt: str | None = None) -> list[dict]:
  """The eventferry keys of each snapshot's summary (of day dt), oldest first."""
  out = []
  for s in tbl.snapshots():
    keys = {k: v for k, v in s.summary.additional_properties.items() if k.startswith('eventferry.')}
    if dt is None or keys.get('eventferry.dt') == dt:
      out.append(keys | {'added-records': int(s.summary['added-records'] or 0)})
  return out


# ---- batch ----------------------------------------------------------------------------------

def test_batch_ingest_holds_the_hive_lake_rows_and_a_rerun_adds_nothing(tmp_path, duckdb_iceberg):
  glob = raw_input(tmp_path / 'in')
  hive, warehouse = str(tmp_path / 'hive'), str(tmp_path / 'wh')
  assert batch(glob, hive) == 0
  assert batch(glob, warehouse, *iceberg_flags(tmp_path)) == 0
  days = days_of(hive)
  want = hive_rows(hive, [DT])
  assert len(want) > 2800
  events, rejected = tables(warehouse, tmp_path)
  assert pyiceberg_rows(events) == want
  assert duckdb_rows(duckdb_iceberg, events) == want
  assert rejected_rows_iceberg(rejected) == rejected_rows_hive(hive, days) != set()
  # one snapshot per day and table, complete; the report names the lake's
  assert [(s['eventferry.dt'], s['eventferry.complete']) for s in summaries(events)] == [(DT, 'true')]
  assert sorted(s['eventferry.dt'] for s in summaries(rejected)) == days
  report = json.load(open(os.path.join(warehouse, '_runs', 'ingest-r1', f'dt={DT}.json')))
  assert report['snapshot_id'] == events.current_snapshot().snapshot_id
  assert report['status'] == 'published' and report['rows_written'] == len(want)

  snapshots = (len(events.snapshots()), len(rejected.snapshots()))
  for run_id in ('r1', 'r2'):   # the same run again, and a new one: nothing new to add
    assert batch(glob, warehouse, *iceberg_flags(tmp_path), run_id=run_id) == 0
    again = json.load(open(os.path.join(warehouse, '_runs', f'ingest-{run_id}', f'dt={DT}.json')))
    assert (again['rows_written'], again['rows_duplicate']) == (0, report['rows_in'] - report['rows_rejected'])
    events, rejected = tables(warehouse, tmp_path)
    assert (len(events.snapshots()), len(rejected.snapshots())) == snapshots
    assert pyiceberg_rows(events) == want
    assert rejected_rows_iceberg(rejected) == rejected_rows_hive(hive, days)
  assert not os.listdir(os.path.join(warehouse, '_eventferry', 'locks'))


def test_batch_ingest_with_a_postgresql_catalog_and_an_s3_warehouse(tmp_path, request,
                                                                   duckdb_iceberg):
  from tests.icebergkit import catalog_flags, table_flags, warehouse_of
  glob = raw_input(tmp_path / 'in', 1500)
  hive = str(tmp_path / 'hive')
  warehouse, store_flags, s3 = warehouse_of('s3', tmp_path, request)
  flags = [*catalog_flags('postgres', tmp_path, request), *table_flags(tmp_path), *store_flags]
  assert batch(glob, hive) == 0
  for run_id in ('r1', 'r2'):   # a rerun adds nothing
    assert batch(glob, warehouse, '--lake_format', 'iceberg', *flags, run_id=run_id) == 0
    events = load(warehouse, flags)
    rejected = load(warehouse, [*catalog_flags('postgres', tmp_path, request), *store_flags,
                                '--table', table_flags(tmp_path)[1] + '_rejected'])
    assert pyiceberg_rows(events) == hive_rows(hive, [DT])
    assert duckdb_rows(duckdb_iceberg, events, s3) == hive_rows(hive, [DT])
    assert rejected_rows_iceberg(rejected) == rejected_rows_hive(hive, days_of(hive))
    assert [s['eventferry.dt'] for s in summaries(events)] == [DT]
  assert all(task.file.file_path.startswith('s3://') for task in events.scan().plan_files())


def test_replace_days_overwrites_the_day_and_counts_what_it_removed(tmp_path):
  hive, warehouse = str(tmp_path / 'hive'), str(tmp_path / 'wh')
  first = raw_input(tmp_path / 'first', 400)
  second = raw_input(tmp_path / 'second', 900)
  for lake, flags in ((hive, []), (warehouse, iceberg_flags(tmp_path))):   # the same sequence
    assert batch(first, lake, *flags) == 0
    assert batch(second, lake, *flags, '--replace_days', run_id='r2') == 0
  events, rejected = tables(warehouse, tmp_path)
  assert pyiceberg_rows(events) == hive_rows(hive, [DT])
  assert rejected_rows_iceberg(rejected) == rejected_rows_hive(hive, days_of(hive))
  report = json.load(open(os.path.join(warehouse, '_runs', 'ingest-r2', f'dt={DT}.json')))
  r1 = json.load(open(os.path.join(warehouse, '_runs', 'ingest-r1', f'dt={DT}.json')))
  hive_report = json.load(open(os.path.join(hive, '_runs', 'ingest-r2', f'dt={DT}.json')))
  assert report['rows_replaced'] == r1['rows_written'] == hive_report['rows_replaced'] > 0
  assert events.current_snapshot().summary.operation.value == 'overwrite'


def test_a_retried_commit_commits_nothing_twice(tmp_path):
  """A commit step retried after its snapshot landed (the worker died before Beam saw it end)
  finds its files listed and adds no snapshot; the same files with the mark it lacks add one."""
  from transforms.lake import iceberg, iceberg_panes
  warehouse = str(tmp_path / 'wh')
  assert batch(raw_input(tmp_path / 'in', 300), warehouse, *iceberg_flags(tmp_path)) == 0
  events, _ = tables(warehouse, tmp_path)
  lake = iceberg_panes.tables(iceberg.IcebergLake(
      f'sqlite:///{tmp_path}/catalog.db', iceberg.file_uri(warehouse)), 'r1')
  paths = iceberg_panes.held_paths(lake, 'lake', DT)
  before = events.current_snapshot().snapshot_id
  for complete in (True, False):   # a retried on-time commit, a retried early one
    again = iceberg_panes.commit_files(lake, 'lake', DT, paths, 'r1', complete=complete)
    assert again.snapshot_id == before and again.files == len(paths)
  assert len(load(warehouse, iceberg_flags(tmp_path)[2:]).snapshots()) == 1


def _dead_run(warehouse: str) -> str:
  from transforms.lake import locks
  held = [json.load(open(os.path.join(os.path.dirname(locks.lock_path(warehouse, 'dt=x')), n)))
          for n in os.listdir(os.path.dirname(locks.lock_path(warehouse, 'dt=x')))]
  return held[0]['run_id']


@pytest.mark.parametrize('stage', ['staged', 'rejected_committed', 'lake_committed'])
def test_a_run_killed_at_each_stage_then_rerun_equals_a_clean_run(tmp_path, stage):
  from transforms.lake.commit import KILL_AT
  glob = raw_input(tmp_path / 'in', 600)
  warehouse, clean = str(tmp_path / 'wh'), str(tmp_path / 'clean')
  flags = iceberg_flags(tmp_path)
  killed = run_cli('pipelines.ingest', '--input', glob, '--lake', warehouse, *flags,
                   '--run_id', 'k1', check=False, env={KILL_AT: f'{stage}:dt={DT}'})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  events, rejected = tables(warehouse, tmp_path)
  lake_snapshots = [s['eventferry.dt'] for s in summaries(events)]
  assert lake_snapshots == ([DT] if stage == 'lake_committed' else [])   # all of the day or none
  assert (DT in [s['eventferry.dt'] for s in summaries(rejected)]) == (stage != 'staged')
  rerun = run_cli('pipelines.ingest', '--input', glob, '--lake', warehouse, *flags,
                  '--run_id', 'k2', '--break_lock', _dead_run(warehouse), check=False)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  clean_flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/clean.db']
  assert batch(glob, clean, *clean_flags) == 0
  events, rejected = tables(warehouse, tmp_path)
  clean_events = load(clean, clean_flags[2:])
  clean_rejected = load(clean, clean_flags[2:] + ['--table', 'eventferry.events_rejected'])
  assert pyiceberg_rows(events) == pyiceberg_rows(clean_events) != set()
  assert rejected_rows_iceberg(rejected) == rejected_rows_iceberg(clean_rejected)
  assert [s['eventferry.dt'] for s in summaries(events)] == [DT]   # committed once
  assert not os.listdir(os.path.join(warehouse, '_eventferry', 'locks'))


def _day_input(folder, day: str, events: int, seed: int) -> str:
  """Raw events of `day` only: none malformed (those are filed under the day they arrived,
  which two runs would then share and one of them would find locked)."""
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f'{day}.jsonl')
  payloads = samples.raw_events(datetime.date.fromisoformat(day), events, seed=seed, malformed=0)
  with open(path, 'wb') as f:
    f.write(b'\n'.join(payloads) + b'\n')
  return path


def test_panes_of_eight_days_committed_at_once_all_land(tmp_path):
  """Eight threads commit a pane of eight days into one table at the same moment: each commit
  that meets a newer snapshot is redone from it, and every day lands once with its files."""
  import threading
  from transforms.lake import iceberg, iceberg_panes
  days = [f'2023-04-{d:02d}' for d in range(1, 9)]
  source = str(tmp_path / 'source')
  for i, day in enumerate(days):
    _day_input(tmp_path / 'in', day, 40, seed=i)
  assert batch(str(tmp_path / 'in' / '*'), source, *iceberg_flags(tmp_path)) == 0
  written = iceberg_panes.tables(iceberg.IcebergLake(
      f'sqlite:///{tmp_path}/catalog.db', iceberg.file_uri(source)), 'r1')
  paths = {day: iceberg_panes.held_paths(written, 'lake', day) for day in days}
  target = iceberg_panes.tables(iceberg.IcebergLake(
      f'sqlite:///{tmp_path}/target.db', iceberg.file_uri(str(tmp_path / 'target'))), 'p1')
  barrier, errors = threading.Barrier(len(days)), []

  def commit(day):
    try:
      barrier.wait()
      iceberg_panes.commit_files(target, 'lake', day, paths[day], 'p1', complete=True,
                                 labels={iceberg_panes.SNAPSHOT_PANE: '0'})
    except Exception as e:  # noqa: BLE001 - reported below
      errors.append(e)
  threads = [threading.Thread(target=commit, args=(d,)) for d in days]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []
  assert {d: iceberg_panes.held_paths(target, 'lake', d) for d in days} == paths
  tbl = iceberg.table(target.lake)
  assert sorted(s.summary['eventferry.dt'] for s in tbl.snapshots()) == days
  assert pyiceberg_rows(tbl) == pyiceberg_rows(iceberg.table(written.lake))


def test_two_batch_ingests_of_other_days_at_once_both_land(tmp_path):
  import subprocess
  import sys
  from tests.conftest import ROOT
  hive, warehouse = str(tmp_path / 'hive'), str(tmp_path / 'wh')
  inputs = [_day_input(tmp_path / f'in{i}', day, 500, seed=i)
            for i, day in enumerate(('2023-05-01', '2023-05-02'))]
  procs = [subprocess.Popen([sys.executable, '-m', 'pipelines.ingest', '--input', path, '--lake',
                             warehouse, *iceberg_flags(tmp_path), '--run_id', f'p{i}'], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, path in enumerate(inputs)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
  for path in inputs:
    assert batch(path, hive, run_id=os.path.basename(path)) == 0
  events, rejected = tables(warehouse, tmp_path)
  assert pyiceberg_rows(events) == hive_rows(hive, ['2023-05-01', '2023-05-02'])
  assert rejected_rows_iceberg(rejected) == rejected_rows_hive(hive, days_of(hive))


def test_a_hive_ingest_never_imports_pyiceberg(tmp_path):
  import subprocess
  import sys
  from tests.conftest import ROOT
  path = _day_input(tmp_path / 'in', DT, 20, seed=1)
  script = ('import sys; from pipelines import ingest, options; '
            f'code = options.main_guard(ingest.run, ["--input", "{path}", "--lake", "{tmp_path}/lake"]); '
            'print(code, "pyiceberg" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=True).stdout
  assert out.splitlines()[-1] == '0 False'


# ---- streaming ------------------------------------------------------------------------------

def event(server_ms: int, insert_id: str | None = None, **fields) -> bytes:
  """A raw event; its insert_id, unless given, follows from its fields (the same stream twice
  holds the same events)."""
  body = {'insert_id': insert_id or str(uuid.uuid5(uuid.NAMESPACE_OID, f'{server_ms} {fields}')),
          'event_key': 'purchase',
          'ts': server_ms - 500, 'server_ts': server_ms,
          'identifiers': {'id': 'u1', 'device_id': 'd1'}, 'metric_value': '1.5',
          'user_properties': {'Grade': 'gold'}, 'event_properties': {'n': 3},
          'hackle_properties': {'osname': 'iOS', 'appversion': '1.0'}}
  body.update(fields)
  return json.dumps(body).encode()


def chunk(payloads: list[bytes], arrival_ms: int) -> raw.RawChunk:
  return raw.RawChunk(source=['test'] * len(payloads), rows=list(range(1, len(payloads) + 1)),
                      payloads=payloads, received_ms=arrival_ms,
                      arrival_ms=[arrival_ms] * len(payloads))


class Reports(beam.DoFn):
  """The reports of day DAY_A: (status, rows written, the snapshot its commit made)."""
  seen: list = []

  def process(self, report):
    if report.dt == DAY_A:
      Reports.seen.append((report.status, report.rows_written, report.snapshot_id))


DAY_A, DAY_B = '2023-03-11', '2023-03-12'
START_A, END_A = day_bounds(DAY_A, datetime.timezone.utc)
START_B, END_B = day_bounds(DAY_B, datetime.timezone.utc)


def _stream() -> Stream:
  dup = str(uuid.uuid5(uuid.NAMESPACE_OID, 'dup'))
  first = [event(START_A + i * 1000) for i in range(100)] + [
      event(START_A + 5000, insert_id=dup, ts=START_A + 4000),
      event(START_A + 6000, insert_id=dup, ts=START_A + 3000)]   # earlier ts wins in a pane
  second = [event(START_A + 7200_000 + i) for i in range(50)] + [event(START_A + 9000, insert_id=dup)] \
      + [event(START_B + 60_000 + i) for i in range(60)] + [event(END_B - 1)] + [b'{"cut']
  late = [event(END_A - 10, str(uuid.uuid5(uuid.NAMESPACE_OID, f'late {i}'))) for i in range(10)]
  too_late = [event(END_A - 20, str(uuid.uuid5(uuid.NAMESPACE_OID, f'too late {i}'))) for i in range(5)]
  return (Stream()
          .advance_watermark_to(Timestamp(micros=START_A * 1000))
          .add_elements([chunk(first, START_A + 200_000)])                # early pane of A
          .add_elements([chunk(second, START_B + 100_000)])
          .advance_watermark_to(Timestamp(micros=END_A * 1000))           # A on time
          .add_elements([chunk(late, END_A + HOUR)])                       # A late, within 1d
          .advance_watermark_to(Timestamp(micros=END_B * 1000))           # B on time
          .advance_watermark_to(Timestamp(micros=(END_A + 25 * HOUR) * 1000))   # A closes
          .add_elements([chunk(too_late, END_A + 25 * HOUR)])              # A too late
          .advance_watermark_to_infinity())


def _run_stream(settings: ingest.WriteSettings, record=None) -> None:
  with beam.Pipeline(runner='BundleBasedDirectRunner', argv=['--streaming']) as p:
    reports = p | _stream() | ingest.IngestEvents(settings, 'production')
    if record is not None:
      _ = reports | beam.ParDo(record)


@pytest.mark.parametrize('shards', [1, 2])
def test_streaming_panes_are_snapshots_and_the_on_time_one_marks_the_day_complete(
    tmp_path, duckdb_iceberg, shards):
  from transforms.lake import iceberg, iceberg_panes
  hive, warehouse = str(tmp_path / 'hive'), str(tmp_path / 'wh')
  common = dict(zone='UTC', run_id='s1', allowed_lateness_ms=24 * HOUR, flush_interval_s=None,
                flush_rows=100, max_rows_per_file=1_000_000, shards=shards)
  _run_stream(ingest.WriteSettings(lake=hive, **common))
  lake = iceberg.IcebergLake(f'sqlite:///{tmp_path}/catalog.db', iceberg.file_uri(warehouse))
  Reports.seen = []
  _run_stream(ingest.WriteSettings(lake=warehouse, iceberg=iceberg_panes.tables(lake, 's1'), **common),
              Reports())
  events, rejected = tables(warehouse, tmp_path)
  want = hive_rows(hive, [DAY_A, DAY_B])
  assert len(want) == 161 + 61
  assert pyiceberg_rows(events) == want
  assert duckdb_rows(duckdb_iceberg, events) == want
  assert rejected_rows_iceberg(rejected) == rejected_rows_hive(hive, [DAY_A, DAY_B])
  assert {r[0] for r in rejected_rows_iceberg(rejected)} == {'too_late', 'invalid_json'}

  a = [(s['eventferry.complete'], s['added-records']) for s in summaries(events, DAY_A)]
  if shards == 1:   # early (complete=false), on time (true), late (true): one snapshot a pane
    assert a == [('false', 101), ('true', 50), ('true', 10)]
    assert [(s['eventferry.shard'], s['eventferry.pane']) for s in summaries(events, DAY_A)] == [
        ('0', '0'), ('0', '1'), ('0', '2')]
  else:   # a pane per shard: those before the day is on time are not complete, the rest are
    flags = [c for c, _ in a]
    assert flags == sorted(flags) and 'false' in flags and flags[-1] == 'true'
    assert sum(n for _, n in a) == 161
  assert [s['eventferry.complete'] for s in summaries(events, DAY_B)][-1] == 'true'
  too_late = [(s['eventferry.complete'], s['added-records']) for s in summaries(rejected, DAY_A)]
  assert {c for c, _ in too_late} == {'true'} and sum(n for _, n in too_late) == 5
  assert len(too_late) <= shards   # the too-late rows, after the close: a pane a shard
  # each report names its pane's snapshot: 'open' ones are not complete, 'published' ones are
  marks = {sn.snapshot_id: sn.summary['eventferry.complete'] for sn in events.snapshots()}
  assert [(st, marks[snapshot]) for st, _, snapshot in Reports.seen] == [
      (st, 'false' if st == 'open' else 'true') for st, _, _ in Reports.seen]
  assert Reports.seen[0][0] == 'open' and Reports.seen[-1][:2] == ('published', 161)
  if shards == 1:
    assert [(st, n) for st, n, _ in Reports.seen] == [
        ('open', 101), ('published', 151), ('published', 161), ('published', 161)]


def test_export_refuses_an_open_day_with_exit_3_and_of_a_complete_one_equals_the_hive_export(
    tmp_path, capsys):
  """An ingested day whose panes are in a table but whose on-time commit is not (a stream still
  writing it) is refused as a Hive day without _SUCCESS; the on-time commit, here one that adds
  no files, makes it exportable, and the export equals the Hive lake's."""
  from pipelines import export_events
  from transforms.lake import iceberg, iceberg_panes
  glob = raw_input(tmp_path / 'in', 800)
  hive, warehouse, streamed = str(tmp_path / 'hive'), str(tmp_path / 'wh'), str(tmp_path / 'open')
  assert batch(glob, hive) == 0
  assert batch(glob, warehouse, *iceberg_flags(tmp_path)) == 0
  ingested = iceberg_panes.tables(iceberg.IcebergLake(
      f'sqlite:///{tmp_path}/catalog.db', iceberg.file_uri(warehouse)), 'r1')
  opened = iceberg_panes.tables(iceberg.IcebergLake(
      f'sqlite:///{tmp_path}/open.db', iceberg.file_uri(streamed)), 's1')
  early = iceberg_panes.commit_files(opened, 'lake', DT, iceberg_panes.held_paths(ingested, 'lake', DT),
                                     's1', complete=False)
  open_flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/open.db']

  def export(lake_dir: str, dest: str, *flags: str) -> int:
    capsys.readouterr()
    return options.main_guard(export_events.run, ['--lake', lake_dir, '--date', DT, '--dest',
                                                   str(tmp_path / dest), '--format', 'jsonl', *flags])
  assert export(streamed, 'refused', *open_flags) == 3
  err = capsys.readouterr().err
  assert f'day {DT} is still open' in err and 'Traceback' not in err
  on_time = iceberg_panes.commit_files(opened, 'lake', DT, [], 's1', complete=True)
  assert on_time.snapshot_id != early.snapshot_id and on_time.files == early.files
  assert iceberg_panes.commit_files(opened, 'lake', DT, [], 's1', complete=True) == on_time

  for lake_dir, dest, flags in ((hive, 'from-hive', []), (warehouse, 'from-iceberg', iceberg_flags(tmp_path)),
                                (streamed, 'from-stream', open_flags)):
    assert export(lake_dir, dest, *flags) == 0
  files = {dest: {n: open(os.path.join(tmp_path, dest, f'dt={DT}', n), 'rb').read()
                  for n in sorted(os.listdir(os.path.join(tmp_path, dest, f'dt={DT}')))
                  if not n.startswith('_')} for dest in ('from-hive', 'from-iceberg', 'from-stream')}
  assert files['from-iceberg'] == files['from-hive'] == files['from-stream'] != {}


class _State:
  """A state cell of a stateful DoFn called directly."""
  def __init__(self):
    self.value = None

  def read(self):
    return self.value

  def write(self, value):
    self.value = value


def test_a_retried_commit_days_bundle_commits_nothing_twice(tmp_path):
  """CommitDays retried after its snapshots landed (its state was never written, so it meets the
  same on-time pane again): the files are listed already, no snapshot is added, and the report
  names the snapshot the first attempt made."""
  from transforms import dedupe
  from transforms.kernels.accounting import DayStats
  from transforms.lake import iceberg, iceberg_panes
  warehouse = str(tmp_path / 'wh')
  lake = iceberg.IcebergLake(f'sqlite:///{tmp_path}/catalog.db', iceberg.file_uri(warehouse))
  settings = ingest.WriteSettings(lake=warehouse, zone='UTC', run_id='s1', allowed_lateness_ms=HOUR,
                                  flush_interval_s=300, flush_rows=10**6, max_rows_per_file=10**6,
                                  iceberg=iceberg_panes.tables(lake, 's1'))
  split = ingest.SplitDays('UTC', 'production', HOUR)
  split.setup()
  split.start_bundle()
  payloads = [event(START_A + i) for i in range(30)] + [b'[1]']
  parts = [p for (dt, _), p in split.process(chunk(payloads, START_A + 100)) if dt == DAY_A]
  write = ingest.WriteDays(settings)
  write.setup()
  table, _ = dedupe.dedupe([p.valid for p in parts])
  rejected = pa.Table.from_batches([p.rejected for p in parts])
  stats = DayStats(rows_written=table.num_rows)   # as WriteDays counts a pane
  for p in parts:
    stats.add(p.stats)
  pane = ingest.Pane(0, write._write(table, DAY_A, 'lake', 0), write._write(rejected, DAY_A, 'rejected', 0),
                     stats, early=False, on_time=1)
  commit = ingest.CommitDays(settings)
  reports = [list(commit.process((DAY_A, pane), day_state=_State())) for _ in range(2)]
  events, dead = (iceberg.table(lake, name) for name in (lake.table, lake.rejected_table))
  assert len(events.snapshots()) == len(dead.snapshots()) == 1
  assert [r.snapshot_id for [r] in reports] == [events.current_snapshot().snapshot_id] * 2
  assert [(r.status, r.rows_written, r.rows_rejected) for [r] in reports] == [('published', 30, 1)] * 2
  assert len(events.scan().to_arrow()) == 30 and len(dead.scan().to_arrow()) == 1


def test_day_columns_of_filtered_map_rows_are_cast_without_aborting():
  """pyarrow 25.0.1 aborts the process casting a filtered map column to large_string keys (as
  the file schema has them): with_day rebuilds maps, and keeps their values and field ids."""
  from transforms.lake import iceberg
  schema = iceberg._schema(pa.schema([('m', pa.map_(pa.field('key', pa.string(), nullable=False),
                                                     pa.string()), False)]))[0].as_arrow()
  rows = pa.table({'m': pa.array([[('a', 'b')], [('c', None)], [('e', 'f'), ('g', 'h')]] * 4,
                                 pa.map_(pa.field('key', pa.string(), nullable=False), pa.string()))})
  rows = rows.filter(pa.array([i % 3 > 0 for i in range(12)]))   # as the seen-id filter does
  out = iceberg.with_day(rows.slice(1), DT, schema)
  assert out.schema == schema and out.num_rows == 7
  assert out['m'].to_pylist() == rows.slice(1)['m'].to_pylist()
  assert out.schema.field('m').type.key_field.metadata == schema.field('m').type.key_field.metadata


# ---- flags ----------------------------------------------------------------------------------

@pytest.mark.parametrize('flags,message', [
    (['--lake_format', 'iceberg'], '--catalog is required with --lake_format iceberg'),
    (['--lake_format', 'iceberg', '--catalog', 'mysql://u:pw-SECRET@h/db'], 'mysql://u:***@h/db'),
    (['--lake_format', 'iceberg', '--catalog', 'sqlite:///c.db', '--table', 'events'],
     "--table 'events' must be NAMESPACE.NAME"),
])
def test_wrong_iceberg_flags_exit_2_with_one_line(tmp_path, capsys, flags, message):
  glob = raw_input(tmp_path / 'in', 10)
  code = batch(glob, str(tmp_path / 'wh'), *flags)
  err = capsys.readouterr().err
  assert code == 2 and message in err and 'SECRET' not in err and 'Traceback' not in err


# ---- Pub/Sub (the emulator, when the machine has it) ---------------------------------------

@pytest.mark.process
@pytest.mark.pubsub
def test_streaming_from_the_pubsub_emulator_into_iceberg(pubsub, tmp_path, monkeypatch):  # noqa: F811
  """`./run.sh ingest --subscription ... --lake_format iceberg`: today's rows land as panes of an
  open day (export refuses it), yesterday's (late, within the lateness) make a complete day, rows
  of three days ago and malformed payloads are dead letters; the oracle is what was published."""
  from google.cloud import pubsub_v1
  from tests.conftest import running_cli, wait_for
  from tests.test_ingest_pubsub import PROJECT, _event
  from transforms.lake import iceberg
  from transforms.read import SourceError
  monkeypatch.setenv('PUBSUB_EMULATOR_HOST', pubsub)
  publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
  topic = publisher.topic_path(PROJECT, 'iceberg-events')
  subscription = subscriber.subscription_path(PROJECT, 'iceberg-ingest')
  publisher.create_topic(name=topic)
  subscriber.create_subscription(name=subscription, topic=topic)
  today = datetime.datetime.now(datetime.timezone.utc).date()
  yesterday, old = today - datetime.timedelta(days=1), today - datetime.timedelta(days=3)
  noon = lambda d: int(datetime.datetime(d.year, d.month, d.day, 12,
                                         tzinfo=datetime.timezone.utc).timestamp() * 1000)
  bodies = {'today': [_event(None) for _ in range(500)],
            'yesterday': [_event(noon(yesterday)) for _ in range(100)],
            'old': [_event(noon(old)) for _ in range(20)]}
  messages = [json.dumps(b).encode() for group in bodies.values() for b in group]
  messages += [b'{"insert_id": "cut'] * 10
  for f in [publisher.publish(topic, m) for m in messages]:
    f.result(timeout=60)

  warehouse = str(tmp_path / 'wh')
  lake = iceberg.IcebergLake(f'sqlite:///{tmp_path}/catalog.db', iceberg.file_uri(warehouse))

  def ids(name: str, day: datetime.date, column: str = 'insert_id') -> list:
    try:
      tbl = iceberg.table(lake, name)
      return tbl.scan(row_filter=f"dt = '{day}'", selected_fields=(column,)).to_arrow()[column].to_pylist()
    except Exception:  # noqa: BLE001 - the run is committing: read again at the next poll
      return []
  want = {k: sorted(b['insert_id'] for b in group) for k, group in bodies.items()}
  done = lambda: (sorted(ids(lake.table, today)) == want['today']
                  and sorted(ids(lake.table, yesterday)) == want['yesterday']
                  and len(ids(lake.rejected_table, old, 'source_row')) == 20
                  and len(ids(lake.rejected_table, today, 'source_row')) == 10)
  with running_cli('pipelines.ingest', '--subscription', subscription, '--lake', warehouse,
                   '--lake_format', 'iceberg', '--catalog', lake.catalog, '--streaming',
                   '--flush_interval', '2s', '--run_id', 'ps1', log=tmp_path / 'ingest.log',
                   env={'PUBSUB_EMULATOR_HOST': pubsub}) as proc:
    wait_for(done, proc, 240)
  output = (tmp_path / 'ingest.log').read_text()
  assert done(), f'exit {proc.returncode}: {output[-3000:]}'
  tbl = iceberg.table(lake)
  assert iceberg.day_manifest(lake, yesterday.isoformat())['rows'] == 100
  with pytest.raises(SourceError, match='is still open'):   # today: panes, not complete
    iceberg.day_manifest(lake, today.isoformat())
  marks = [s.summary['eventferry.complete'] for s in tbl.snapshots()
           if s.summary['eventferry.dt'] == today.isoformat()]
  assert marks and set(marks) == {'false'}
  reasons = iceberg.table(lake, lake.rejected_table).scan().to_arrow()['reason'].to_pylist()
  assert sorted(set(reasons)) == ['invalid_json', 'too_late']
