"""Ingest's listing of a day's files (iceberg_panes.DayListing), kept up to date from the
snapshots committed since it last looked, against pyiceberg's own scan plan of the day (which
reads every manifest) after each step of random sequences of pane appends, day overwrites,
compactions and expiries on a real SQLite-catalog table."""
import datetime
import os
import tempfile

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import LAKE_SCHEMA
from transforms.lake import iceberg, iceberg_maintain, iceberg_panes
from transforms.lake.commit import write_parquet

pytestmark = pytest.mark.engine   # real catalog commits: about a second an example

DAYS = ['2023-04-01', '2023-04-02', '2023-04-03']
STEPS = st.lists(st.one_of(
    st.tuples(st.just('append'), st.sampled_from(DAYS), st.integers(1, 3)),
    st.tuples(st.just('overwrite'), st.sampled_from(DAYS), st.integers(0, 2)),
    st.tuples(st.just('compact'), st.just(''), st.just(0)),
    st.tuples(st.just('expire'), st.just(''), st.integers(1, 3))), min_size=1, max_size=12)


def _files(lake, tbl, dt: str, count: int, tag: str) -> list[str]:
  schema, paths = iceberg.file_schema(tbl), []
  for i in range(count):
    rows = pa.Table.from_pylist([{
        'ts': datetime.datetime.fromisoformat(dt), 'environment': 'prod', 'event_key': 'e',
        'identifiers': [('id', f'{tag}-{i}')], 'insert_id': f'{tag}-{i}', 'metric_value': i,
        'user_properties': [], 'event_properties': [], 'platform_properties': []}], LAKE_SCHEMA)
    path = os.path.join(iceberg.data_root(tbl, tag), f'dt={dt}', f'part-{i}.parquet')
    paths.append(write_parquet(iceberg.with_day(rows, dt, schema), path, os.path.basename(path)).path)
  return paths


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_the_kept_listing_equals_the_scan_plan_after_every_commit(steps):
  with tempfile.TemporaryDirectory() as root:
    lake = iceberg.IcebergLake(f'sqlite:///{root}/catalog.db', f'file://{root}/wh',
                               'eventferry.events', None, {})
    listing = iceberg_panes.DayListing()
    for n, (step, dt, count) in enumerate(steps):
      tbl = iceberg.table(lake)
      if step == 'append':
        iceberg.commit_day(lake, lake.table, dt, _files(lake, tbl, dt, count, f's{n}'), f's{n}',
                           append=True)
      elif step == 'overwrite':
        iceberg.commit_day(lake, lake.table, dt, _files(lake, tbl, dt, count, f's{n}'), f's{n}')
      elif step == 'compact':
        iceberg_maintain.compact(lake, lake.table, 2**20, f's{n}', dry_run=False)
      else:
        iceberg_maintain.expire(lake, lake.table, datetime.datetime.now(datetime.timezone.utc),
                                retain_last=count, dry_run=False)
      tbl = iceberg.table(lake)
      for day in DAYS:
        planned = sorted(f.file_path for f in iceberg.day_files(tbl, day))
        assert [f.file_path for f in listing.files(tbl, day)] == planned, (steps[:n + 1], day)
