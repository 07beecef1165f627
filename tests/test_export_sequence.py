"""A usage sequence: days exported one after another within a minute, then reruns, for every
layout. After each run every lake row of every exported day is at the destination exactly once
(every data file read back with an independent reader, whether a manifest lists it or not), and
nothing is left under _staging."""
import os
import re

import pytest

from tests.exportkit import data_files, expected, export, lake_day, lake_row, read_export

pytestmark = pytest.mark.engine

DAYS = ['2023-01-01', '2023-01-02', '2023-01-03']
LAYOUTS = {
    'hive': ('parquet', []),
    'hourly': ('csv', []),
    'adobe': ('jsonl', []),
    'clevertap': ('jsonl', ['--request_id', 'R1', '--database_id', 'DB1']),
}


@pytest.fixture(scope='module')
def lake(tmp_path_factory):
  """Three days of 40 rows in two files each, every row's insert_id unique across days."""
  root = tmp_path_factory.mktemp('seq') / 'lake'
  rows = {}
  for d, dt in enumerate(DAYS):
    day = [lake_row(d * 100 + i, dt=dt, event_key=('purchase', 'signup')[i % 2])
           for i in range(40)]
    lake_day(root, dt, [day[:25], day[25:]])
    rows[dt] = day
  return root, rows


def at_destination(dest, fmt) -> list[dict]:
  return sorted((r for f in data_files(dest) for r in read_export(f, fmt)),
                key=lambda r: r['insert_id'])


@pytest.mark.parametrize('layout', LAYOUTS)
def test_days_in_one_minute_then_reruns_leave_each_row_exactly_once(lake, tmp_path, layout):
  root, rows = lake
  fmt, flags = LAYOUTS[layout]
  dest = tmp_path / 'dest'
  done = []
  for run, dt in enumerate(DAYS + [DAYS[1], DAYS[1]]):
    assert export(root, dest, '--date', dt, '--layout', layout, '--format', fmt, *flags) == 0
    done = sorted(set(done) | {dt})
    want = sorted((e for d in done for e in expected(rows[d], d)), key=lambda e: e['insert_id'])
    assert at_destination(dest, fmt) == want, dt
    assert not os.path.exists(dest / '_staging')
    if layout == 'adobe' and run == len(DAYS) - 1:
      adobe_folders_are_the_days_own(dest, rows)


def adobe_folders_are_the_days_own(dest, rows):
  """Each day its own exportTime=YYYYMMDDHHMM folder, committed, in the order of the runs."""
  folders = sorted(os.listdir(dest / 'events'))
  assert len(folders) == 3 and all(re.fullmatch(r'exportTime=\d{12}', f) for f in folders)
  for folder, dt in zip(folders, DAYS):
    got = sorted(r['insert_id'] for f in data_files(dest / 'events' / folder)
                 for r in read_export(f, 'jsonl'))
    assert got == sorted(r['insert_id'] for r in rows[dt])
    assert os.path.exists(dest / 'events' / folder / '_SUCCESS')


def test_adobe_datasets_of_one_day_are_apart_and_a_rerun_replaces_only_its_own(lake, tmp_path):
  root, rows = lake
  dest = tmp_path / 'dest'
  for dataset in ('a', 'b', 'a'):
    assert export(root, dest, '--date', DAYS[0], '--layout', 'adobe', '--format', 'jsonl',
                  '--dataset_id', dataset) == 0
  for dataset in ('a', 'b'):
    assert len(os.listdir(dest / dataset)) == 1
    assert at_destination(dest / dataset, 'jsonl') == expected(rows[DAYS[0]], DAYS[0])
