"""Exports read back by Spark, the reader most of the customers' own jobs use: arbitrary valid lake
days (the round-trip properties' generator) through the formats Spark reads without extra jars
(Parquet, JSON lines, CSV; plain and gzip), equal the lake as tests/exportkit.py states it.

Spark is asked for text where its own types would round (ts as epoch millis, metric_value as
text), so that what is compared is what the file holds, not Spark's rendering of it. CSV cannot
tell an empty field from a missing one: Spark reads both as null, and so does this test
(docs/export.md: what survives a round trip).
"""
import datetime
import decimal
import json
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings

from tests.exportkit import UTC, data_files, expected, export, lake_day
from tests.test_export_roundtrip import DT, lake_files

TEXT = ('environment', 'event_key', 'insert_id')
MAPS = ('identifiers', 'hackle_properties', 'user_properties', 'event_properties')
COMBOS = [('parquet', 'snappy'), ('parquet', 'zstd'), ('jsonl', 'none'), ('jsonl', 'gzip'),
          ('csv', 'none'), ('csv', 'gzip')]
SCHEMA = ('server_dt string, ts string, environment string, event_key string, identifiers string, '
          'insert_id string, metric_value string, hackle_properties string, user_properties string, '
          'event_properties string')
JSON_SCHEMA = ('server_dt string, ts string, environment string, event_key string, '
               'identifiers map<string,string>, insert_id string, metric_value string, '
               'hackle_properties map<string,string>, user_properties map<string,string>, '
               'event_properties map<string,string>')


def _read(spark, files: list[str], fmt: str) -> list[dict]:
  if fmt == 'parquet':
    frame = spark.read.parquet(*files).selectExpr(
        'cast(server_dt as string) as server_dt', 'unix_millis(ts) as ts_ms', *TEXT,
        'cast(metric_value as string) as metric_value', *MAPS)
  elif fmt == 'jsonl':
    frame = spark.read.schema(JSON_SCHEMA).option('mode', 'FAILFAST').json(files)
  else:
    frame = (spark.read.schema(SCHEMA).option('header', True).option('multiLine', True)
             .option('escape', '"').option('mode', 'FAILFAST').csv(files))
  rows = []
  for r in frame.collect():
    r = r.asDict()
    row = {'server_dt': datetime.date.fromisoformat(r['server_dt']),
           'metric_value': decimal.Decimal(r['metric_value'])}
    if fmt == 'parquet':
      row['ts'] = datetime.datetime.fromtimestamp(r['ts_ms'] / 1000, UTC)
    else:
      row['ts'] = datetime.datetime.fromisoformat(r['ts'].replace('Z', '+00:00'))
    for name in TEXT:
      row[name] = r[name]
    for name in MAPS:
      row[name] = dict(r[name]) if fmt == 'jsonl' else json.loads(r[name])
    rows.append(row)
  return sorted(rows, key=lambda e: e['insert_id'])


def _as_csv_holds(rows: list[dict]) -> list[dict]:
  return [{**r, **{k: r[k] or None for k in TEXT}} for r in rows]


@pytest.mark.parametrize('fmt,compression', COMBOS)
@settings(max_examples=3, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(files=lake_files())
def test_spark_reads_every_export_as_the_lake_holds_it(spark, fmt, compression, files):
  with tempfile.TemporaryDirectory() as root:
    lake_day(f'{root}/lake', DT, files)
    assert export(f'{root}/lake', f'{root}/dest', '--date', DT, '--format', fmt,
                  '--compression', compression) == 0
    got = _read(spark, data_files(f'{root}/dest'), fmt)
  want = expected([r for f in files for r in f], DT)
  assert got == (_as_csv_holds(want) if fmt == 'csv' else want)
