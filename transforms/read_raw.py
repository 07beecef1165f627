"""Raw JSON events as they arrive -> RawChunks (transforms/kernels/raw.py) for IngestEvents: from
JSON-lines files (matched once, or watched) or from Pub/Sub.

The steps keep the labels they have always had (MatchFiles or WatchFiles, ReadJsonLines; ReadPubSub,
Payloads, Batch, Chunk) at the top of the pipeline: a streaming Dataflow job can only be updated
in place by a pipeline whose steps have the same names.
"""
import dataclasses
import datetime
import logging
import time
import typing

import apache_beam as beam
from apache_beam.io import fileio

from transforms import progress
from transforms.kernels.raw import RawChunk
from transforms.stores import fs
from transforms.watch import WatchFiles

__all__ = ['CHUNK_ROWS', 'BLOCK_BYTES', 'BOM', 'ReadJsonLines', 'PubsubPayloads', 'read_files',
           'read_pubsub']

CHUNK_ROWS = 10_000
BLOCK_BYTES = 8 << 20
BOM = b'\xef\xbb\xbf'   # UTF-8 byte order mark, which some Windows tools write first


# Plain pickle: Beam's default coder for unknown types inspects them first and was 20x slower.
beam.coders.registry.register_coder(RawChunk, beam.coders.PickleCoder)


def _now_ms() -> int:
  return int(time.time() * 1000)


class ReadJsonLines(beam.DoFn):
  """A file -> RawChunks of up to CHUNK_ROWS lines (line numbers from 1). Compression follows the
  extension. With `arrival`, the file's modification time is when its rows arrived. A compressed
  file that is corrupt or ends early yields the lines before the damage, then a chunk marked
  unreadable, which becomes one rejected row saying where reading stopped."""

  def __init__(self, arrival: bool):
    self._arrival = arrival

  def process(self, metadata):
    path = metadata.path
    modified = int(metadata.last_updated_in_seconds * 1000) or _now_ms()
    rows: list[int]
    lines: list[bytes]
    rows, lines, number, rest, first = [], [], 0, b'', True
    blocks = fs.read_blocks(path, BLOCK_BYTES)
    while True:
      try:
        block = next(blocks, b'')
      except fs.Unreadable as e:   # what was read counts; the damaged rest is one rejected row
        logging.warning('%s: lines from %d on are dead-lettered as unreadable_file', e, number + 1)
        yield from self._chunks(path, rows, lines, modified)
        yield dataclasses.replace(self._chunk(path, [number + 1], [b''], modified), unreadable=str(e))
        return
      data = rest + block
      if first and (len(data) >= len(BOM) or b'\n' in data or not block):   # the file's start only
        first, data = False, data[len(BOM):] if data.startswith(BOM) else data
      pieces = data.split(b'\n')
      rest = pieces.pop() if block else b''
      if b'\r' not in data and all(map(bytes.strip, pieces)):   # the usual case, in C
        rows.extend(range(number + 1, number + 1 + len(pieces)))
        lines.extend(pieces)
        number += len(pieces)
      else:
        for line in pieces:
          number += 1
          if line.strip():
            rows.append(number)
            lines.append(line.rstrip(b'\r'))
      if len(lines) >= CHUNK_ROWS or not block:
        yield from self._chunks(path, rows, lines, modified)
        rows, lines = [], []
      if not block:
        return

  def _chunks(self, path: str, rows: list, lines: list, modified: int) -> typing.Iterator[RawChunk]:
    for start in range(0, len(lines), CHUNK_ROWS):
      yield self._chunk(path, rows[start:start + CHUNK_ROWS], lines[start:start + CHUNK_ROWS],
                        modified)

  def _chunk(self, path: str, rows: list, lines: list, modified: int) -> RawChunk:
    n = len(lines)
    progress.advance(n)
    return RawChunk(source=[path] * n, rows=rows, payloads=lines,
                    arrival_ms=[modified] * n if self._arrival else None, received_ms=modified)


class PubsubPayloads(beam.DoFn):
  """PubsubMessage -> (message id, payload, server-time fallback ms, publish ms)."""

  def __init__(self, source: str, attribute: str | None):
    self._source = source
    self._attribute = attribute

  def process(self, message, timestamp=beam.DoFn.TimestampParam):
    published = int(message.publish_time.timestamp() * 1000) if message.publish_time else \
        timestamp.micros // 1000
    fallback = published
    if self._attribute and message.attributes.get(self._attribute):
      fallback = _attribute_ms(message.attributes[self._attribute], published)
    yield f'{self._source}/{message.message_id}', message.data, fallback, published


def _attribute_ms(value: str, default: int) -> int:
  try:
    return int(value)
  except ValueError:
    pass
  try:
    return int(datetime.datetime.fromisoformat(value.replace('Z', '+00:00')).timestamp() * 1000)
  except ValueError:
    return default   # the payload's own server_ts, or the publish time, decides


def _messages_chunk(messages: list) -> RawChunk:
  return RawChunk(source=[m[0] for m in messages], rows=[0] * len(messages),
                  payloads=[m[1] for m in messages], fallback_ms=[m[2] for m in messages],
                  arrival_ms=[m[3] for m in messages], received_ms=max(m[3] for m in messages))


def read_files(pipeline: beam.Pipeline, pattern: str, watch_s: float | None = None,
               local: bool = False) -> beam.PCollection:
  """The files matching `pattern` (every `watch_s` seconds, new ones only, when watching; `local`:
  on Beam's local streaming runner) -> RawChunks."""
  if watch_s is not None:
    files = pipeline | 'WatchFiles' >> WatchFiles(pattern, watch_s, local=local)
  else:
    files = pipeline | 'MatchFiles' >> fileio.MatchFiles(pattern)
  return (files | 'Spread' >> beam.Reshuffle()
          | 'ReadJsonLines' >> beam.ParDo(ReadJsonLines(arrival=watch_s is not None)))


def read_pubsub(pipeline: beam.Pipeline, subscription: str | None, topic: str | None,
                attribute: str | None) -> beam.PCollection:
  """Messages of the subscription (or of a temporary one on `topic`) -> RawChunks; `attribute`
  names the one holding the server time. ValueError for a malformed subscription or topic."""
  from apache_beam.io.gcp.pubsub import ReadFromPubSub   # not loaded by Beam's import (compat/startup.py)
  read = ReadFromPubSub(subscription=subscription, topic=topic, with_attributes=True)
  return (pipeline | 'ReadPubSub' >> read
          | 'Payloads' >> beam.ParDo(PubsubPayloads(subscription or topic or '', attribute))
          | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=CHUNK_ROWS)
          | 'Chunk' >> beam.Map(_messages_chunk))
