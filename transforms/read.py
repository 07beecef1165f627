"""Reading a customer's day partition: the `_SUCCESS` gate, the file inventory and row groups.

`inspect_day` runs when the job is launched, before the pipeline is built: it lists
PREFIX/dt=DAY/, refuses a day without `_SUCCESS`, reads every data file's Parquet footer and checks
that its columns can be read as the import contract, so a bad file stops the run with its name
before any worker starts. The pipeline then reads row groups in parallel (`ReadRowGroups`), a run
of small files as one batch (`read_tasks`).
"""
import dataclasses
import datetime
import hashlib
import json
import re
import time
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from schemas.events import SOURCE_FILE, SOURCE_ROW
from transforms import progress
from transforms.kernels.coerce import ContractError
from transforms.lake.names import SUCCESS
from transforms.stores import fs
from transforms.validate import check_columns, validate_batch

__all__ = ['BATCH_ROWS', 'SourceError', 'RowGroup', 'DayInventory', 'is_side_file', 'WAIT_ADVICE',
           'wait_for_success', 'DAY_FOLDER', 'prefix_problem', 'prefix_days', 'inspect_day',
           'with_lineage', 'ReadTask', 'read_tasks', 'ReadRowGroups', 'ReadDays']

BATCH_ROWS = 262_144


