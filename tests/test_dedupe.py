"""De-duplication and sharding (pure functions and the Beam transform)."""
import datetime
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import event, raw_batch, uuid
from transforms.dedupe import DedupeEvents, dedupe
from transforms.kernels.shards import shard_of, split_by_shard
from transforms.validate import validate_batch

pytestmark = pytest.mark.engine


def lake_batch(rows, source='f.parquet'):
  return validate_batch(raw_batch(rows, source=source), 'production').valid


def test_shard_is_a_function_of_the_last_hex_digits():
  ids = pa.array([uuid(0x0a), uuid(0xff), 'ffffffff-ffff-4fff-8fff-ffffffffffff'])
  assert shard_of(ids, 1000).tolist() == [10, 255, 0xffffffff % 1000]
  assert shard_of(ids.slice(1), 7).tolist() == [0xff % 7, 0xffffffff % 7]


def test_split_by_shard_keeps_batch_order_and_only_the_kept_rows():
  ids = pa.array([uuid(i) for i in range(10)] + ['not a uuid'])
  batch = pa.record_batch({'insert_id': ids, 'row': list(range(11))})
  keep = np.array([True] * 10 + [False])
  shard = shard_of(ids.slice(0, 10), 3)
  expected = [(s, [i for i in range(10) if shard[i] == s]) for s in range(3)]
  for part, mask in ((batch, keep), (batch.slice(0, 10), None)):
    assert [(s, p['row'].to_pylist()) for s, p in split_by_shard(part, 3, mask)] == expected
  assert [(s, p['row'].to_pylist()) for s, p in split_by_shard(batch, 1, keep)] == [(0, list(range(10)))]
  assert not list(split_by_shard(batch, 3, np.zeros(11, dtype=bool)))
  one = batch.filter(pa.array(np.append(shard == 1, False)))
  assert [(s, p is one) for s, p in split_by_shard(one, 3)] == [(1, True)]   # no copy


def test_earliest_ts_wins_then_first_file_then_first_row():
  t0 = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
  later = t0 + datetime.timedelta(seconds=5)
  a = lake_batch([event(1, ts=later, event_key='late'), event(1, ts=t0, event_key='early'),
                  event(2, ts=t0, event_key='row0'), event(2, ts=t0, event_key='row1')], 'b.parquet')
  b = lake_batch([event(2, ts=t0, event_key='file_a')], 'a.parquet')
  out, dropped = dedupe([a, b])
  assert dict(zip(out['insert_id'].to_pylist(), out['event_key'].to_pylist())) == {
      uuid(1): 'early', uuid(2): 'file_a'}
  assert dropped == 3
  assert out['event_key'].to_pylist() == ['file_a', 'early']   # source order: a.parquet first


def test_dedupe_refuses_ids_that_were_not_validated():
  batch = lake_batch([event(1)])
  short = batch.set_column(batch.schema.get_field_index('insert_id'), 'insert_id', pa.array(['x']))
  with pytest.raises(ValueError, match='validated insert_ids'):
    dedupe([short])


def test_seen_ids_from_earlier_days_are_dropped():
  out, dropped = dedupe([lake_batch([event(1), event(2)])], [pa.array([uuid(2)])])
  assert out['insert_id'].to_pylist() == [uuid(1)] and dropped == 1


def test_dedupe_transform_meets_copies_across_batches_in_one_shard(tmp_path):
  batches = [('2023-01-01', lake_batch([event(i) for i in range(0, 60)], 'a.parquet')),
             ('2023-01-01', lake_batch([event(i) for i in range(30, 90)], 'b.parquet'))]
  with TestPipeline(runner='FnApiRunner') as p:
    out = p | beam.Create(batches) | DedupeEvents({'2023-01-01': 4}, str(tmp_path))
    ids = out.main | beam.FlatMap(lambda kv: [(kv[0][1], i) for i in kv[1]['insert_id'].to_pylist()])
    expected = [(int(shard_of(pa.array([uuid(i)]), 4)[0]), uuid(i)) for i in range(90)]
    assert_that(ids, equal_to(expected), label='OnePerIdInItsShard')
    dupes = out.stats | beam.Map(lambda kv: kv[1].rows_duplicate) | beam.CombineGlobally(sum)
    assert_that(dupes, equal_to([30]), label='ThirtyDuplicates')
  assert not [f for _, _, files in os.walk(tmp_path) for f in files], 'spill files left behind'
