"""Import benchmark: eventferry against DuckDB and plain pyarrow on one generated customer day.

  .venv/bin/python -m tests.bench.import_events [--events N] [--workdir DIR] [--repeat K]
                                               [--only eventferry,duckdb,pyarrow]

Generates N events of 2023-01-01 (seed 7; about 1% invalid rows, 2% duplicates resent later with
the same insert_id) as four Parquet files, then runs each contender on them in its own process:
  eventferry  the import pipeline on the in-process FnApiRunner
  duckdb      the same job as DuckDB SQL on 2 threads, COPY to Parquet
  pyarrow     the same job as one plain pyarrow + numpy script: the floor
Each child times its work only (not start-up or imports) and prints its counts and peak RSS as a
JSON line; the parent adds the child's wall time and prints the table, the ratios and the targets.
All contenders inherit the Arrow allocator settings `pipelines/__init__.py` puts in the
environment. DuckDB writes rows ordered by insert_id; pyarrow keeps source order (cheaper).
"""
import argparse
import datetime
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.events import LAKE_SCHEMA, MAP_COLUMNS, REQUIRED_KEYS, UUID_PATTERN

DAY = datetime.date(2023, 1, 1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COUNTS = ('rows_in', 'rows_written', 'rows_rejected', 'rows_duplicate')
METRIC_LIMIT = 10**18   # decimal(24,6) holds |x| < 10^18


def generate(workdir: str, events: int) -> int:
  """Writes the input day under WORKDIR/bucket; returns its rows (events plus resends).

  Importing `pipelines` also puts its Arrow allocator settings into os.environ, which every child
  inherits. The children do not import it themselves: it would load Beam into the floors."""
  from pipelines import samples
  table = samples.events(DAY, events, seed=7)
  samples.write_day(source(workdir), DAY, table, files=4, writer='pyarrow')
  return table.num_rows


def source(workdir: str) -> str:
  return os.path.join(workdir, 'bucket')


def source_files(prefix: str) -> list[str]:
  return sorted(glob.glob(os.path.join(prefix, f'dt={DAY}', '*.parquet')))


# --- contenders: each takes (source prefix, output directory) and returns the four counts ---

def run_eventferry(prefix: str, out: str) -> dict:
  from pipelines import import_events
  report = os.path.join(out, 'report.json')
  code = import_events.run(['--source', prefix, '--date', DAY.isoformat(),
                            '--lake', os.path.join(out, 'lake'), '--runner', 'FnApiRunner',
                            '--report', report])
  if code != 0:
    raise RuntimeError(f'the import exited {code}, not 0 (published)')
  with open(report) as f:
    day = json.load(f)['days'][0]
  return {k: day[k] for k in COUNTS}


def _lower_keys_sql(column: str) -> str:
  return (f'map_from_entries(list_transform(map_entries({column}), lambda e: '
          f'struct_pack(key := lower(e.key), value := e.value))) AS {column}')


def _required_sql() -> str:
  return ' AND '.join(f"coalesce({column}['{key}'] <> '', false)"
                      for column, keys in REQUIRED_KEYS.items() for key in keys)


def run_duckdb(prefix: str, out: str) -> dict:
  import duckdb
  con = duckdb.connect()
  con.execute('SET threads=2')
  files = os.path.join(prefix, f'dt={DAY}', '*.parquet')
  maps = ', '.join(_lower_keys_sql(c) for c in MAP_COLUMNS)
  con.execute(f"""
    CREATE TEMP TABLE checked AS
    SELECT *, coalesce(regexp_matches(insert_id, '{UUID_PATTERN}'), false)
              AND coalesce(trim(event_key) <> '', false)
              AND ts IS NOT NULL
              AND {_required_sql()}
              AND (metric_value IS NULL OR abs(metric_value) < {METRIC_LIMIT}) AS ok
    FROM (SELECT ts, event_key, lower(trim(insert_id)) AS insert_id, metric_value, {maps}
          FROM read_parquet('{files}'))""")
  con.execute(f"""COPY (SELECT * EXCLUDE (ok) FROM checked WHERE NOT ok)
                  TO '{out}/rejected.parquet' (FORMAT parquet, COMPRESSION snappy)""")
  written, = con.execute(f"""
    COPY (SELECT ts, 'production' AS environment, event_key, identifiers, insert_id,
                 CAST(coalesce(metric_value, 0) AS DECIMAL(24,6)) AS metric_value,
                 user_properties, event_properties, platform_properties
          FROM checked WHERE ok
          QUALIFY row_number() OVER (PARTITION BY insert_id ORDER BY ts) = 1
          ORDER BY insert_id)
    TO '{out}/lake.parquet' (FORMAT parquet, COMPRESSION snappy)""").fetchone()
  rows_in, valid = con.execute('SELECT count(*), count(*) FILTER (ok) FROM checked').fetchone()
  return {'rows_in': rows_in, 'rows_written': written, 'rows_rejected': rows_in - valid,
          'rows_duplicate': valid - written}


def _lower_map_keys(column: pa.ChunkedArray) -> pa.ChunkedArray:
  return pa.chunked_array([pa.MapArray.from_arrays(c.offsets, pc.utf8_lower(c.keys), c.items,
                                                   mask=c.is_null() if c.null_count else None)
                           for c in column.chunks], column.type)


def _has_values(column: pa.ChunkedArray, keys: tuple[str, ...]) -> np.ndarray:
  """Rows whose map holds each of `keys` with a non-empty value."""
  parts = []
  for chunk in column.chunks:
    offsets = chunk.offsets.to_numpy()
    start, end = offsets[0], offsets[-1]
    parent = np.repeat(np.arange(len(chunk)), np.diff(offsets))
    filled = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(chunk.items[start:end]), 0), False))
    ok = np.ones(len(chunk), dtype=bool)
    for key in keys:
      present = np.zeros(len(chunk), dtype=bool)
      present[parent[np.asarray(pc.equal(chunk.keys[start:end], key)) & filled]] = True
      ok &= present
    parts.append(ok)
  return np.concatenate(parts)


