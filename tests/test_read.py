"""The source gate and the inventory of a customer's day."""
import datetime
import os

import pytest

from tests.conftest import event, table, write_file
from transforms.stores import fs
from transforms.read import SourceError, inspect_day, wait_for_success


def arriving_day(tmp_path) -> str:
  """A customer's day folder whose files are there but not yet its _SUCCESS."""
  day = tmp_path / 'dt=2023-01-01'
  write_file(str(day / 'part-0.parquet'), table([event(1)]))
  return str(day)


def test_wait_for_success_polls_with_backoff_until_the_marker_appears(tmp_path):
  waits, day = [], arriving_day(tmp_path)

  def sleep(seconds):
    waits.append(seconds)
    if len(waits) == 3:
      fs.write_bytes(os.path.join(day, '_SUCCESS'), b'')

  wait_for_success(day, 3600, sleep=sleep)
  assert waits == [5.0, 10.0, 20.0]


def test_wait_for_success_gives_up_saying_what_is_missing(tmp_path):
  with pytest.raises(SourceError, match='_SUCCESS does not exist after waiting'):
    wait_for_success(arriving_day(tmp_path), 0.01, sleep=lambda s: None)


def test_inventory_skips_side_files_and_refuses_empty_or_foreign_files(tmp_path):
  day = tmp_path / 'dt=2023-01-01'
  write_file(str(day / 'part-00000-abc-c000.snappy.parquet'), table([event(1), event(2)]))
  for side in ('.part-00000-abc-c000.snappy.parquet.crc', '_committed_123', '_started_123',
               '.DS_Store', '_SUCCESS'):
    fs.write_bytes(str(day / side), b'')
  inv = inspect_day(str(tmp_path), datetime.date(2023, 1, 1))
  assert inv.rows == 2 and len(inv.files) == 1
  assert sorted(inv.ignored) == ['.DS_Store', '.part-00000-abc-c000.snappy.parquet.crc',
                                 '_committed_123', '_started_123']
  fs.write_bytes(str(day / 'empty.parquet'), b'')
  with pytest.raises(SourceError, match='empty.parquet is empty'):
    inspect_day(str(tmp_path), datetime.date(2023, 1, 1))
  os.remove(day / 'empty.parquet')
  fs.write_bytes(str(day / 'notes.parquet'), b'this is not parquet')
  with pytest.raises(SourceError, match='notes.parquet cannot be read as Parquet'):
    inspect_day(str(tmp_path), datetime.date(2023, 1, 1))


def test_sub_folders_are_read_and_side_rules_apply_to_folders(tmp_path):
  """Spark, Hive and Firehose write dt=D/hour=HH/part-*.parquet; names are relative to the day."""
  day = tmp_path / 'dt=2023-01-01'
  write_file(str(day / 'hour=01' / 'part-1.parquet'), table([event(1), event(2)]))
  write_file(str(day / 'hour=02' / 'deep' / '000000000000'), table([event(3)]))   # no extension
  write_file(str(day / '_temporary' / '0' / 'part-9.parquet'), table([event(9)]))
  write_file(str(day / 'hour=03' / '.hidden' / 'part-8.parquet'), table([event(8)]))
  for side in ('hour=01/_SUCCESS', 'hour=01/.part-1.parquet.crc', 'hour=02/_committed_1', '_SUCCESS'):
    fs.write_bytes(str(day / side), b'')
  inv = inspect_day(str(tmp_path), datetime.date(2023, 1, 1))
  assert sorted(inv.source_files) == ['hour=01/part-1.parquet', 'hour=02/deep/000000000000']
  assert sorted(g.name for g in inv.row_groups) == sorted(inv.source_files)
  assert inv.rows == 3
  assert sorted(inv.ignored) == ['_temporary/0/part-9.parquet', 'hour=01/.part-1.parquet.crc',
                                 'hour=01/_SUCCESS', 'hour=02/_committed_1',
                                 'hour=03/.hidden/part-8.parquet']


@pytest.mark.parametrize('name', ['notes.txt', 'hour=01/events.json', 'hour=01/part-2.csv'])
def test_a_file_that_is_neither_side_file_nor_parquet_stops_the_day_naming_it(tmp_path, name):
  day = tmp_path / 'dt=2023-01-01'
  write_file(str(day / 'part-0.parquet'), table([event(1)]))
  fs.write_bytes(str(day / name), b'{"insert_id": "x"}\n')
  fs.write_bytes(str(day / '_SUCCESS'), b'')
  with pytest.raises(SourceError, match=f'{name} cannot be read as Parquet.*starts with _ or \\.'):
    inspect_day(str(tmp_path), datetime.date(2023, 1, 1))
