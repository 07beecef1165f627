"""`./run.sh demo`: a sample customer bucket imported into a local lake, end to end.

Writes three days of realistic events (about 100k, with bad rows and duplicates) under
./demo-data/bucket as three different tools write Parquet (pyarrow, Spark, BigQuery EXPORT DATA),
imports them into ./demo-data/lake with the real import command, and says where to look.
"""
import datetime
import shutil
import sys

from pipelines import import_events, samples
from pipelines import options as opts
from transforms.stores import fs

__all__ = ['ROOT', 'DAYS', 'main']

ROOT = 'demo-data'
DAYS = [(datetime.date(2023, 1, 1), 'pyarrow'), (datetime.date(2023, 1, 2), 'spark'),
        (datetime.date(2023, 1, 3), 'bigquery')]


def main(argv: list[str]) -> int:
  bucket, lake = fs.join(ROOT, 'bucket', 'events'), fs.join(ROOT, 'lake')
  shutil.rmtree(ROOT, ignore_errors=True)
  for i, (day, writer) in enumerate(DAYS):
    table = samples.events(day, 33_000, seed=i + 1)
    samples.write_day(bucket, day, table, files=3, writer=writer)
    print(f'wrote {table.num_rows:,} events for {day} to {bucket}/dt={day}/ as {writer} does')
  print(f'\n$ ./run.sh import --source {bucket} --from_date {DAYS[0][0]} --to_date {DAYS[-1][0]} '
        f'--lake {lake}\n', flush=True)
  code = opts.main_guard(import_events.run, ['--source', bucket, '--from_date', str(DAYS[0][0]),
                                             '--to_date', str(DAYS[-1][0]), '--lake', lake] + argv)
  print(f"""
Where to look:
  {lake}/dt=2023-01-01/                 the lake day: part-*.parquet, _manifest.json, _SUCCESS
  {lake}/_rejected/dt=2023-01-01/       rejected rows with reason, source file and row number
  {lake}/_runs/                         JSON run reports
Read it back, e.g.:
  .venv/bin/python -c "import pyarrow.dataset as ds; print(ds.dataset('{lake}', partitioning='hive').to_table().num_rows)"
""")
  return code


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