def _true(mask) -> np.ndarray:
  return np.asarray(pc.fill_null(mask, False))


def _valid(table: pa.Table, insert_id: pa.ChunkedArray, maps: dict) -> np.ndarray:
  metric = table['metric_value']
  ok = (_true(pc.match_substring_regex(insert_id, UUID_PATTERN))
        & _true(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table['event_key'])), 0))
        & np.asarray(table['ts'].is_valid())
        & np.asarray(pc.fill_null(pc.less(pc.abs(metric), pa.scalar(METRIC_LIMIT, metric.type)),
                                  True)))
  for column, keys in REQUIRED_KEYS.items():
    ok &= _has_values(maps[column], keys)
  return ok


def _first_per_insert_id(insert_id: pa.ChunkedArray, ts: pa.ChunkedArray,
                         ok: np.ndarray) -> np.ndarray:
  """Mask of the rows to keep: of the `ok` rows, the one with the earliest ts per insert_id."""
  rows = np.flatnonzero(ok)
  keys = pa.table({'insert_id': insert_id, 'ts': ts}).filter(pa.array(ok))
  order = pc.sort_indices(keys, [('insert_id', 'ascending'), ('ts', 'ascending')])
  ids = keys['insert_id'].take(order).combine_chunks()
  first = np.ones(len(ids), dtype=bool)
  first[1:] = ~_true(pc.equal(ids[1:], ids[:-1]))
  keep = np.zeros(len(ok), dtype=bool)
  keep[rows[order.to_numpy()[first]]] = True
  return keep


def run_pyarrow(prefix: str, out: str) -> dict:
  """Filters with masks rather than taking rows: on chunked map columns 3x faster here."""
  table = pq.read_table(source_files(prefix), partitioning=None)
  maps = {c: _lower_map_keys(table[c]) for c in MAP_COLUMNS}
  insert_id = pc.utf8_lower(pc.utf8_trim_whitespace(table['insert_id']))
  ok = _valid(table, insert_id, maps)
  pq.write_table(table.filter(pa.array(~ok)), os.path.join(out, 'rejected.parquet'),
                 compression='snappy')
  keep = _first_per_insert_id(insert_id, table['ts'], ok)
  lake = pa.table({'ts': table['ts'], 'event_key': table['event_key'], 'insert_id': insert_id,
                   'metric_value': table['metric_value'], **maps}).filter(pa.array(keep))
  metric = pc.fill_null(lake['metric_value'], 0).cast(pa.decimal128(24, 6))
  lake = lake.set_column(lake.schema.get_field_index('metric_value'), 'metric_value', metric)
  lake = lake.append_column('environment', pa.repeat('production', lake.num_rows))
  lake = lake.select(LAKE_SCHEMA.names)
  scalar = [f.name for f in lake.schema if not pa.types.is_nested(f.type)]
  pq.write_table(lake, os.path.join(out, 'lake.parquet'), compression='snappy',
                 write_statistics=scalar)
  valid = int(ok.sum())
  return {'rows_in': table.num_rows, 'rows_written': lake.num_rows,
          'rows_rejected': table.num_rows - valid, 'rows_duplicate': valid - lake.num_rows}


CONTENDERS = {'eventferry': ('pipelines.import_events', run_eventferry),
              'duckdb': ('duckdb', run_duckdb),
              'pyarrow': ('pyarrow.parquet', run_pyarrow)}


# --- child and parent ---

def child(name: str, workdir: str) -> None:
  """Runs one contender and prints its JSON line last."""
  module, work = CONTENDERS[name]
  __import__(module)   # imported before the clock starts
  out = tempfile.mkdtemp(prefix=f'{name}-', dir=workdir)
  start = time.perf_counter()
  counts = work(source(workdir), out)
  seconds = time.perf_counter() - start
  rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({'contender': name, 'seconds': round(seconds, 3), **counts,
                    'peak_rss_mib': round(rss_mib, 1)}), flush=True)


