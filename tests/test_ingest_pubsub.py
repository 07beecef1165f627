"""End to end with the Pub/Sub emulator (from the machine's google-cloud-cli): publish a few
thousand raw events, some malformed, some duplicated, some for yesterday and some too late; run
`./run.sh ingest --streaming` until the lake holds them; check the lake and the dead letters."""
import datetime
import json
import os
import shutil
import time
import uuid

import pyarrow.parquet as pq
import pytest

from schemas.reports import Manifest
from tests import servers
from tests.conftest import parquet_rows, running_cli, wait_for

EMULATOR = os.environ.get('EVENTFERRY_PUBSUB_EMULATOR',   # run.sh sets it; overridable
                          '/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator')

pytestmark = [pytest.mark.process, pytest.mark.pubsub]
PROJECT = 'eventferry-test'


@pytest.fixture(scope='module')
def pubsub(tmp_path_factory):
  # Some machines have no google-cloud-cli and cannot reach Google's apt repository: the rest of
  # the suite still runs, and the skip names what is missing.
  if not os.path.exists(EMULATOR):
    pytest.skip(f'no Pub/Sub emulator at {EMULATOR}: install google-cloud-cli with its '
                'pubsub-emulator component, or set EVENTFERRY_PUBSUB_EMULATOR')
  if not shutil.which('java'):
    pytest.skip('no java for the Pub/Sub emulator: install default-jre-headless')
  workdir = str(tmp_path_factory.mktemp('pubsub'))
  server = servers.start([EMULATOR, f'--host={servers.HOST}', '--port={port}'], workdir,
                         'pubsub', servers.tcp_open, timeout=90)
  yield f'{servers.HOST}:{server.port}'
  server.stop()


def _event(server_ms: int | None, insert_id: str | None = None) -> dict:
  body = {'insert_id': insert_id or str(uuid.uuid4()), 'event_key': 'purchase',
          'ts': int(time.time() * 1000) - 1000, 'identifiers': {'id': 'u', 'device_id': 'd'},
          'metric_value': 2, 'hackle_properties': {'osname': 'iOS', 'appversion': '1'},
          'event_properties': {'Plan': 'pro'}}
  if server_ms is not None:
    body['server_ts'] = server_ms
  return body


def test_streaming_from_the_pubsub_emulator(pubsub, tmp_path, monkeypatch):
  from google.cloud import pubsub_v1
  monkeypatch.setenv('PUBSUB_EMULATOR_HOST', pubsub)
  publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
  topic = publisher.topic_path(PROJECT, 'events')
  subscription = subscriber.subscription_path(PROJECT, 'ingest')
  publisher.create_topic(name=topic)
  subscriber.create_subscription(name=subscription, topic=topic)

  today = datetime.datetime.now(datetime.timezone.utc).date()
  yesterday, old = today - datetime.timedelta(days=1), today - datetime.timedelta(days=3)
  noon = lambda d: int(datetime.datetime(d.year, d.month, d.day, 12,
                                         tzinfo=datetime.timezone.utc).timestamp() * 1000)
  messages = [json.dumps(_event(None)).encode() for _ in range(2500)]          # server = publish
  dup_ids = [json.loads(m)['insert_id'] for m in messages[:100]]
  messages += [json.dumps(_event(None, i)).encode() for i in dup_ids]           # duplicates
  messages += [json.dumps(_event(noon(yesterday))).encode() for _ in range(300)]  # late, in time
  messages += [json.dumps(_event(noon(old))).encode() for _ in range(20)]       # too late
  messages += [b'{"insert_id": "cut', b'not json at all'] * 20                   # malformed
  futures = [publisher.publish(topic, m) for m in messages]
  for f in futures:
    f.result(timeout=60)

  lake = str(tmp_path / 'lake')
  part = lambda root, d: os.path.join(root, f'dt={d.isoformat()}')
  rejected = os.path.join(lake, '_rejected')
  with running_cli('pipelines.ingest', '--subscription', subscription, '--lake', lake,
                   '--streaming', '--flush_interval', '2s', '--run_id', 'ps1',
                   log=tmp_path / 'ingest.log', env={'PUBSUB_EMULATOR_HOST': pubsub}) as proc:
    wait_for(lambda: (parquet_rows(part(lake, today)) == 2500 and parquet_rows(part(lake, yesterday)) == 300
                      and parquet_rows(part(rejected, old)) == 20 and parquet_rows(part(rejected, today)) == 40),
             proc, 240)
  output = (tmp_path / 'ingest.log').read_text()
  assert parquet_rows(part(lake, today)) == 2500, f'exit {proc.returncode}: {output[-3000:]}'
  assert parquet_rows(part(lake, yesterday)) == 300, output[-3000:]
  # today is still open: files but no _SUCCESS; yesterday was committed when it arrived late
  assert not os.path.exists(os.path.join(part(lake, today), '_SUCCESS'))
  manifest = Manifest.model_validate_json(open(os.path.join(part(lake, yesterday), '_manifest.json')).read())
  assert manifest.rows == 300 and os.path.exists(os.path.join(part(lake, yesterday), '_SUCCESS'))
  dead = pq.read_table(part(rejected, old)).to_pylist() + pq.read_table(part(rejected, today)).to_pylist()
  assert sorted({r['reason'] for r in dead}) == ['invalid_json', 'too_late']
  assert {r['original'] for r in dead if r['reason'] == 'invalid_json'} == {'{"insert_id": "cut', 'not json at all'}
  assert all(r['source_file'].startswith(subscription + '/') for r in dead)
  written = pq.read_table(part(lake, today))
  assert written.num_rows == len(set(written['insert_id'].to_pylist()))