class SourceError(RuntimeError):
  """The source day cannot be imported as it is; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class RowGroup:
  dt: str
  path: str
  name: str    # path relative to the day's folder: the lineage's `_source_file`
  index: int
  first_row: int
  rows: int


@dataclasses.dataclass
class DayInventory:
  dt: str
  directory: str
  files: dict[str, int]          # data file path -> bytes
  ignored: list[str]             # side files we do not read (.crc, _committed_*, _temporary/ ...)
  row_groups: list[RowGroup]

  @property
  def bytes(self) -> int:
    return sum(self.files.values())

  @property
  def rows(self) -> int:
    return sum(g.rows for g in self.row_groups)

  @property
  def source_files(self) -> dict[str, int]:
    """Data file name (relative to the day's folder) -> bytes, as the lake manifest records it."""
    return {path[len(self.directory):].lstrip('/'): size for path, size in self.files.items()}

  @property
  def fingerprint(self) -> str:
    """What the day's input was, from the listing and the footers (no data read): names, sizes
    and row counts. A backfill skips a lake day whose manifest holds the same fingerprint."""
    rows: dict[str, int] = {}
    for g in self.row_groups:
      rows[g.path] = rows.get(g.path, 0) + g.rows
    listing = sorted((name, size, rows.get(fs.join(self.directory, name), 0))
                     for name, size in self.source_files.items())
    return 'sha256:' + hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def is_side_file(name: str) -> bool:
  """`name` is relative to the day's folder. A file or any folder on its way that starts with `_`
  or `.` is the writer's bookkeeping (`.crc`, `_committed_*`, `_temporary/`, a sub-folder's
  `_SUCCESS`), never data. Every other file is data, whatever its name, and must be Parquet."""
  return any(part.startswith(('_', '.')) for part in name.split('/'))


WAIT_ADVICE = 'rerun then, or pass --wait_for_success 2h to wait for it'


def wait_for_success(directory: str, timeout_s: float, sleep=time.sleep,
                     advice: str = WAIT_ADVICE) -> None:
  """Polls for DIRECTORY/_SUCCESS with backoff (5 s doubling to 5 min) until `timeout_s`. A
  source prefix that does not exist or holds no dt= folders is refused at once; `advice` ends
  the refusal of a day not (yet) complete."""
  marker = fs.join(directory, SUCCESS)
  if fs.exists(marker):
    return
  prefix, day_folder = directory.rstrip('/').rsplit('/', 1)
  problem = prefix_problem(prefix)
  if problem:
    raise SourceError(problem)
  deadline = time.monotonic() + timeout_s
  delay = 5.0
  while not fs.exists(marker):
    listing = fs.list_files(directory)  # a missing bucket or LIST permission is an error
    left = deadline - time.monotonic()
    if left <= 0:
      waited = f' after waiting {timeout_s:.0f}s' if timeout_s else ''
      if not listing:
        raise SourceError(f'{prefix} has no {day_folder} folder{waited}: the day was not '
                          f'delivered ({prefix_days(prefix)}); {advice}.')
      raise SourceError(
          f'{marker} does not exist{waited}: the day is not complete. The customer writes '
          f'{SUCCESS} when every file of the day is in place; {advice}.')
    sleep(min(delay, left))
    delay = min(delay * 2, 300.0)


DAY_FOLDER = re.compile(r'dt=\d{4}-\d{2}-\d{2}')


def _top_names(prefix: str) -> list[str]:
  """What lies directly under `prefix`: file names, and folder names ending in '/'."""
  start = len(fs.join(prefix, ''))
  names = set()
  for path in fs.list_files(prefix):
    name, slash, _ = path[start:].partition('/')
    names.add(name + slash)
  return sorted(names)


def prefix_problem(prefix: str) -> str | None:
  """Why `prefix` cannot be a source prefix (nothing under it, or no dt=YYYY-MM-DD folders), naming
  a few of the names it holds; None when it holds day folders."""
  names = _top_names(prefix)
  if not names:
    return (f'source prefix {prefix} does not exist (nothing is stored under it): check --source '
            f'for a typo')
  if not any(DAY_FOLDER.fullmatch(n.rstrip('/')) for n in names):
    return (f'source prefix {prefix} has no dt=YYYY-MM-DD folders (it holds '
            f'{", ".join(names[:5])}{", ..." if len(names) > 5 else ""}): --source must be the '
            f'prefix right above the dt= folders')
  return None


def prefix_days(prefix: str) -> str:
  days = [n.rstrip('/') for n in _top_names(prefix) if DAY_FOLDER.fullmatch(n.rstrip('/'))]
  return f'it has {len(days)} days, {days[0]} to {days[-1]}' if days else 'it has no days'


def inspect_day(prefix: str, day: datetime.date) -> DayInventory:
  directory = fs.partition_dir(prefix, day.isoformat())
  listing = fs.list_files(directory)
  files, ignored = {}, []
  for path, size in sorted(listing.items()):
    name = path[len(directory):].lstrip('/')
    if name == SUCCESS or name.endswith('/') or not name:   # a store's folder marker object
      continue
    if is_side_file(name):
      ignored.append(name)
    else:
      files[path] = size
  groups: list[RowGroup] = []
  probed: set[pa.Schema] = set()
  for path in files:
    groups.extend(_row_groups(day.isoformat(), path, path[len(directory):].lstrip('/'),
                              files[path], probed))
  return DayInventory(day.isoformat(), directory, files, ignored, groups)


def _row_groups(dt: str, path: str, name: str, size: int, probed: set[pa.Schema]) -> list[RowGroup]:
  """The file's row groups, once its schema passed the contract's probe (run once per schema in
  `probed`: the files of a day mostly share one, and the probe cost 3 ms a file)."""
  if size == 0:
    raise SourceError(f'{path} is empty (0 bytes), not a Parquet file. Remove it or rewrite it, '
                      f'then rewrite {SUCCESS}.')
  try:
    with fs.open_read(path) as f:
      meta = pq.ParquetFile(f).metadata
      schema = meta.schema.to_arrow_schema()
  except (pa.ArrowInvalid, OSError) as e:
    raise SourceError(f'{path} cannot be read as Parquet ({e}). Rewrite the file, or remove it '
                      f'if it does not belong to the day: every file under the day folder is data '
                      f'unless its name or a folder on its way starts with _ or .; nothing was '
                      f'published.') from e
  try:
    if schema not in probed:
      check_columns(schema)
      validate_batch(_empty(schema), 'probe')
      probed.add(schema)
  except ContractError as e:
    raise SourceError(f'{path}: {e}. See `./run.sh schema import` for the contract.') from e
  out, first = [], 0
  for i in range(meta.num_row_groups):
    rows = meta.row_group(i).num_rows
    out.append(RowGroup(dt, path, name, i, first, rows))
    first += rows
  return out


def _empty(schema: pa.Schema) -> pa.RecordBatch:
  # from_arrays, not from_pylist: a dictionary with unsigned indices (Polars' Categorical) is
  # refused by from_pylist, while the reader hands it over as signed indices anyway
  batch = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
  return with_lineage(batch, '', 0)


def with_lineage(batch: pa.RecordBatch, source: str, first_row: int) -> pa.RecordBatch:
  """Adds `_source_file` and `_source_row` (0-based row number within the file)."""
  n = batch.num_rows
  source_col = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                              pa.array([source])).cast(pa.string())
  rows = pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
  return pa.RecordBatch.from_arrays(batch.columns + [source_col, rows],
                                    names=batch.schema.names + [SOURCE_FILE, SOURCE_ROW])


