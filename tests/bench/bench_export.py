"""Export benchmark: `./run.sh bench export [--events N] [--repeat K]`.

Imports N generated events (default 1M) into a lake once, then times, each in its own process:
  ef_parquet / ef_csv_gz  - the real export command (FnApiRunner, one worker): seed-schema
                            Parquet (snappy) / CSV gzip
  duck_parquet / duck_csv_gz - DuckDB (2 threads) COPY of the same lake day to the same formats,
                            map columns as JSON text
  polars_parquet / polars_csv_gz - the same as a Polars script (gzip by Python's gzip module,
                            level 6: Polars writes no compressed CSV)
Prints seconds (the job: libraries are imported before the clock starts), process seconds (the
whole command, Python and imports included), start-up (exec to the first row read), events/s, peak
RSS, and the issue's targets (`--cores 1` pins every contender to one core): >= 300k
events/s to Parquet and at least half of DuckDB's throughput on both formats, judged on the job's
seconds and, for information, on the whole process's. Checks that both Parquet outputs hold the
same columns, logical types and rows.
"""
import datetime
import glob
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
  @harness.preload('pipelines.export_events')
  def run(lake: str, out: str) -> dict:
    from pipelines import export_events
    code = export_events.run(['--lake', lake, '--date', str(DAY), '--dest', out, '--format', fmt,
                              '--compression', compression, '--runner', 'FnApiRunner'])
    assert code == 0
    return {'rows': json.load(open(os.path.join(out, f'dt={DAY}', '_manifest.json')))['rows']}
  return run


def _duckdb(target: str):
  @harness.preload('duckdb')
  def run(lake: str, out: str) -> dict:
    import duckdb
    con = duckdb.connect()
    con.execute(f'SET threads={harness.threads()}')
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


def _json_object(column: str):
  """A map column as the JSON object text DuckDB's to_json writes (keys and values JSON-escaped
  by Polars' own encoder)."""
  import polars as pl

  def text(field: str, name: str) -> pl.Expr:   # '{"k":"..."}' -> '"..."'
    return pl.struct(**{name: pl.element().struct.field(field)}).struct.json_encode().str.slice(5).str.head(-1)
  pairs = pl.col(column).map.entries().list.eval(
      pl.concat_str([text('key', 'k'), pl.lit(':'), text('value', 'v')])).list.join(',')
  return pl.concat_str([pl.lit('{'), pairs, pl.lit('}')]).alias(column)


def _polars(target: str):
  @harness.preload('polars')
  def run(lake: str, out: str) -> dict:
    import gzip

    import polars as pl
    frame = pl.read_parquet(f'{lake}/dt={DAY}/*.parquet').select(
        pl.lit(DAY).alias('server_dt'), 'ts', 'environment', 'event_key', _json_object('identifiers'),
        'insert_id', 'metric_value', _json_object('platform_properties').alias('hackle_properties'),
        _json_object('user_properties'), _json_object('event_properties'))
    path = os.path.join(out, f'export.{target}')
    if target == 'parquet':
      frame.write_parquet(path, compression='snappy')
    else:
      with gzip.open(path, 'wb', compresslevel=6) as f:
        frame.write_csv(f)
    return {'rows': frame.height}
  return run


def same_output(workdir: str) -> tuple[bool, str]:
  """Whether eventferry and DuckDB wrote the same columns, logical types and rows to Parquet
  (DuckDB writes every column nullable and timestamps in microseconds; its JSON has no spaces,
  so JSON text is compared after DuckDB's json() normalizes both)."""
  import duckdb
  import pyarrow as pa
  import pyarrow.parquet as pq
  ours = os.path.join(workdir, 'ef_parquet-0', f'dt={DAY}', '*.parquet')
  theirs = os.path.join(workdir, 'duck_parquet-0', 'export.parquet')

  def logical(t: pa.DataType) -> str:
    return f'timestamp[{t.tz}]' if pa.types.is_timestamp(t) else str(t).replace('large_', '')
  schemas = [pq.read_schema(glob.glob(ours)[0]), pq.read_schema(theirs)]
  types = [[(f.name, logical(f.type)) for f in schema] for schema in schemas]
  if types[0] != types[1]:
    return False, f'schemas differ: {types[0]} vs {types[1]}'
  json_cols = ('identifiers', 'hackle_properties', 'user_properties', 'event_properties')
  cols = ', '.join(f'json({c})::VARCHAR' if c in json_cols else c for c, _ in types[0])
  con = duckdb.connect()
  con.execute('SET enable_progress_bar=false')
  query = (f"SELECT count(*) FROM (SELECT {cols} FROM read_parquet('{{}}') EXCEPT ALL "
           f"SELECT {cols} FROM read_parquet('{{}}'))")
  counts = [con.execute(f"SELECT count(*) FROM read_parquet('{p}')").fetchone()[0]
            for p in (ours, theirs)]
  missing = con.execute(query.format(theirs, ours)).fetchone()[0]
  extra = con.execute(query.format(ours, theirs)).fetchone()[0]
  ok = counts[0] == counts[1] and not missing and not extra
  return ok, (f'{counts[0]:,} vs {counts[1]:,} rows, {missing} of DuckDB\'s rows missing from '
              f'ours, {extra} extra; columns and logical types equal')


CONTENDERS = {'ef_parquet': _eventferry('parquet', 'snappy'), 'ef_csv_gz': _eventferry('csv', 'gzip'),
              'duck_parquet': _duckdb('parquet'), 'duck_csv_gz': _duckdb('csv.gz'),
              'polars_parquet': _polars('parquet'), 'polars_csv_gz': _polars('csv.gz')}


def main(argv: list[str]) -> int:
  workdirs = []   # where the outputs stay, to compare them

  def prepared(workdir: str, events: int) -> str:
    workdirs.append(workdir)
    return prepare(workdir, events)
  r = harness.run_all(argv, __doc__.splitlines()[0], MODULE, CONTENDERS, prepared)
  if r is None:
    return 0
  r.pop('files')
  how = harness.conditions({k: r.pop(k) for k in ('repeat', 'cores', 'load')})
  print(f'export benchmark: {next(iter(r.values()))["rows"]:,} lake events, {how}')
  harness.table(r)
  if 'ef_parquet' in r and 'duck_parquet' in r:
    same, detail = same_output(workdirs[0])
    print(f'same Parquet output as DuckDB: {"yes" if same else "NO"} ({detail})')
  if 'ef_parquet' in r:
    rate = r['ef_parquet']['rows'] / r['ef_parquet']['seconds']
    print(harness.verdict('events/s to Parquet', rate, '>= 300,000', rate >= 300_000))
  # the targets: x DuckDB's COPY as a whole process, 1.2 (Parquet) and 1.5 (CSV.gz)
  for fmt, target in (('parquet', 1.2), ('csv_gz', 1.5)):
    for peer in ('duck', 'polars'):
      ours, theirs = r.get(f'ef_{fmt}'), r.get(f'{peer}_{fmt}')
      if ours and theirs:
        job = theirs['seconds'] / ours['seconds']
        whole = theirs['process_seconds'] / ours['process_seconds']
        print(harness.verdict(f'x {peer} {fmt}, process', whole, f'>= {target}', whole >= target)
              + f'  (job: {job:.2f})')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
