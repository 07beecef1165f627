"""Export files encoded as their rows arrive, straight into the store's write stream.

A file never exists whole in memory: Parquet goes out a row group at a time (pyarrow's
ParquetWriter over the stream), the row formats a slice of rows at a time (through zlib when
gzipped). The stream counts the bytes and their sha256 for the manifest on the way.

Size limits: a file is closed before a slice would take it past --max_file_bytes (the slice then
starts the next file) or --max_rows_per_file. A slice that is over the byte limit on its own is
halved until it fits or holds one row. To know a slice's size before committing it, the row
formats encode it once and gzip tries it on a copy of the compressor (flushed at each slice, so
the count is exact); Parquet encodes the slice on its own first (row groups do not depend on each
other, and the sum of those sizes bounds the file's), which costs a second encoding only when
--max_file_bytes is given.
"""
import collections
import concurrent.futures
import typing
import zlib

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.stores import fs
from transforms.lake.commit import StagedFile
from transforms.export import MAP_FIELDS, ROW_FORMATS, Format

__all__ = ['SLICE_ROWS', 'ordered', 'parquet_options', 'ExportFiles']

SLICE_ROWS = 65_536   # rows encoded at a time: one Parquet row group


def ordered(fn: typing.Callable, items: typing.Iterable, workers: int = 2) -> typing.Iterator:
  """fn(item) for each item, on `workers` threads, in the items' order; at most workers + 1
  items are taken ahead, so memory holds a few slices, not the file. Arrow's kernels release
  the GIL, so the threads really run side by side."""
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='convert') as pool:
    window: collections.deque[concurrent.futures.Future] = collections.deque()
    for item in items:
      window.append(pool.submit(fn, item))
      if len(window) > workers:
        yield window.popleft().result()
    while window:
      yield window.popleft().result()


class _Ready(typing.NamedTuple):
  """A slice encoded for the open file, not yet written: `size` is the file's size if it were
  written and the file closed."""
  rows: int
  size: int
  payload: typing.Any


class _RowFile:
  """JSON lines, CSV, XML or Avro: a head, slices of rows, a tail; optionally gzip."""

  def __init__(self, fmt: Format, sink: fs.Upload):
    self._fmt, self._sink = fmt, sink
    head, self._encode, self._tail = ROW_FORMATS[fmt.name]
    self._zip = zlib.compressobj(6, zlib.DEFLATED, 31) if fmt.gzipped else None  # mtime 0
    self._first = True
    self._out(self._pack(head(fmt)))

  def _pack(self, data: bytes, zipper=None) -> bytes:
    zipper = zipper or self._zip
    return zipper.compress(data) if zipper else data

  def _out(self, data: bytes) -> None:
    if data:
      self._sink.write(data)

  def write(self, table: pa.Table) -> None:
    self._out(self._pack(self._encode(table, self._fmt, self._first)))
    self._first = False

  def ready(self, table: pa.Table) -> _Ready:
    data = self._encode(table, self._fmt, self._first)
    if self._zip is None:
      return _Ready(table.num_rows, self._sink.bytes + len(data) + len(self._tail), data)
    trial = self._zip.copy()   # the open file's compressor, tried on this slice
    data = trial.compress(data) + trial.flush(zlib.Z_SYNC_FLUSH)
    end = trial.copy()
    size = self._sink.bytes + len(data) + len(end.compress(self._tail) + end.flush())
    return _Ready(table.num_rows, size, (data, trial))

  def commit(self, ready: _Ready) -> None:
    if self._zip is None:
      self._out(ready.payload)
    else:
      data, self._zip = ready.payload
      self._out(data)
    self._first = False

  def close(self) -> None:
    self._out(self._pack(self._tail))
    if self._zip is not None:
      self._out(self._zip.flush())


def parquet_options(fmt: Format, schema: pa.Schema) -> dict:
  """Min/max statistics only where a reader can prune on them (not JSON text), and no dictionary
  for insert_id, unique within a day by contract (it would be built and then dropped)."""
  text = set(MAP_FIELDS)
  return {'compression': fmt.compression,
          'write_statistics': [n for n in schema.names if n not in text],
          'use_dictionary': [n for n in schema.names if n != 'insert_id']}


