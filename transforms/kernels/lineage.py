"""Row ranges by source file. A read batch may hold a run of small files (transforms/read.py
read_tasks), yet the files a day commits must not depend on how its rows were batched: Parquet's
writer cuts pages where the chunks of a column end, so the same rows in other chunks give other
bytes. The dedupe and the rejected-row writer therefore cut every part into one range per source
file, the chunks the day gets when each file is read on its own."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import SOURCE_FILE

__all__ = ['per_source_file']


def per_source_file(part: pa.Table | pa.RecordBatch, column: str = SOURCE_FILE) -> list[pa.Table]:
  """`part` (rows in source order, so each file's rows are contiguous) as one table per file."""
  table = pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part
  if table.num_rows < 2:
    return [table]
  files = table[column].combine_chunks()
  starts = np.flatnonzero(np.asarray(pc.not_equal(files[1:], files[:-1]))) + 1
  bounds = [0, *starts.tolist(), table.num_rows]
  return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]
