"""TestPipeline tests of the read and validate transforms and their metrics."""
import datetime

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import event, raw_batch, table, write_file
from transforms.read import ReadRowGroups, inspect_day, read_tasks
from transforms.validate import ValidateEvents

pytestmark = pytest.mark.engine


def test_read_row_groups_numbers_rows_across_groups(tmp_path):
  write_file(str(tmp_path / 'dt=2023-01-01' / 'a.parquet'), table([event(i) for i in range(10)]),
             row_group_size=4)
  groups = inspect_day(str(tmp_path), datetime.date(2023, 1, 1)).row_groups
  assert [(g.index, g.first_row, g.rows) for g in groups] == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
  p = TestPipeline(runner='FnApiRunner')
  rows = (p | beam.Create(read_tasks(groups)) | beam.ParDo(ReadRowGroups())
          | beam.FlatMap(lambda kv: zip(kv[1].column('_source_row').to_pylist(),
                                        kv[1].column('insert_id').to_pylist())))
  assert_that(rows, equal_to([(i, event(i)['insert_id']) for i in range(10)]))
  result = p.run()
  result.wait_until_finish()
  read = result.metrics().query(MetricsFilter().with_name('rows_in'))['counters']
  assert sum(c.committed for c in read) == 10


def test_validate_events_routes_rows_and_counts_them():
  batches = [('2023-01-01', raw_batch([event(1), event(2, event_key=''), event(3, ts=None)]))]
  p = TestPipeline(runner='FnApiRunner')
  out = p | beam.Create(batches) | ValidateEvents('production')
  assert_that(out.main | 'Valid' >> beam.FlatMap(lambda kv: kv[1].column('insert_id').to_pylist()),
              equal_to([event(1)['insert_id']]), label='ValidRows')
  assert_that(out.rejected | 'Reasons' >> beam.FlatMap(lambda kv: kv[1].column('reason').to_pylist()),
              equal_to(['missing_event_key', 'missing_ts']), label='RejectedRows')
  assert_that(out.stats | 'In' >> beam.Map(lambda kv: (kv[0], kv[1].rows_in, kv[1].rows_rejected)),
              equal_to([('2023-01-01', 3, 2)]), label='Stats')
  result = p.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed
              for c in result.metrics().query(MetricsFilter())['counters']}
  assert counters['rows_valid'] == 1
  assert counters['rejected_missing_event_key'] == 1 and counters['rejected_missing_ts'] == 1