@dataclasses.dataclass(frozen=True)
class ReadTask:
  """Row groups read as one element. A class, not a tuple: Beam infers a tuple's element types
  one by one and then type-checks them per element (3 s for a task of 2,000 files)."""
  groups: tuple[RowGroup, ...]


def read_tasks(groups: list[RowGroup], rows: int = BATCH_ROWS) -> list[ReadTask]:
  """The elements of the read: one per row group, except that a run of files of one row group each
  (a day of many small files, as Firehose or Kafka Connect write) is read together, up to `rows`
  rows, into one batch. Every later step costs per batch (a validation, a spill per shard), and a
  day of 2,000 five-row files cost 7.5 ms a file that way. Only whole one-group files are packed:
  the lake's bytes depend on where its row ranges begin and end (see kernels/lineage.py)."""
  per_file: dict[str, int] = {}
  for g in groups:
    per_file[g.path] = per_file.get(g.path, 0) + 1
  tasks: list[ReadTask] = []
  run: list[RowGroup] = []
  run_rows = 0
  for g in groups:
    whole = per_file[g.path] == 1 and g.rows <= rows
    if run and not (whole and run[0].dt == g.dt and run_rows + g.rows <= rows):
      tasks.append(ReadTask(tuple(run)))
      run, run_rows = [], 0
    if whole:
      run.append(g)
      run_rows += g.rows
    else:
      tasks.append(ReadTask((g,)))
  if run:
    tasks.append(ReadTask(tuple(run)))
  return tasks


class ReadRowGroups(beam.DoFn):
  """A read task (see read_tasks) -> (dt, raw batch with lineage columns), in batches of at most
  BATCH_ROWS rows; the files of a packed task that share a schema come as one batch."""
  rows_read = Metrics.counter('eventferry.read', 'rows_in')

  def process(self, task: ReadTask) -> typing.Iterator[tuple[str, pa.RecordBatch]]:
    dt = task.groups[0].dt
    if len(task.groups) == 1:   # a row group larger than BATCH_ROWS comes in several batches
      for batch in self._read(task.groups[0]):
        yield dt, batch
      return
    pending: list[pa.RecordBatch] = []
    for group in task.groups:   # small files: Arrow's threads cost more than they save here
      for batch in self._read(group, threads=False):
        if pending and batch.schema != pending[0].schema:
          yield dt, pa.concat_batches(pending)
          pending = []
        pending.append(batch)
    if pending:
      yield dt, pa.concat_batches(pending)

  def _read(self, group: RowGroup, threads: bool = True) -> typing.Iterator[pa.RecordBatch]:
    with fs.open_read(group.path) as f:
      parquet = pq.ParquetFile(f, coerce_int96_timestamp_unit='ms')
      first = group.first_row
      batches = parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group.index],
                                     use_threads=threads)
      while True:
        try:
          batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:   # the footer read, the pages do not
          raise SourceError(
              f'{group.path} cannot be read at row group {group.index} ({e}). Rewrite the file, '
              f'or remove it if it does not belong to the day; nothing was published.') from None
        if batch is None:
          return
        self.rows_read.inc(batch.num_rows)
        progress.advance(batch.num_rows)
        yield with_lineage(batch, group.name, first)
        first += batch.num_rows


class ReadDays(beam.PTransform):
  """The planned days' row groups (DayInventory.row_groups) -> (dt, raw batch with lineage),
  read task by task and spread over the workers."""

  def __init__(self, row_groups: list):
    super().__init__()
    self._row_groups = row_groups

  def expand(self, pbegin):
    return (pbegin
            | 'PlanRowGroups' >> beam.Create(read_tasks(self._row_groups))
            | 'SpreadRowGroups' >> beam.Reshuffle()
            | 'ReadRowGroups' >> beam.ParDo(ReadRowGroups()))