class _ParquetFile:
  def __init__(self, fmt: Format, sink: fs.Upload, schema: pa.Schema):
    self._options = parquet_options(fmt, schema)
    self._writer = pq.ParquetWriter(sink, schema, **self._options)
    self._bound = 0   # the sum of the committed row groups' sizes as files of their own

  def write(self, table: pa.Table) -> None:
    self._writer.write_table(table, row_group_size=table.num_rows)

  def ready(self, table: pa.Table) -> _Ready:
    alone = pa.BufferOutputStream()
    pq.write_table(table, alone, row_group_size=table.num_rows, **self._options)
    return _Ready(table.num_rows, self._bound + alone.tell(), (table, alone.tell()))

  def commit(self, ready: _Ready) -> None:
    table, size = ready.payload
    self.write(table)
    self._bound += size

  def close(self) -> None:
    self._writer.close()


def _open(fmt: Format, sink: fs.Upload, schema: pa.Schema) -> _ParquetFile | _RowFile:
  return _ParquetFile(fmt, sink, schema) if fmt.name == 'parquet' else _RowFile(fmt, sink)


class ExportFiles:
  """Rows -> staged export files of one shard, chunk after chunk. `place(c)` gives chunk c's
  (name in the partition, staging path)."""

  def __init__(self, fmt: Format, schema: pa.Schema, place: typing.Callable[[int], tuple[str, str]],
               max_rows: int | None = None, max_bytes: int | None = None):
    self._fmt, self._schema, self._place = fmt, schema, place
    self._max_rows, self._max_bytes = max_rows, max_bytes
    self._staged: list[StagedFile] = []
    self._file: _ParquetFile | _RowFile | None = None
    self._sink: fs.Upload | None = None
    self._rows = 0

  def write(self, table: pa.Table) -> None:
    pending = [table.slice(i, SLICE_ROWS) for i in range(0, table.num_rows, SLICE_ROWS)]
    while pending:
      piece = pending.pop(0)
      file = self._file if self._file is not None else self._start()
      room = self._max_rows - self._rows if self._max_rows else piece.num_rows
      if piece.num_rows > room:
        pending[:0] = [piece.slice(0, room), piece.slice(room)]
        continue
      if self._max_bytes:
        ready = file.ready(piece)
        if ready.size > self._max_bytes and self._rows:
          self._finish()                     # full: the slice starts the next file
          pending.insert(0, piece)
          continue
        if ready.size > self._max_bytes and piece.num_rows > 1:
          half = piece.num_rows // 2
          pending[:0] = [piece.slice(0, half), piece.slice(half)]
          continue
        file.commit(ready)
      else:
        file.write(piece)
      self._rows += piece.num_rows
      if self._max_rows and self._rows >= self._max_rows:
        self._finish()

  def write_all(self, tables: typing.Iterable[pa.Table]) -> None:
    """Writes every table of `tables`. The next table is made (read, converted) in this thread
    while another thread encodes the one before: both mostly run in Arrow and zlib, outside
    the GIL, so on two cores the two overlap. Files and bytes are the same as with write()."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='encode') as encoder:
      busy = None
      for table in tables:
        if busy is not None:
          busy.result()
        busy = encoder.submit(self.write, table)
      if busy is not None:
        busy.result()

  def close(self) -> list[StagedFile]:
    """Finishes the open file; every file staged, in order."""
    if self._file is not None:
      self._finish()
    return self._staged

  def _start(self) -> _ParquetFile | _RowFile:
    self._name, path = self._place(len(self._staged))
    self._sink = fs.open_write(path)
    self._file = _open(self._fmt, self._sink, self._schema)
    self._rows = 0
    return self._file

  def _finish(self) -> None:
    assert self._file is not None and self._sink is not None   # called only with a file open
    self._file.close()
    self._sink.close()
    self._staged.append(StagedFile(self._name, self._sink.path, self._rows, self._sink.bytes,
                                   self._sink.sha256))
    self._file = self._sink = None
