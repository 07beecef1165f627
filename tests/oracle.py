"""The "no row lost" oracle for a local lake, independent of the project's code: DuckDB reads the
rows back, the json module reads the manifests, os lists the folders."""
import collections
import json
import os

import duckdb
import pyarrow as pa


def source_ids(*tables: pa.Table) -> collections.Counter:
  """The insert_ids a lake must hold once each, from the tables the test wrote (valid rows only)."""
  return collections.Counter(i for t in tables for i in set(t.column('insert_id').to_pylist()))


def lake_ids(lake: str, dt: str) -> collections.Counter:
  """Every insert_id of the day's data files, as many times as DuckDB reads it."""
  directory = os.path.join(lake, f'dt={dt}')
  if not any(n.endswith('.parquet') for n in os.listdir(directory)):
    return collections.Counter()
  rows = duckdb.sql(f"SELECT insert_id FROM read_parquet('{directory}/*.parquet')").fetchall()
  return collections.Counter(r[0] for r in rows)


def assert_lake(lake: str, expected: dict[str, collections.Counter]) -> None:
  """Each day of `expected` is published and holds exactly its rows, once each, and exactly the
  files its manifest lists; no day is published that should not be; nothing is left in _staging,
  no lock is left behind."""
  days = sorted(n[3:] for n in os.listdir(lake) if n.startswith('dt='))
  assert days == sorted(expected), f'lake days {days}, expected {sorted(expected)}'
  for dt, ids in expected.items():
    directory = os.path.join(lake, f'dt={dt}')
    assert os.path.exists(os.path.join(directory, '_SUCCESS')), f'dt={dt} is not published'
    manifest = json.load(open(os.path.join(directory, '_manifest.json')))
    on_disk = sorted(n for n in os.listdir(directory) if not n.startswith('_'))
    assert on_disk == sorted(f['name'] for f in manifest['files']), f'dt={dt}: unlisted files'
    got = lake_ids(lake, dt)
    assert got == ids, (f'dt={dt}: {sum((ids - got).values())} rows missing, '
                        f'{sum((got - ids).values())} extra or repeated')
  for sub in ('_staging', os.path.join('_eventferry', 'locks')):
    left = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(lake, sub)) for f in fs]
    assert not left, f'left behind: {left[:5]}'
