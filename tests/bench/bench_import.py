"""Import benchmark: `./run.sh bench import [--events N] [--repeat K]`.

Generates N events (default 1M; fixed seed; about 1% invalid, 2% duplicates) as four Parquet files
of one customer day (--files F: F files, e.g. `--events 10000 --files 2000` for a day of many small
files, which also prints the cost per file), then runs on the same input, each in its own process:
  eventferry - the real import command as `./run.sh import` runs it: the in-process runner
               (FnApiRunner) in its default mode, one worker in this process
  eventferry2 - the same with two worker threads (--direct_num_workers 2 --direct_running_mode
               multi_threading), as DuckDB has two
  duckdb     - the same job as DuckDB SQL on 2 threads (map keys lower-cased with list_transform,
               row_number() de-duplication, COPY to Parquet)
  polars     - the same job as a Polars script (lazy scan, the same reason codes in the same
               order, the same survivor of each insert_id, rows in source order)
  pyarrow    - the same column functions as eventferry in one plain loop, no Beam: what Beam costs
  pyarrow_min - the leanest plain pyarrow script for the same rules (no reason codes, collision
               rule, millisecond flooring or lineage): the floor
Prints seconds (the job: libraries are imported before the clock starts), process seconds (the
whole command, Python and imports included), start-up (exec to the first row read), events/s, peak
RSS and the ratios against the issue's targets. `--cores 1` pins every contender to one core.
"""
import datetime
import glob
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.events import LAKE_SCHEMA, MAP_COLUMNS, REQUIRED_KEYS, UUID_PATTERN
from tests.bench import harness

METRIC_LIMIT = 10**18

DAY = datetime.date(2023, 1, 1)
TARGETS = {'events_per_s': 200_000, 'x_duckdb': 3.0, 'x_pyarrow_time': 1.5, 'rss_mib': 1536}


def generate(workdir: str, events: int, files: int = 4) -> str:
  from pipelines import samples
  prefix = os.path.join(workdir, 'bucket' if files == 4 else f'bucket-{files}')
  if not os.path.exists(os.path.join(prefix, f'dt={DAY}', '_SUCCESS')):
    samples.write_day(prefix, DAY, samples.events(DAY, events, seed=7), files=files)
  return prefix


@harness.preload('pipelines.import_events')
def run_eventferry(prefix: str, out: str, workers: int = 1) -> dict:
  from pipelines import import_events
  report = os.path.join(out, 'report.json')
  threads = ['--direct_num_workers', str(workers), '--direct_running_mode', 'multi_threading']
  code = import_events.run(['--source', prefix, '--date', str(DAY), '--lake', os.path.join(out, 'lake'),
                            '--report', report] + (threads if workers > 1 else []))   # 1: the default
  day = json.load(open(report))['days'][0]
  assert code == 0, f'import exited {code}'
  return {k: day[k] for k in ('rows_in', 'rows_written', 'rows_rejected', 'rows_duplicate')}


@harness.preload('transforms.dedupe', 'transforms.read', 'transforms.validate')
def run_pyarrow(prefix: str, out: str) -> dict:
  import glob

  import pyarrow.parquet as pq

  from transforms.dedupe import dedupe
  from transforms.read import with_lineage
  from transforms.validate import validate_batch
  valid, rows_in, rejected = [], 0, 0
  for path in sorted(glob.glob(os.path.join(prefix, f'dt={DAY}', '*.parquet'))):
    batch = with_lineage(pq.read_table(path).combine_chunks().to_batches()[0], path, 0)
    result = validate_batch(batch, 'production', DAY)
    valid.append(result.valid)
    rows_in += batch.num_rows
    rejected += result.rejected.num_rows
  table, duplicates = dedupe(valid)
  pq.write_table(table, os.path.join(out, 'lake.parquet'), compression='snappy')
  return {'rows_in': rows_in, 'rows_written': table.num_rows, 'rows_rejected': rejected,
          'rows_duplicate': duplicates}


def _lower_keys(col: str) -> str:
  return (f"map_from_entries(list_transform(map_entries({col}), "
          f"lambda e: {{'key': lower(e.key), 'value': e.value}})) AS {col}")


