"""One day's commit into the Iceberg lake: what CommitDay does in place of the two Hive partition
commits (lake and rejected rows) when the lake is an Iceberg table (transforms/lake/iceberg.py).

The rejected rows come staged as the Hive lake stages them (one small file per day); they are
rewritten with the day column and the rejected table's field ids into that table's data folder.
The day's lake files were written there by the workers already: only their footers are read.
Each table then gets one overwrite snapshot of the day (iceberg.commit_day).
"""
import typing


from transforms.lake import iceberg
from transforms.lake.commit import StagedFile, shard_name, write_parquet
from transforms.stores import fs
from transforms.stores.fs import partition_dir

__all__ = ['commit_rejected', 'commit_lake', 'target']


def target(lake: iceberg.IcebergLake, name: str, dt: str) -> str:
  """How reports and logs name a day of a table."""
  return f'{name}/{iceberg.DAY}={dt}'


def commit_rejected(lake: iceberg.IcebergLake, dt: str, staged: list[StagedFile], run_id: str,
                    before_commit: typing.Callable[[], None]) -> int | None:
  """Replaces the day of the rejected table by the rows of `staged`; -> its snapshot id."""
  tbl = iceberg.table(lake, lake.rejected_table)
  schema, root = iceberg.file_schema(tbl), iceberg.data_root(tbl, run_id)
  paths = []
  for f in staged:
    if f.rows:
      rows = fs.read_parquet(f.path)
      name = shard_name(0, 1)
      paths.append(write_parquet(iceberg.with_day(rows, dt, schema),
                                 fs.join(partition_dir(root, dt), name), name).path)
  snapshot = iceberg.commit_day(lake, lake.rejected_table, dt, paths, run_id, before_commit)
  fs.delete(f.path for f in staged)
  return snapshot


def commit_lake(lake: iceberg.IcebergLake, dt: str, staged: list[StagedFile], run_id: str,
                before_commit: typing.Callable[[], None], inputs: dict[str, str | int | None] | None = None
                ) -> int | None:
  """Replaces the day of the lake table by the workers' files; files without rows are dropped
  (an Iceberg day has no fixed number of parts). `inputs`: iceberg.commit_day's. -> the snapshot id."""
  empty = [f.path for f in staged if not f.rows]
  fs.delete(empty)
  return iceberg.commit_day(lake, lake.table, dt, [f.path for f in staged if f.rows], run_id,
                            before_commit, inputs)
