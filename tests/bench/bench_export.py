"""Export benchmark: `./run.sh bench export [--events N] [--repeat K]`.

Imports N generated events (default 1M) into a lake once, then times, each in its own process:
  ef_parquet / ef_csv_gz  - the real export command (FnApiRunner, one worker): seed-schema
                            Parquet (snappy) / CSV gzip
  duck_parquet / duck_csv_gz - DuckDB (2 threads) COPY of the same lake day to the same formats,
                            map columns as JSON text
Prints seconds, events/s, peak RSS, and the issue's targets: >= 300k events/s to Parquet and at
least half of DuckDB's throughput on both formats.
"""
import datetime
import json
import os
import sys

from tests.bench import harness

DAY = datetime.date(2023, 1, 1)
MODULE = 'tests.bench.bench_export'


def prepare(workdir: str, events: int) -> str:
  from tests.bench.bench_import import generate
  lake = os.path.join(workdir, 'lake')
  if not os.path.exists(os.path.join(lake, f'dt={DAY}', '_SUCCESS')):
    from pipelines import import_events
    import_events.run(['--source', generate(workdir, events), '--date', str(DAY), '--lake', lake])
  return lake


def _eventferry(fmt: str, compression: str):
  def run(lake: str, out: str) -> dict:
    from pipelines import export_events
    code = export_events.run(['--lake', lake, '--date', str(DAY), '--dest', out, '--format', fmt,
                              '--compression', compression, '--runner', 'FnApiRunner'])
    assert code == 0
    return {'rows': json.load(open(os.path.join(out, f'dt={DAY}', '_manifest.json')))['rows']}
  return run


def _duckdb(target: str):
  def run(lake: str, out: str) -> dict:
    import duckdb
    con = duckdb.connect()
    con.execute('SET threads=2')
    select = f"""SELECT DATE '{DAY}' AS server_dt, ts, environment, event_key,
                   to_json(identifiers)::VARCHAR AS identifiers, insert_id, metric_value,
                   to_json(platform_properties)::VARCHAR AS hackle_properties,
                   to_json(user_properties)::VARCHAR AS user_properties,
                   to_json(event_properties)::VARCHAR AS event_properties
                 FROM read_parquet('{lake}/dt={DAY}/*.parquet')"""
    options = {'parquet': "(FORMAT parquet, COMPRESSION snappy)",
               'csv.gz': "(FORMAT csv, HEADER, COMPRESSION gzip)"}[target]
    path = os.path.join(out, f'export.{target}')
    con.execute(f"COPY ({select}) TO '{path}' {options}")
    return {'rows': con.execute(f"SELECT count(*) FROM read_parquet('{lake}/dt={DAY}/*.parquet')")
            .fetchone()[0]}
  return run


CONTENDERS = {'ef_parquet': _eventferry('parquet', 'snappy'), 'ef_csv_gz': _eventferry('csv', 'gzip'),
              'duck_parquet': _duckdb('parquet'), 'duck_csv_gz': _duckdb('csv.gz')}


def main(argv: list[str]) -> int:
  r = harness.run_all(argv, __doc__.splitlines()[0], MODULE, CONTENDERS, prepare)
  if r is None:
    return 0
  repeat = r.pop('repeat')
  print(f'export benchmark: {r["ef_parquet"]["rows"]:,} lake events, best of {repeat}')
  harness.table(r)
  rate = r['ef_parquet']['rows'] / r['ef_parquet']['seconds']
  for check in [('events/s to Parquet', rate, '>= 300,000', rate >= 300_000),
                ('x DuckDB, Parquet', r['duck_parquet']['seconds'] / r['ef_parquet']['seconds'],
                 '>= 0.5', r['duck_parquet']['seconds'] / r['ef_parquet']['seconds'] >= 0.5),
                ('x DuckDB, CSV.gz', r['duck_csv_gz']['seconds'] / r['ef_csv_gz']['seconds'],
                 '>= 0.5', r['duck_csv_gz']['seconds'] / r['ef_csv_gz']['seconds'] >= 0.5)]:
    print(harness.verdict(*check))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