@harness.preload('duckdb')
def run_duckdb(prefix: str, out: str) -> dict:
  import duckdb
  con = duckdb.connect()
  con.execute(f'SET threads={harness.threads()}')
  files = os.path.join(prefix, f'dt={DAY}', '*.parquet')
  maps = ', '.join(_lower_keys(c) for c in
                   ('identifiers', 'user_properties', 'event_properties', 'platform_properties'))
  con.execute(f"""
    CREATE TEMP TABLE checked AS
    WITH norm AS (
      SELECT lower(trim(insert_id)) AS insert_id, event_key, ts, metric_value, {maps},
             filename, file_row_number
      FROM read_parquet('{files}', filename=true, file_row_number=true))
    SELECT *, CASE
      WHEN insert_id IS NULL OR insert_id = '' THEN 'missing_insert_id'
      WHEN NOT regexp_full_match(insert_id, '[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}')
        THEN 'invalid_insert_id'
      WHEN event_key IS NULL OR trim(event_key) = '' THEN 'missing_event_key'
      WHEN ts IS NULL THEN 'missing_ts'
      WHEN coalesce(identifiers['id'], '') = '' THEN 'missing_identifier_id'
      WHEN coalesce(identifiers['device_id'], '') = '' THEN 'missing_identifier_device_id'
      WHEN coalesce(platform_properties['osname'], '') = '' THEN 'missing_platform_osname'
      WHEN coalesce(platform_properties['appversion'], '') = '' THEN 'missing_platform_appversion'
      WHEN abs(metric_value) >= 1e18 THEN 'metric_value_out_of_range'
    END AS reason FROM norm""")
  con.execute(f"""COPY (SELECT reason, filename, file_row_number FROM checked WHERE reason IS NOT NULL)
                  TO '{out}/rejected.parquet' (FORMAT parquet)""")
  con.execute(f"""
    COPY (SELECT date_trunc('millisecond', ts) AS ts, 'production' AS environment, event_key,
                 identifiers, insert_id, coalesce(TRY_CAST(metric_value AS DECIMAL(24,6)), 0) AS metric_value,
                 user_properties, event_properties, platform_properties
          FROM checked WHERE reason IS NULL
          QUALIFY row_number() OVER (PARTITION BY insert_id ORDER BY ts, filename, file_row_number) = 1
          ORDER BY filename, file_row_number)
    TO '{out}/lake.parquet' (FORMAT parquet, COMPRESSION snappy)""")
  rows_in, rejected = con.execute(
      'SELECT count(*), count(reason) FROM checked').fetchone()
  written = con.execute(f"SELECT count(*) FROM read_parquet('{out}/lake.parquet')").fetchone()[0]
  return {'rows_in': rows_in, 'rows_written': written, 'rows_rejected': rejected,
          'rows_duplicate': rows_in - rejected - written}


@harness.preload('polars')
def run_polars(prefix: str, out: str) -> dict:
  """The DuckDB contender's job as a Polars script: lazy scan, one collect, then the dedupe."""
  import polars as pl
  files = sorted(glob.glob(os.path.join(prefix, f'dt={DAY}', '*.parquet')))
  raw = (pl.scan_parquet(files, include_file_paths='filename')
         .with_columns(pl.int_range(pl.len()).over('filename').alias('file_row_number')))
  lower = [pl.col(c).map.entries().list.eval(pl.element().struct.with_fields(
      pl.field('key').str.to_lowercase())).cast(pl.Map(pl.String, pl.String)) for c in MAP_COLUMNS]

  def blank(column: str, key: str | None = None) -> pl.Expr:
    value = pl.col(column) if key is None else pl.col(column).map.get(key)
    return value.is_null() | (value.str.strip_chars() == '' if key is None else value == '')
  rules = [(blank('insert_id'), 'missing_insert_id'),
           (~pl.col('insert_id').str.contains(UUID_PATTERN), 'invalid_insert_id'),
           (blank('event_key'), 'missing_event_key'), (pl.col('ts').is_null(), 'missing_ts')]
  rules += [(blank('identifiers', 'id'), 'missing_identifier_id'),
            (blank('identifiers', 'device_id'), 'missing_identifier_device_id'),
            (blank('platform_properties', 'osname'), 'missing_platform_osname'),
            (blank('platform_properties', 'appversion'), 'missing_platform_appversion')]
  rules.append((pl.col('metric_value').cast(pl.Float64).abs() >= 1e18, 'metric_value_out_of_range'))
  reason = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
  for rule, code in rules[1:]:
    reason = reason.when(rule).then(pl.lit(code))
  checked = (raw.with_columns(pl.col('insert_id').str.strip_chars().str.to_lowercase(), *lower)
             .with_columns(reason.alias('reason')).collect())
  rejected = checked.filter(pl.col('reason').is_not_null())
  rejected.select('reason', 'filename', 'file_row_number').write_parquet(f'{out}/rejected.parquet')
  lake = (checked.filter(pl.col('reason').is_null())
          .sort(['insert_id', 'ts', 'filename', 'file_row_number'])
          .unique('insert_id', keep='first', maintain_order=True)
          .sort(['filename', 'file_row_number'])
          .select(pl.col('ts').dt.cast_time_unit('ms'), pl.lit('production').alias('environment'),
                  'event_key', 'identifiers', 'insert_id',
                  pl.col('metric_value').cast(pl.Decimal(24, 6), strict=False).fill_null(0),
                  'user_properties', 'event_properties', 'platform_properties'))
  lake.write_parquet(f'{out}/lake.parquet', compression='snappy')
  n = checked.height
  return {'rows_in': n, 'rows_written': lake.height, 'rows_rejected': rejected.height,
          'rows_duplicate': n - rejected.height - lake.height}


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


