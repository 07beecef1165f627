"""Round-trip properties: arbitrary valid lake days (built with pyarrow in the lake schema), through
every export format x compression, under a layout hypothesis picks, read back with independent
readers (tests/exportkit.py), equal the lake exactly, except where docs/export.md's table "what survives
a round trip" says a format cannot carry something (XML: characters XML 1.0 cannot hold)."""
import datetime
import decimal
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.exportkit import (UTC, data_files, expected, export, lake_day, read_export,
                             xml_expected)

pytestmark = pytest.mark.engine

DT = '2023-01-01'
START = datetime.datetime(2023, 1, 1, tzinfo=UTC)
COMBOS = [('parquet', c) for c in ('snappy', 'zstd', 'gzip', 'none')] + \
         [('avro', c) for c in ('null', 'deflate', 'snappy')] + \
         [(f, c) for f in ('jsonl', 'csv', 'xml') for c in ('none', 'gzip')]
LAYOUTS = {'hive': [], 'hourly': [], 'adobe': [],
           'clevertap': ['--request_id', 'R1', '--database_id', 'DB1']}
AWKWARD = list('\r\n\t<&>"\',|;\\\x00\x01\x0b\x1f\x7f') + ['\r\n', ']]>', '\u2028', '\ufffe',
                                                          '\uffff', '레저', '장바구니 담기', '🚀']
text = st.lists(st.one_of(st.sampled_from(AWKWARD), st.characters(codec='utf-8')),
                max_size=5).map(''.join)
maps = st.dictionaries(text, st.one_of(st.none(), text), max_size=3).map(lambda d: list(d.items()))
EDGES = [decimal.Decimal(v) for v in ('999999999999999999.999999', '-999999999999999999.999999',
                                      '0.000001', '-0.000001', '0')]
metric = st.one_of(st.sampled_from(EDGES), st.decimals(
    min_value=EDGES[1], max_value=EDGES[0], places=6, allow_nan=False, allow_infinity=False))
ms = st.one_of(st.sampled_from([0, 1, 86_399_999, 3_600_000 - 1, 3_600_000]),
               st.integers(0, 86_399_999))


@st.composite
def lake_rows(draw, n: int) -> dict:
  return {'ts': START + datetime.timedelta(milliseconds=draw(ms)), 'environment': draw(text),
          'event_key': draw(text.filter(bool)), 'identifiers': draw(maps),
          'insert_id': f'00000000-0000-4000-8000-{n:012x}', 'metric_value': draw(metric),
          'user_properties': draw(maps), 'event_properties': draw(maps),
          'platform_properties': draw(maps)}


@st.composite
def lake_files(draw) -> list[list[dict]]:
  """One to three files of zero to four rows, one row at least; insert_ids unique in the day."""
  sizes = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3).filter(sum))
  rows = [draw(lake_rows(i)) for i in range(sum(sizes))]
  return [rows[sum(sizes[:i]):sum(sizes[:i + 1])] for i in range(len(sizes))]


@pytest.mark.parametrize('fmt,compression', COMBOS)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.data_too_large])
@given(files=lake_files(), layout=st.sampled_from(sorted(LAYOUTS)))
def test_every_format_round_trips_the_lake_day(fmt, compression, files, layout):
  with tempfile.TemporaryDirectory() as root:
    lake_day(f'{root}/lake', DT, files)
    assert export(f'{root}/lake', f'{root}/dest', '--date', DT, '--format', fmt,
                  '--compression', compression, '--layout', layout, *LAYOUTS[layout]) == 0
    got = sorted((r for f in data_files(f'{root}/dest') for r in read_export(f, fmt)),
                 key=lambda r: r['insert_id'])
  want = expected([r for f in files for r in f], DT)
  assert got == (xml_expected(want) if fmt == 'xml' else want)
