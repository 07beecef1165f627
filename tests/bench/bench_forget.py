"""Forget benchmark: `./run.sh bench forget [--days 10] [--events 100000] [--ids 1,10,1000]
[--no_export]`.

Builds a lake of DAYS days of EVENTS events each (4 files a day, written with pyarrow; user i has
one event a day, so forgetting one user touches every day) and, unless --no_export, exports it
once as Parquet (hive) so that every forget also re-delivers its affected days. Then, from a copy
of that state each time, times the whole `forget` command (a process, imports included) for each
number of ids: the dry run (scan only) and the real run. Prints seconds, rows removed, files
rewritten and deliveries redone.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow as pa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(work: str, days: int, events: int, export: bool) -> list[str]:
  from pipelines import export_events
  from tests import exportkit
  dts = [f'2023-01-{d + 1:02d}' for d in range(days)]
  for dt in dts:
    rows = exportkit.bulk_rows(events, dt)
    quarter = -(-events // 4)
    exportkit.lake_day(f'{work}/lake', dt, [rows.slice(i, quarter) for i in range(0, events, quarter)])
  if export:
    assert export_events.run(['--lake', f'{work}/lake', '--dest', f'{work}/dest', '--from_date',
                              dts[0], '--to_date', dts[-1], '--runner', 'FnApiRunner']) == 0
  return dts


def forget(work: str, ids: int, dry: bool) -> tuple[float, str]:
  ids_file = os.path.join(work, f'ids-{ids}.txt')
  with open(ids_file, 'w') as f:   # users spread over the day's four files
    f.write('\n'.join(f'00000000-0000-4000-8000-{(i * 7919) % 100_000:012x}' for i in range(ids)))
  start = time.monotonic()
  proc = subprocess.run([sys.executable, '-m', 'pipelines.forget', '--lake', f'{work}/lake',
                         '--ids_file', ids_file, *(['--dry_run'] if dry else [])],
                        cwd=ROOT, capture_output=True, text=True)
  seconds = time.monotonic() - start
  assert proc.returncode == 0, proc.stderr[-3000:]
  return seconds, proc.stdout


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='./run.sh bench forget')
  parser.add_argument('--days', type=int, default=10)
  parser.add_argument('--events', type=int, default=100_000)
  parser.add_argument('--ids', default='1,10,1000')
  parser.add_argument('--no_export', action='store_true')
  a = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    pristine, work = f'{tmp}/pristine', f'{tmp}/work'
    start = time.monotonic()
    build(pristine, a.days, a.events, not a.no_export)
    lake_bytes = sum(os.path.getsize(os.path.join(d, f))
                     for d, _, fs in os.walk(f'{pristine}/lake') for f in fs)
    print(f'{a.days} days x {a.events:,} events ({lake_bytes / 2**20:.0f} MiB of lake), '
          f'{"with" if not a.no_export else "without"} one Parquet destination; built in '
          f'{time.monotonic() - start:.1f}s')
    print(f'{"ids":>6} {"dry run s":>10} {"forget s":>9} {"rows":>7} {"files":>6} {"redone":>7}')
    for ids in [int(x) for x in a.ids.split(',')]:
      shutil.rmtree(work, ignore_errors=True)
      shutil.copytree(pristine, work)
      dry, _ = forget(work, ids, True)
      real, _ = forget(work, ids, False)
      folder = f'{work}/lake/_eventferry/forget'
      (name,) = [n for n in os.listdir(folder) if n.endswith('.json')]
      audit = json.load(open(os.path.join(folder, name)))
      rows = sum(k['rows_forgotten'] for day in audit['days'].values() for k in day.values())
      files = sum(len(k['files']) for day in audit['plan']['days'].values() for k in day.values())
      print(f'{ids:>6} {dry:>10.1f} {real:>9.1f} {rows:>7,} {files:>6} '
            f'{len(audit["destinations"]):>7}')
  return 0


if __name__ == '__main__':
  pa.set_cpu_count(2)
  sys.exit(main(sys.argv[1:]))