def run_pyarrow_min(prefix: str, out: str) -> dict:
  """The minimal job in plain pyarrow: the same rules, but no reason codes, collision rule,
  millisecond flooring or lineage. Filters with masks rather than taking rows."""
  files = sorted(glob.glob(os.path.join(prefix, f'dt={DAY}', '*.parquet')))
  table = pq.read_table(files, partitioning=None)
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


CONTENDERS = {'eventferry': run_eventferry,
              'eventferry2': harness.preload('pipelines.import_events')(
                  lambda prefix, out: run_eventferry(prefix, out, workers=2)),
              'duckdb': run_duckdb, 'polars': run_polars, 'pyarrow': run_pyarrow, 'pyarrow_min': run_pyarrow_min}


def main(argv: list[str]) -> int:
  results = harness.run_all(argv, __doc__.splitlines()[0], 'tests.bench.bench_import', CONTENDERS,
                            generate)
  if results is None:
    return 0
  files = results.pop('files') or 4
  how = harness.conditions({k: results.pop(k) for k in ('repeat', 'cores', 'load')})
  rows_in = next(iter(results.values()))['rows_in']
  print(f'import benchmark: {rows_in:,} events in {files:,} files, {how}')
  print(f"{'contender':<12} {'seconds':>8} {'process':>8} {'start-up':>8} {'events/s':>10} "
        f"{'ms/file':>8} {'peak MiB':>9} {'written':>9} {'rejected':>9} {'dupes':>7}")
  for r in results.values():
    print(f"{r['contender']:<12} {r['seconds']:>8.2f} {r['process_seconds']:>8.2f} "
          f"{r['startup_seconds']:>8.2f} {r['rows_in'] / r['seconds']:>10,.0f} "
          f"{1000 * r['seconds'] / files:>8.2f} "
          f"{r['peak_rss_mib']:>9.0f} {r['rows_written']:>9,} {r['rows_rejected']:>9,} "
          f"{r['rows_duplicate']:>7,}")
  ours = results.get('eventferry')
  if ours:
    for check in _checks(ours, results):
      print(harness.verdict(*check))
  same = len({r['rows_written'] for r in results.values()}) == 1
  print(f"rows written agree across contenders: {same}")
  return 0


def _checks(ours: dict, results: dict) -> list[tuple]:
  """The issue's targets, for the contenders that ran."""
  rate = ours['rows_in'] / ours['seconds']
  checks = [('events/s', rate, f">= {TARGETS['events_per_s']:,}", rate >= TARGETS['events_per_s'])]
  for name, label in (('eventferry', '1 worker'), ('eventferry2', '2 threads')):
    if name in results and 'duckdb' in results:
      ratio = results['duckdb']['seconds'] / results[name]['seconds']
      checks.append((f'x DuckDB ({label})', ratio, f">= {TARGETS['x_duckdb']}",
                     ratio >= TARGETS['x_duckdb']))
  for name in ('polars', 'duckdb'):   # the whole process, as a data engineer's script runs
    if name in results:
      ratio = results[name]['process_seconds'] / ours['process_seconds']
      checks.append((f'x {name}, process', ratio, '>= 1.0', ratio >= 1.0))
  for name, label in (('pyarrow', 'ours'), ('pyarrow_min', 'min')):
    if name in results:
      ratio = ours['seconds'] / results[name]['seconds']
      checks.append((f'x pyarrow time ({label})', ratio, f"<= {TARGETS['x_pyarrow_time']}",
                     ratio <= TARGETS['x_pyarrow_time']))
  checks.append(('peak RSS MiB', ours['peak_rss_mib'], f"< {TARGETS['rss_mib']}",
                 ours['peak_rss_mib'] < TARGETS['rss_mib']))
  return checks


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