def test_a_topic_with_the_server_time_in_a_message_attribute(pubsub, tmp_path, monkeypatch):
  """--topic: the runner makes its own subscription when it starts, so publishing waits for it.
  --server_time_attribute: epoch ms or RFC 3339; absent, the publish time decides the day."""
  from google.cloud import pubsub_v1
  monkeypatch.setenv('PUBSUB_EMULATOR_HOST', pubsub)
  publisher = pubsub_v1.PublisherClient()
  topic = publisher.topic_path(PROJECT, 'attributed')
  publisher.create_topic(name=topic)
  today = datetime.datetime.now(datetime.timezone.utc).date()
  yesterday = today - datetime.timedelta(days=1)
  noon = datetime.datetime(yesterday.year, yesterday.month, yesterday.day, 12,
                           tzinfo=datetime.timezone.utc)
  lake = str(tmp_path / 'lake')
  part = lambda d: os.path.join(lake, f'dt={d.isoformat()}')
  subscribed = lambda: list(publisher.list_topic_subscriptions(topic=topic))
  with running_cli('pipelines.ingest', '--topic', topic, '--server_time_attribute', 'received_at',
                   '--lake', lake, '--streaming', '--flush_interval', '2s', '--run_id', 'ps2',
                   log=tmp_path / 'ingest.log', env={'PUBSUB_EMULATOR_HOST': pubsub}) as proc:
    wait_for(subscribed, proc, 120)
    futures = [publisher.publish(topic, json.dumps(_event(None)).encode(),
                                 received_at=str(int(noon.timestamp() * 1000))) for _ in range(100)]
    futures += [publisher.publish(topic, json.dumps(_event(None)).encode(),
                                  received_at=noon.isoformat().replace('+00:00', 'Z'))
                for _ in range(100)]
    futures += [publisher.publish(topic, json.dumps(_event(None)).encode()) for _ in range(50)]
    for f in futures:
      f.result(timeout=60)
    wait_for(lambda: parquet_rows(part(yesterday)) == 200 and parquet_rows(part(today)) == 50, proc, 120)
  output = (tmp_path / 'ingest.log').read_text()
  assert parquet_rows(part(yesterday)) == 200 and parquet_rows(part(today)) == 50, output[-3000:]