def measure(name: str, workdir: str, repeat: int) -> dict:
  """Best (by work seconds) of `repeat` child runs, with 'wall'; or {'error': stderr tail}."""
  best = None
  for _ in range(repeat):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', 'tests.bench.import_events', '--child', name,
                           '--workdir', workdir], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
      return {'error': f'exit {proc.returncode}\n' + '\n'.join(proc.stderr.splitlines()[-25:])}
    result = {**json.loads(proc.stdout.splitlines()[-1]), 'wall': wall}
    if best is None or result['seconds'] < best['seconds']:
      best = result
  return best


def rate(r: dict) -> float:
  return r['rows_in'] / r['seconds']


def table_lines(results: dict) -> list[str]:
  lines = [f"{'contender':<11} {'work s':>7} {'wall s':>7} {'events/s':>10} {'peak RSS MiB':>12} "
           f"{'written':>10} {'rejected':>9} {'duplicate':>9}"]
  for name, r in results.items():
    if 'error' in r:
      lines.append(f'{name:<11} FAILED ({r["error"].splitlines()[0]})')
      continue
    lines.append(f"{name:<11} {r['seconds']:>7.2f} {r['wall']:>7.2f} {rate(r):>10,.0f} "
                 f"{r['peak_rss_mib']:>12,.0f} {r['rows_written']:>10,} {r['rows_rejected']:>9,} "
                 f"{r['rows_duplicate']:>9,}")
  return lines


def ratio_lines(ok: dict) -> list[str]:
  ours, duck, floor = ok.get('eventferry'), ok.get('duckdb'), ok.get('pyarrow')
  x_duckdb = rate(ours) / rate(duck) if ours and duck else None
  x_pyarrow = ours['seconds'] / floor['seconds'] if ours and floor else None
  lines = []
  if x_duckdb is not None:
    lines.append(f'eventferry events/s / DuckDB events/s: {x_duckdb:.2f} x DuckDB')
  if x_pyarrow is not None:
    lines.append(f'eventferry seconds / pyarrow seconds:  {x_pyarrow:.2f} x plain pyarrow time')
  checks = [('>=200k events/s', rate(ours) if ours else None, lambda v: v >= 200_000),
            ('>=3x DuckDB', x_duckdb, lambda v: v >= 3),
            ('<=1.5x pyarrow time', x_pyarrow, lambda v: v <= 1.5),
            ('peak RSS < 1.5 GiB', ours['peak_rss_mib'] if ours else None, lambda v: v < 1536)]
  lines.append('targets: ' + '; '.join(
      f'{label} {"n/a" if v is None else "PASS" if passes(v) else "MISS"}'
      for label, v, passes in checks))
  return lines


def agreement_lines(ok: dict) -> list[str]:
  lines = []
  for count in COUNTS[1:]:
    values = {name: r[count] for name, r in ok.items()}
    spread = max(values.values()) - min(values.values())
    verdict = 'agree' if spread == 0 else f'differ by up to {spread:,}'
    lines.append(f'{count}: ' + ', '.join(f'{n} {v:,}' for n, v in values.items())
                 + f' -> {verdict}')
  return lines


def report(results: dict, events: int, rows: int, repeat: int) -> None:
  ok = {name: r for name, r in results.items() if 'error' not in r}
  print(f'import benchmark: {rows:,} rows ({events:,} events + resent duplicates), dt={DAY}, '
        f'4 Parquet files; best of {repeat}; {os.cpu_count()} CPUs')
  lines = table_lines(results) + ratio_lines(ok)
  print('\n'.join(lines + (agreement_lines(ok) if len(ok) > 1 else [])))
  for name, r in results.items():
    if 'error' in r:
      print(f'\n{name} failed, {r["error"]}')


def parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m tests.bench.import_events',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--events', type=int, default=1_000_000, help='distinct events (default 1M)')
  parser.add_argument('--workdir', help='where input and outputs go (default: a fresh temp dir, '
                      'removed afterwards)')
  parser.add_argument('--repeat', type=int, default=1, help='runs per contender; the best counts')
  parser.add_argument('--only', default=','.join(CONTENDERS),
                      help=f'comma-separated subset of {",".join(CONTENDERS)}')
  parser.add_argument('--child', choices=CONTENDERS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.only = [name.strip() for name in args.only.split(',') if name.strip()]
  unknown = sorted(set(args.only) - set(CONTENDERS))
  if unknown or not args.only:
    parser.error(f'--only: unknown contender(s) {unknown}; choose from {",".join(CONTENDERS)}')
  if args.repeat < 1 or args.events < 1:
    parser.error('--events and --repeat must be at least 1')
  return args


def main(argv: list[str]) -> int:
  args = parse(argv)
  if args.child:
    child(args.child, args.workdir)
    return 0
  workdir = args.workdir or tempfile.mkdtemp(prefix='eventferry-bench-')
  os.makedirs(workdir, exist_ok=True)
  results = {}
  try:
    print(f'generating {args.events:,} events in {workdir} ...', flush=True)
    rows = generate(workdir, args.events)
    for name in args.only:
      print(f'running {name} ...', flush=True)
      results[name] = measure(name, workdir, args.repeat)
    report(results, args.events, rows, args.repeat)
  finally:
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  return 1 if any('error' in r for r in results.values()) else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
