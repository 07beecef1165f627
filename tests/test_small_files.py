"""Days of many small files (Firehose, Kafka Connect and Spark write thousands a day): runs of
one-row-group files are read as one batch (transforms/read.py read_tasks), and the day's files
must come out byte for byte as when every file is read on its own."""
import datetime
import hashlib
import itertools
import json
import os

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from pipelines import import_events, samples
from transforms.kernels.lineage import per_source_file
from transforms.read import RowGroup, read_tasks
from transforms import read

DAY = datetime.date(2023, 1, 1)


def mixed_day(bucket: str, events: int, files: int) -> None:
  """A third each by pyarrow, by Spark's layout (INT96 timestamps) and by Polars: the schema
  changes inside a run of small files."""
  t = samples.events(DAY, events, seed=21, invalid=0.2)
  third = t.num_rows // 3
  samples.write_day(bucket, DAY, t.slice(0, third), files=files // 3, success=False)
  samples.write_day(bucket, DAY, t.slice(third, third), files=files // 3, writer='spark',
                    success=False)
  directory = os.path.join(bucket, f'dt={DAY}')
  rest = t.slice(2 * third)
  per = -(-rest.num_rows // (files // 3))
  for i in range(files // 3):
    pl.from_arrow(rest.slice(i * per, per)).write_parquet(os.path.join(directory, f'polars-{i}.parquet'))
  open(os.path.join(directory, '_SUCCESS'), 'wb').close()


def digests(lake: str) -> dict[str, str]:
  """sha256 of every data file the run committed (lake and rejected rows)."""
  out = {}
  for root, _, names in os.walk(lake):
    for name in names:
      if name.endswith('.parquet'):
        path = os.path.join(root, name)
        out[os.path.relpath(path, lake)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


def run_import(bucket: str, lake: str) -> dict:
  report = lake + '.json'
  code = import_events.run(['--source', bucket, '--date', str(DAY), '--lake', lake,
                            '--max_rejected_ratio', '0.5', '--report', report])
  assert code == 0
  return json.load(open(report))['days'][0]


@pytest.mark.engine
def test_a_day_of_small_files_commits_the_bytes_of_one_read_per_file(tmp_path, monkeypatch):
  """150 files of about 1,000 rows: one shard holds enough rows for Parquet's writer to cut pages
  inside it, where it cuts them depends on the chunks (the test fails without per_source_file).
  Lineage is checked against DuckDB's own row numbers of the source files."""
  bucket = str(tmp_path / 'bucket')
  mixed_day(bucket, 150_000, 150)
  packed = run_import(bucket, str(tmp_path / 'packed'))
  tasks = read_tasks([g for inv in [import_events.inspect_day(bucket, DAY)] for g in inv.row_groups])
  assert len(tasks) < 10   # a few batches, not 150
  monkeypatch.setattr(read, 'read_tasks', lambda groups: read_tasks(groups, rows=1))
  alone = run_import(bucket, str(tmp_path / 'alone'))
  assert {k: packed[k] for k in ('rows_in', 'rows_written', 'rows_rejected', 'rows_duplicate')} == \
      {k: alone[k] for k in ('rows_in', 'rows_written', 'rows_rejected', 'rows_duplicate')}
  ours, theirs = digests(str(tmp_path / 'packed')), digests(str(tmp_path / 'alone'))
  assert len(ours) == 2 and ours == theirs

  con = duckdb.connect()
  files = f"{bucket}/dt={DAY}/*.parquet"
  assert packed['rows_in'] == con.execute(f"select count(*) from read_parquet('{files}')").fetchone()[0]
  wrong = con.execute(f"""
    with source as (select parse_filename(filename) as name, file_row_number as row, insert_id
                    from read_parquet('{files}', filename=true, file_row_number=true, union_by_name=true)),
         rejected as (select source_file as name, source_row as row,
                             json_extract_string(original, '$.insert_id') as insert_id
                      from read_parquet('{tmp_path}/packed/_rejected/dt={DAY}/*.parquet'))
    select count(*), count(source.row) from rejected left join source using (name, row)
    where source.insert_id is distinct from rejected.insert_id""").fetchone()
  assert wrong == (0, 0)


def group(path: str, rows: int, index: int = 0, dt: str = '2023-01-01') -> RowGroup:
  return RowGroup(dt, path, path, index, 0, rows)


def test_read_tasks_pack_runs_of_one_group_files_of_a_day():
  groups = [group('a', 5), group('b', 5), group('c', 8),          # packed up to 12 rows
            group('m', 4, 0), group('m', 4, 1),                   # a file of two groups: alone
            group('d', 2), group('e', 20),                        # too big to pack
            group('f', 1, dt='2023-01-02'), group('g', 1, dt='2023-01-02')]
  tasks = [[g.path for g in t.groups] for t in read_tasks(groups, rows=12)]
  assert tasks == [['a', 'b'], ['c'], ['m'], ['m'], ['d'], ['e'], ['f', 'g']]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(['x.parquet', 'y.parquet', 'z/w.parquet']), max_size=40))
def test_per_source_file_cuts_where_the_file_changes(names):
  table = pa.table({'_source_file': pa.array(names, pa.string()),
                    'n': pa.array(range(len(names)), pa.int64())})
  pieces = per_source_file(table)
  assert pa.concat_tables(pieces).equals(table)
  runs = [(k, len(list(g))) for k, g in itertools.groupby(names)] or [(None, 0)]
  assert [(p['_source_file'][0].as_py() if p.num_rows else None, p.num_rows) for p in pieces] == runs
  batch = table.to_batches()[0] if table.num_rows else None
  if batch is not None:
    assert [p.num_rows for p in per_source_file(batch)] == [n for _, n in runs]
