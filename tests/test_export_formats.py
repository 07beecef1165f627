"""Export formats on customers' awkward days, in process, read back with independent readers
(tests/exportkit.py): empty maps, null map values, CR, codecs, flags that cannot work, a
destination that overlaps the lake."""
import os

import pytest

from tests.exportkit import (data_files, expected, export, lake_day, lake_row, read_export,
                             xml_expected)

pytestmark = pytest.mark.engine

DT = '2023-01-01'
FORMATS = ['parquet', 'jsonl', 'csv', 'avro', 'xml']


def read_day(dest, fmt, **dialect):
  return sorted((r for f in data_files(dest) for r in read_export(f, fmt, **dialect)),
                key=lambda r: r['insert_id'])


@pytest.mark.parametrize('fmt', FORMATS)
def test_a_day_whose_map_columns_are_empty_in_every_row_exports(tmp_path, fmt):
  """Many customers send no user or event properties: every map of a file empty, next to a file
  of one row and a file of no rows."""
  empty = {'user_properties': [], 'event_properties': [], 'platform_properties': []}
  files = [[lake_row(i, **empty) for i in range(3)], [lake_row(9, identifiers=[], **empty)], []]
  lake_day(tmp_path / 'lake', DT, files)
  assert export(tmp_path / 'lake', tmp_path / 'dest', '--date', DT, '--format', fmt) == 0
  assert read_day(tmp_path / 'dest', fmt) == expected([r for f in files for r in f], DT)


def test_xml_carries_carriage_returns_and_tells_null_from_empty(tmp_path):
  rows = [lake_row(1, event_properties=[('crlf', 'a\r\nb'), ('cr', 'x\ry'), ('none', None),
                                        ('empty', ''), ('amp', '<&>"\'')],
                   event_key='a\rb')]
  lake_day(tmp_path / 'lake', DT, [rows])
  assert export(tmp_path / 'lake', tmp_path / 'dest', '--date', DT, '--format', 'xml') == 0
  got = read_day(tmp_path / 'dest', 'xml')
  assert got == xml_expected(expected(rows, DT))
  assert got[0]['event_properties']['none'] is None and got[0]['event_properties']['empty'] == ''


def test_avro_snappy_reads_back_with_fastavro(tmp_path):
  rows = [lake_row(i) for i in range(5)]
  lake_day(tmp_path / 'lake', DT, [rows])
  assert export(tmp_path / 'lake', tmp_path / 'dest', '--date', DT, '--format', 'avro',
                '--compression', 'snappy') == 0
  import fastavro
  with open(data_files(tmp_path / 'dest')[0], 'rb') as f:
    assert fastavro.reader(f).codec == 'snappy'
  assert read_day(tmp_path / 'dest', 'avro') == expected(rows, DT)


@pytest.mark.parametrize('delimiter', ['"', '\r', '\n', '', ';;', '¦', '\x00'])
def test_csv_delimiters_that_cannot_work_are_refused(tmp_path, capsys, delimiter):
  from pipelines.options import main_guard
  from pipelines.export_events import run
  lake_day(tmp_path / 'lake', DT, [[lake_row(1)]])
  code = main_guard(run, ['--lake', str(tmp_path / 'lake'), '--dest', str(tmp_path / 'dest'),
                          '--date', DT, '--format', 'csv', '--csv_delimiter', delimiter])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and '--csv_delimiter' in err[0], err
  assert not os.path.exists(tmp_path / 'dest')


@pytest.mark.parametrize('delimiter', ['|', '\t', ';', ' '])
def test_csv_delimiters_round_trip(tmp_path, delimiter):
  rows = [lake_row(1, event_properties=[('note', f'a{delimiter}b"c\r\nd')])]
  lake_day(tmp_path / 'lake', DT, [rows])
  assert export(tmp_path / 'lake', tmp_path / 'dest', '--date', DT, '--format', 'csv',
                '--csv_delimiter', delimiter) == 0
  assert read_day(tmp_path / 'dest', 'csv', delimiter=delimiter) == expected(rows, DT)


@pytest.mark.parametrize('dest', ['{lake}', '{lake}/', './lake', 'lake/./', 'file://{lake}',
                                  '{lake}/exports', '{lake}//dt=2023-01-01', 'link'])
def test_a_destination_inside_the_lake_is_refused(tmp_path, monkeypatch, capsys, dest):
  from pipelines.options import main_guard
  from pipelines.export_events import run
  monkeypatch.chdir(tmp_path)
  lake = tmp_path / 'lake'
  lake_day(lake, DT, [[lake_row(1)]])
  os.symlink(lake, tmp_path / 'link')
  before = sorted(os.listdir(lake / f'dt={DT}'))
  code = main_guard(run, ['--lake', str(lake), '--dest', dest.format(lake=lake), '--date', DT])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and '--dest' in err[0] and 'inside --lake' in err[0], err
  assert sorted(os.listdir(lake / f'dt={DT}')) == before
  assert export(lake, tmp_path / 'elsewhere', '--date', DT) == 0   # the lake is intact


def test_a_lake_inside_a_folder_the_export_replaces_is_refused(tmp_path, capsys):
  from pipelines.options import main_guard
  from pipelines.export_events import run
  dest = tmp_path / 'dest'
  lake = dest / f'dt={DT}' / 'lake'
  lake_day(lake, DT, [[lake_row(1)]])
  code = main_guard(run, ['--lake', str(lake), '--dest', str(dest), '--date', DT])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and '--lake' in err[0], err
  # a lake beside the day folders is not touched by the export: allowed
  lake_day(dest / 'lake', DT, [[lake_row(1)]])
  assert export(dest / 'lake', dest, '--date', DT) == 0
  assert os.path.exists(dest / 'lake' / f'dt={DT}' / '_SUCCESS')
