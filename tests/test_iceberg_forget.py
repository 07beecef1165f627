"""Forgetting a user in an Iceberg lake (--lake_format iceberg): the user's rows leave the table,
its rejected table and the export delivered from it, and nothing in the warehouse still holds
them: no snapshot to travel back to, no data file (not even one an earlier import of the day left
behind). Oracles: pyiceberg's scans before the request, DuckDB's iceberg extension after it,
pyarrow reading every Parquet file under the warehouse, DuckDB reading the export.
"""
import json
import os

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.icebergkit import arrow_table, duckdb_rows, load, row, write_day
from transforms.lake.commit import KILL_AT

pytestmark = pytest.mark.engine

DAY1, DAY2 = '2023-05-01', '2023-05-02'
USER = 'user-5'


def _lake(tmp_path) -> tuple[str, str, list[str]]:
  """A source of two days, imported into an Iceberg lake; day 1 twice (the first import's files
  stay in the warehouse, listed by an old snapshot), and with a row the import rejects that
  carries the user's id. Day 1 exported to a Parquet folder."""
  source, warehouse = str(tmp_path / 'bucket'), str(tmp_path / 'wh')
  flags = ['--lake_format', 'iceberg', '--catalog', f'sqlite:///{tmp_path}/catalog.db']
  write_day(source, DAY1, 1, 24)
  write_day(source, DAY2, 100, 12)
  bad = row(DAY1, 5, insert_id='')   # rejected: missing_insert_id, the user's identifiers kept
  pq.write_table(arrow_table([bad]), os.path.join(source, f'dt={DAY1}', 'bad.parquet'))
  for day in (DAY1, DAY1, DAY2):
    run_cli('pipelines.import_events', '--source', source, '--date', day, '--lake', warehouse, *flags,
            '--max_rejected_ratio', '0.5')
  run_cli('pipelines.export_events', '--lake', warehouse, '--date', DAY1, '--dest',
          str(tmp_path / 'out'), *flags)
  return warehouse, str(tmp_path / 'out'), flags


def _holds(identifiers) -> bool:
  return USER in dict(identifiers).values()


def _parquet_with_user(warehouse: str) -> list[str]:
  """Every Parquet file under the warehouse whose rows (lake or rejected) name the user."""
  found = []
  for folder, _, names in os.walk(warehouse):
    for name in names:
      if name.endswith('.parquet'):
        t = pq.read_table(os.path.join(folder, name))
        if 'identifiers' in t.column_names and any(_holds(i) for i in t['identifiers'].to_pylist()):
          found.append(name)
        if 'original' in t.column_names and any(USER in (o or '') for o in t['original'].to_pylist()):
          found.append(name)
  return found


def _exported(out: str) -> tuple[int, int]:
  """(rows, rows naming the user) of day 1's export, read by DuckDB."""
  return duckdb.connect().execute(
      f"select count(*), count(*) filter (where identifiers like '%\"{USER}\"%') "
      f"from read_parquet('{out}/dt={DAY1}/*.parquet')").fetchone()


def test_forget_leaves_no_row_snapshot_or_file_that_holds_the_user(tmp_path, duckdb_iceberg):
  warehouse, out, flags = _lake(tmp_path)
  tbl, rejected = load(warehouse, flags[2:]), load(warehouse, flags[2:] + ['--table', 'eventferry.events_rejected'])
  before = tbl.scan().to_arrow().to_pylist()
  theirs = [r for r in before if _holds(r['identifiers'])]
  assert len(theirs) == 1 and len(tbl.snapshots()) == 3   # the user's one event, three commits
  assert any(USER in r['original'] for r in rejected.scan().to_arrow().to_pylist())
  assert _parquet_with_user(warehouse)   # both imports' files and the rejected row's
  assert _exported(out) == (sum(r['dt'].isoformat() == DAY1 for r in before), 1)

  proc = run_cli('pipelines.forget', '--lake', warehouse, '--user_id', USER, *flags)
  assert 'finished: 2 rows removed from 1 days, 1 deliveries redone' in proc.stdout, proc.stdout

  tbl = load(warehouse, flags[2:])
  want = [r for r in before if not _holds(r['identifiers'])]
  key = lambda r: r['insert_id']   # noqa: E731
  assert sorted(tbl.scan().to_arrow().to_pylist(), key=key) == sorted(want, key=key)
  assert {r[0] for r in duckdb_rows(duckdb_iceberg, tbl)} == {r['insert_id'] for r in want}
  assert [s.snapshot_id for s in tbl.snapshots()] == [tbl.current_snapshot().snapshot_id]
  assert _parquet_with_user(warehouse) == []
  assert _exported(out) == (sum(r['dt'].isoformat() == DAY1 for r in want), 0)
  audit = json.load(open(proc.stdout.rsplit('Audit: ', 1)[1].strip()))
  assert audit['days'][DAY1] == {'lake': {'done': True, 'rows_forgotten': 1},
                                 'rejected': {'done': True, 'rows_forgotten': 1}}
  again = run_cli('pipelines.forget', '--lake', warehouse, '--user_id', USER, *flags)
  assert 'nothing to do' in again.stdout


def test_forget_killed_after_the_commit_purges_on_the_rerun(tmp_path):
  warehouse, _, flags = _lake(tmp_path)
  killed = run_cli('pipelines.forget', '--lake', warehouse, '--user_id', USER, *flags, check=False,
                   env={KILL_AT: 'forget_table_committed:events/dt=' + DAY1})
  assert killed.returncode == -9
  tbl = load(warehouse, flags[2:])
  assert not any(_holds(r['identifiers']) for r in tbl.scan().to_arrow().to_pylist())
  assert len(tbl.snapshots()) > 1 and _parquet_with_user(warehouse)   # not purged yet
  held = json.loads(open(next(
      os.path.join(warehouse, '_eventferry', 'locks', n) for n in os.listdir(
          os.path.join(warehouse, '_eventferry', 'locks')) if n.startswith('forget-'))).read())
  proc = run_cli('pipelines.forget', '--lake', warehouse, '--user_id', USER, *flags,
                 '--break_lock', held['run_id'])
  assert 'finished: 2 rows removed' in proc.stdout, proc.stdout
  assert _parquet_with_user(warehouse) == []
  assert len(load(warehouse, flags[2:]).snapshots()) == 1


def test_forget_dry_run_on_iceberg_names_the_files_and_changes_nothing(tmp_path):
  warehouse, _, flags = _lake(tmp_path)
  snapshot = load(warehouse, flags[2:]).current_snapshot().snapshot_id
  proc = run_cli('pipelines.forget', '--lake', warehouse, '--user_id', USER, *flags, '--dry_run')
  day = [line for line in proc.stdout.splitlines() if line.startswith(f'dt={DAY1}')]
  assert len(day) == 1 and 'lake: 1 rows in 1 files' in day[0] and 'rejected: 1 rows' in day[0]
  assert 'dry run: nothing was changed' in proc.stdout
  assert load(warehouse, flags[2:]).current_snapshot().snapshot_id == snapshot
