"""Transient store errors: every 5th S3 request answered 503 SlowDown by a proxy in front of moto.
The import and export still produce exactly what an undisturbed run produces."""
import datetime

import pytest

from pipelines import samples
from tests import servers
from tests.conftest import run_cli
from transforms.stores import fs

pytestmark = pytest.mark.engine

DAY = datetime.date(2023, 1, 1)


def files(root: str) -> dict[str, bytes]:
  day = fs.partition_dir(root, '2023-01-01')
  return {p[len(day):]: fs.read_bytes(p) for p in fs.list_files(day)
          if p.endswith('.parquet')}


def test_import_and_export_through_503s_equal_an_undisturbed_run(s3_store):
  from apache_beam.options.pipeline_options import PipelineOptions
  fs.configure(PipelineOptions(s3_store.flags))
  src = s3_store.url('faults', 'src')
  samples.write_day(src, DAY, samples.events(DAY, 2000, seed=8), files=2)
  proxy = servers.RecordingProxy(s3_store.server.port, fail_every=5)
  flaky = [f if f != s3_store.server.endpoint else proxy.endpoint for f in s3_store.flags]
  try:
    for name, flags in (('calm', s3_store.flags), ('flaky', flaky)):
      lake, dest = s3_store.url('faults', name, 'lake'), s3_store.url('faults', name, 'dest')
      run_cli('pipelines.import_events', '--source', src, '--date', '2023-01-01', '--lake', lake,
              '--shards', '3', *flags)
      run_cli('pipelines.export_events', '--lake', lake, '--date', '2023-01-01', '--dest', dest,
              *flags)
  finally:
    proxy.stop()
  print(f'flaky proxy: {proxy.failed} of {proxy.requests} S3 requests answered 503')
  assert proxy.failed >= 10, (proxy.requests, proxy.failed)
  calm, flaky_run = s3_store.url('faults', 'calm'), s3_store.url('faults', 'flaky')
  for part in ('lake', 'dest'):
    expected = files(f'{calm}/{part}')
    assert expected and files(f'{flaky_run}/{part}') == expected
