"""Ingest benchmark: `./run.sh bench ingest [--events N] [--repeat K] [--latency_seconds S]`.

Writes N generated raw events (default 1M; 0.5% malformed, 1% invalid, 2% resent) as 10 JSON-lines
files, then times, each in its own process:
  stream         - the streaming pipeline on the DirectRunner (BundleBasedDirectRunner,
                   --streaming), fed by a TestStream that adds the files one at a time: read,
                   parse, validate, split by server day, de-duplicate, write panes, commit
  batch          - the same transforms in batch (`./run.sh ingest --input`, FnApiRunner)
  parse_validate - floor: parse (transforms/kernels/raw.py) + vectorized validation of the same chunks, no
                   Beam, no lake writes
  json_pydantic  - the naive way: json.loads + RawEvent.model_validate per event (first 100k)
Then the publish-to-file latency through the Pub/Sub emulator with early panes every 5 s.
Target (issue 5): >= 100k events/s sustained on one core. Seconds exclude importing Beam; events
per CPU-second are printed too, as wall time on a shared machine includes waiting for a core.
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from tests.bench import harness

DAY = datetime.date(2023, 1, 1)
MODULE = 'tests.bench.bench_ingest'
FILES = 10


def prepare(workdir: str, events: int) -> str:
  """The input files, generated in a child process: Linux hands a parent's peak RSS on to the
  children it starts, and generating a million events as Python objects takes gigabytes."""
  source = os.path.join(workdir, f'raw-{events}')
  if not os.path.exists(os.path.join(source, '_done')):
    subprocess.run([sys.executable, '-c', f'from {MODULE} import generate; '
                    f'generate({source!r}, {events})'], check=True, env=harness.ALLOCATOR_ENV)
  return source


def generate(source: str, events: int) -> None:
  from pipelines import samples
  os.makedirs(source, exist_ok=True)
  payloads = samples.raw_events(DAY, events)
  per = -(-len(payloads) // FILES)
  for i in range(FILES):
    with open(os.path.join(source, f'events-{i:02d}.jsonl'), 'wb') as f:
      f.write(b'\n'.join(payloads[i * per:(i + 1) * per]) + b'\n')
  open(os.path.join(source, '_done'), 'w').close()


def _files(source: str) -> list[str]:
  return sorted(os.path.join(source, f) for f in os.listdir(source) if f.endswith('.jsonl'))


def _reports(lake: str) -> dict:
  total = {'rows': 0, 'written': 0}
  runs = os.path.join(lake, '_runs')
  for run in os.listdir(runs):
    for name in os.listdir(os.path.join(runs, run)):
      report = json.load(open(os.path.join(runs, run, name)))
      total['rows'] += report['rows_in']
      total['written'] += report['rows_written']
  return total


@harness.preload('pipelines.ingest', 'apache_beam.testing.test_stream')
def stream(source: str, out: str) -> dict:
  import apache_beam as beam
  from apache_beam.io.filesystem import FileMetadata
  from apache_beam.testing.test_stream import TestStream
  from apache_beam.utils.timestamp import Timestamp
  from pipelines.ingest import ReadJsonLines
  from transforms import ingest
  end = int(datetime.datetime(2023, 1, 2, tzinfo=datetime.timezone.utc).timestamp())
  files = [FileMetadata(path, os.path.getsize(path), end - 60) for path in _files(source)]
  events = TestStream().advance_watermark_to(Timestamp(end - 3600))
  for f in files:   # one file after another, as they would arrive
    events = events.add_elements([f])
  events = events.advance_watermark_to_infinity()
  settings = ingest.WriteSettings(lake=out, zone='UTC', run_id='bench', allowed_lateness_ms=86_400_000,
                                  flush_interval_s=300, flush_rows=500_000,
                                  max_rows_per_file=1_000_000)
  with beam.Pipeline(runner='BundleBasedDirectRunner', argv=['--streaming']) as p:
    _ = (p | events | beam.ParDo(ReadJsonLines(arrival=True))
         | ingest.IngestEvents(settings, 'production'))
  return _reports(out)


@harness.preload('pipelines.ingest')
def batch(source: str, out: str) -> dict:
  from pipelines import ingest as ingest_pipeline
  assert ingest_pipeline.run(['--input', os.path.join(source, '*.jsonl'), '--lake', out,
                              '--runner', 'FnApiRunner']) == 0
  return _reports(out)


@harness.preload('pipelines.ingest')
def parse_validate(source: str, out: str) -> dict:
  from apache_beam.io.filesystem import FileMetadata
  from pipelines.ingest import ReadJsonLines
  from transforms import validate
  from transforms.kernels import raw
  rows = 0
  for path in _files(source):
    for chunk in ReadJsonLines(arrival=False).process(FileMetadata(path, 0, 0)):
      batch, _, _ = raw.parse_chunk(chunk)
      validate.validate_batch(batch, 'production')
      rows += len(chunk)
  return {'rows': rows, 'written': 0}


@harness.preload('schemas.raw')
def json_pydantic(source: str, out: str) -> dict:
  from schemas.raw import RawEvent
  rows = 0
  with open(_files(source)[0], 'rb') as f:
    for line in f:
      try:
        RawEvent.model_validate(json.loads(line))
      except ValueError:
        pass
      rows += 1
  return {'rows': rows, 'written': 0}


CONTENDERS = {'stream': stream, 'batch': batch, 'parse_validate': parse_validate,
              'json_pydantic': json_pydantic}


LATENCY_RATE = 1000


def latency(workdir: str, seconds: float, rate: int = LATENCY_RATE) -> dict:
  """Publishes `rate` events/s for `seconds` to the emulator while `ingest --streaming` runs with
  --flush_interval 5s; latency = when the event's file appeared - when it was published."""
  import pyarrow.parquet as pq
  from google.cloud import pubsub_v1
  from tests import servers
  emulator = '/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator'
  server = servers.start([emulator, f'--host={servers.HOST}', '--port={port}'], workdir,
                         'pubsub', servers.tcp_open, timeout=90)
  os.environ['PUBSUB_EMULATOR_HOST'] = f'{servers.HOST}:{server.port}'
  lake = os.path.join(workdir, f'latency-{uuid.uuid4().hex[:6]}')
  try:
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic, sub = publisher.topic_path('eventferry-bench', 'events'), subscriber.subscription_path(
        'eventferry-bench', 'ingest')
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    log = open(os.path.join(workdir, 'ingest.log'), 'wb')
    proc = subprocess.Popen([sys.executable, '-m', 'pipelines.ingest', '--subscription', sub,
                             '--lake', lake, '--streaming', '--flush_interval', '5s'],
                            cwd=servers.ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    time.sleep(10)   # the runner starts and subscribes
    published, seen = {}, {}
    start = time.time()
    while time.time() - start < seconds:
      tick = time.time()
      for _ in range(rate // 10):
        insert_id = str(uuid.uuid4())
        publisher.publish(topic, json.dumps({
            'insert_id': insert_id, 'event_key': 'e', 'ts': int(tick * 1000),
            'identifiers': {'id': 'u', 'device_id': 'd'},
            'hackle_properties': {'osname': 'iOS', 'appversion': '1'}}).encode())
        published[insert_id] = tick
      _scan(lake, seen, pq)
      time.sleep(max(0.0, 0.1 - (time.time() - tick)))
    deadline = time.time() + 30
    while len(seen) < len(published) and time.time() < deadline:
      _scan(lake, seen, pq)
      time.sleep(0.2)
    proc.terminate()
    proc.wait(30)
  finally:
    server.stop()
  delays = sorted(seen[i] - t for i, t in published.items() if i in seen)
  pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] if delays else float('nan')
  return {'published': len(published), 'landed': len(delays), 'p50': pick(0.5), 'p95': pick(0.95),
          'max': delays[-1] if delays else float('nan')}


def _scan(lake: str, seen: dict, pq) -> None:
  """Records the first time each insert_id is seen in a lake file."""
  for root, _, names in os.walk(lake):
    if '_staging' in root or '_rejected' in root:
      continue
    for name in names:
      path = os.path.join(root, name)
      if name.endswith('.parquet') and path not in seen:
        seen[path] = True
        now = time.time()
        for insert_id in pq.read_table(path, columns=['insert_id'])['insert_id'].to_pylist():
          seen.setdefault(insert_id, now)


def main(argv: list[str]) -> int:
  latency_seconds = 20.0
  if '--latency_seconds' in argv:
    i = argv.index('--latency_seconds')
    latency_seconds = float(argv[i + 1])
    argv = argv[:i] + argv[i + 2:]
  r = harness.run_all(argv, __doc__.splitlines()[0], MODULE, CONTENDERS, prepare)
  if r is None:
    return 0
  repeat = r.pop('repeat')
  print(f'ingest benchmark: {r["stream"]["rows"]:,} raw events, best of {repeat}')
  harness.table(r)
  rate = r['stream']['rows'] / r['stream']['seconds']
  naive = r['json_pydantic']['rows'] / r['json_pydantic']['seconds']
  print(harness.verdict('stream events/s', rate, '>= 100,000', rate >= 100_000))
  # On a shared machine wall time includes waiting for a core; the contender's CPU seconds do not.
  per_cpu = r['stream']['rows'] / r['stream']['cpu_seconds']
  print(harness.verdict('stream events/cpu-s', per_cpu, '>= 100,000', per_cpu >= 100_000))
  print(f'stream vs json+pydantic per event: {rate / naive:.1f}x; stream vs batch: '
        f"{r['batch']['seconds'] / r['stream']['seconds']:.2f}x the batch speed")
  if latency_seconds > 0:
    lat = latency(tempfile.mkdtemp(prefix='eventferry-latency-'), latency_seconds)
    print(f"publish-to-file latency (Pub/Sub emulator, --flush_interval 5s, {LATENCY_RATE} events/s for "
          f"{latency_seconds:.0f}s): {lat['landed']:,}/{lat['published']:,} landed; "
          f"p50 {lat['p50']:.1f}s, p95 {lat['p95']:.1f}s, max {lat['max']:.1f}s")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
