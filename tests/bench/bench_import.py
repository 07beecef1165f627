"""Import benchmark: `./run.sh bench import [--events N] [--repeat K]`.

Generates N events (default 1M; fixed seed; about 1% invalid, 2% duplicates) as four Parquet files
of one customer day, then runs on the same input, each in its own process:
  eventferry - the real import command on the in-process runner (FnApiRunner), one worker
  eventferry2 - the same with two worker threads (--direct_num_workers 2), as DuckDB has two
  duckdb     - the same job as DuckDB SQL on 2 threads (map keys lower-cased with list_transform,
               row_number() de-duplication, COPY to Parquet)
  pyarrow    - the same column functions as eventferry in one plain loop, no Beam: the floor
Prints seconds, events/s, peak RSS and the ratios against the issue's targets.
"""
import datetime
import json
import os
import sys

from tests.bench import harness

DAY = datetime.date(2023, 1, 1)
TARGETS = {'events_per_s': 200_000, 'x_duckdb': 3.0, 'x_pyarrow_time': 1.5, 'rss_mib': 1536}


def generate(workdir: str, events: int) -> str:
  from pipelines import samples
  prefix = os.path.join(workdir, 'bucket')
  if not os.path.exists(os.path.join(prefix, f'dt={DAY}', '_SUCCESS')):
    samples.write_day(prefix, DAY, samples.events(DAY, events, seed=7), files=4)
  return prefix


def run_eventferry(prefix: str, out: str, workers: int = 1) -> dict:
  from pipelines import import_events
  report = os.path.join(out, 'report.json')
  code = import_events.run(['--source', prefix, '--date', str(DAY), '--lake', os.path.join(out, 'lake'),
                            '--report', report, '--runner', 'FnApiRunner',
                            '--direct_num_workers', str(workers),
                            '--direct_running_mode', 'multi_threading'])
  day = json.load(open(report))['days'][0]
  assert code == 0, f'import exited {code}'
  return {k: day[k] for k in ('rows_in', 'rows_written', 'rows_rejected', 'rows_duplicate')}


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


def run_duckdb(prefix: str, out: str) -> dict:
  import duckdb
  con = duckdb.connect()
  con.execute('SET threads=2')
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


CONTENDERS = {'eventferry': run_eventferry,
              'eventferry2': lambda prefix, out: run_eventferry(prefix, out, workers=2),
              'duckdb': run_duckdb, 'pyarrow': run_pyarrow}


def main(argv: list[str]) -> int:
  results = harness.run_all(argv, __doc__.splitlines()[0], 'tests.bench.bench_import', CONTENDERS,
                            generate)
  if results is None:
    return 0
  repeat = results.pop('repeat')
  print(f'import benchmark: {results["eventferry"]["rows_in"]:,} events in 4 files, '
        f'best of {repeat}, {os.cpu_count()} cores')
  print(f"{'contender':<12} {'seconds':>8} {'events/s':>10} {'peak MiB':>9} {'written':>9} "
        f"{'rejected':>9} {'dupes':>7}")
  for r in results.values():
    print(f"{r['contender']:<12} {r['seconds']:>8.2f} {r['rows_in'] / r['seconds']:>10,.0f} "
          f"{r['peak_rss_mib']:>9.0f} {r['rows_written']:>9,} {r['rows_rejected']:>9,} "
          f"{r['rows_duplicate']:>7,}")
  ours, duck, floor = results['eventferry'], results['duckdb'], results['pyarrow']
  both = results['eventferry2']   # two threads, like DuckDB's
  rate = ours['rows_in'] / ours['seconds']
  checks = [('events/s', rate, f">= {TARGETS['events_per_s']:,}", rate >= TARGETS['events_per_s']),
            ('x DuckDB (1 vs 2 thr)', duck['seconds'] / ours['seconds'], f">= {TARGETS['x_duckdb']}",
             duck['seconds'] / ours['seconds'] >= TARGETS['x_duckdb']),
            ('x DuckDB (2 vs 2 thr)', duck['seconds'] / both['seconds'], f">= {TARGETS['x_duckdb']}",
             duck['seconds'] / both['seconds'] >= TARGETS['x_duckdb']),
            ('x plain pyarrow time', ours['seconds'] / floor['seconds'],
             f"<= {TARGETS['x_pyarrow_time']}", ours['seconds'] / floor['seconds'] <= TARGETS['x_pyarrow_time']),
            ('peak RSS MiB', ours['peak_rss_mib'], f"< {TARGETS['rss_mib']}",
             ours['peak_rss_mib'] < TARGETS['rss_mib'])]
  for check in checks:
    print(harness.verdict(*check))
  same = len({r['rows_written'] for r in results.values()}) == 1
  print(f"rows written agree across contenders: {same}")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
