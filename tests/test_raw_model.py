"""Raw events against a model built on the standard `json` module, not on the project's code.

Hypothesis writes JSON lines (every JSON number form, escapes, surrogate pairs and lone halves,
control characters, nested values, duplicate keys, huge values, extra fields, a BOM, CRLF). The
model (`expect`) says per payload whether the contract accepts it and what each field holds;
property values that are not strings must be their JSON text exactly as sent. The payloads go
through the ingest's parse (the C parser and the msgspec path) and through a real batch ingest
of files, whose lake and dead letters are read back with DuckDB.
"""
import datetime
import decimal
import gzip
import json
import math
import os
import re

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import ingest as ingest_pipeline
from tests.conftest import parse_payloads, uuid
from transforms import validate
from transforms.kernels import rawjson

pytestmark = pytest.mark.engine

DAY_MS = int(datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000)
BOM = '\ufeff'


class Lit:
  """A JSON number as the literal text that was sent."""

  def __init__(self, text: str):
    self.text = text

  def __eq__(self, other) -> bool:
    return type(other) is Lit and other.text == self.text

  def __repr__(self) -> str:
    return f'Lit({self.text})'


class Obj(list):
  """A JSON object as its members, in order, repeated keys and all."""


def _raise(constant: str):
  raise ValueError(f'{constant} is not JSON')


def _loads(text: str):
  """json.loads keeping number literals and every member of every object, in order."""
  return json.loads(text, parse_int=Lit, parse_float=Lit, object_pairs_hook=Obj,
                    parse_constant=_raise)


def _strings(value) -> list[str]:
  if type(value) is Obj:
    return [s for k, v in value for s in [k, *_strings(v)]]
  if type(value) is list:
    return [s for v in value for s in _strings(v)]
  return [value] if type(value) is str else []


def expect(line: bytes) -> dict | None:
  """-> the fields the lake row holds, or None: the contract rejects the payload."""
  try:
    members = _loads(line.decode('utf-8'))
  except ValueError:   # not UTF-8, not JSON (a BOM inside a file is not JSON either)
    return None
  if type(members) is not Obj or any(0xD800 <= ord(c) <= 0xDFFF
                                     for s in _strings(members) for c in s):
    return None   # not an object; a lone surrogate is no character
  event = dict(members)   # a repeated field: the last one counts
  ts = event.get('ts')
  if type(ts) is not Lit or not re.fullmatch(r'-?[0-9]+', ts.text) or not (
      DAY_MS <= int(ts.text) < DAY_MS + 86_400_000):
    return None   # these payloads send ts as epoch millis; seconds and micros are refused
  props = event.get('event_properties', [])
  return {'insert_id': event['insert_id'], 'event_key': event['event_key'], 'ts': int(ts.text),
          'event_properties': dict(props)}   # a repeated key: the last value counts


def same_value(stored: str | None, sent) -> bool:
  """A stored property value against the model's: strings as themselves; numbers as their
  literal, character for character; anything else parses back to what was sent."""
  if sent is None or type(sent) is str:
    return stored == sent
  if type(sent) is Lit:
    return stored == sent.text
  if type(sent) is bool:
    return stored == json.dumps(sent)
  return _loads(stored) == sent


# The JSON text a generator writes, and nothing else: numbers in every form JSON allows.
number = st.sampled_from(['0', '-0', '1e3', '1E+03', '1e-7', '0.000001', '1.0', '-1.50', '2.5E-3',
                          '12345678901234567890123', '-9223372036854775809', '1e400',
                          '0.30000000000000004', '1.7976931348623157e308', '5e-324']) | \
    st.integers(-2 ** 80, 2 ** 80).map(str) | \
    st.floats(allow_nan=False, allow_infinity=False).map(repr).filter(lambda t: 'e' in t or '.' in t)
chars = st.characters(codec='utf-8') | st.sampled_from(['"', '\\', '/', '\n', '\t', '\x00', '\x1f',
                                                         '\u2028', '\U0001F600', '한'])
escapes = st.sampled_from(['\\"', '\\\\', '\\/', '\\b', '\\f', '\\n', '\\r', '\\t', '\\u0000',
                           '\\u00e9', '\\uD83D\\uDE00', '\\ud83d\\ude00'])
lone = st.sampled_from(['\\ud800', '\\uDBFF', '\\udc00', '\\ud800\\u0041', '\\udc00\\ud800'])


@st.composite
def string(draw) -> str:
  """A JSON string literal: characters as json.dumps writes them, mixed with raw escapes."""
  ascii = draw(st.booleans())
  parts = draw(st.lists(st.text(chars, max_size=6).map(lambda s: json.dumps(s, ensure_ascii=ascii)[1:-1])
                        | escapes | lone, max_size=3))
  if draw(st.integers(0, 60)) == 0:
    parts.append('x' * 100_000)   # a huge value
  return '"' + ''.join(parts) + '"'


value = st.recursive(number | string() | st.sampled_from(['true', 'false', 'null']),
                     lambda inner: st.lists(inner, max_size=3).map(lambda v: '[' + ', '.join(v) + ']')
                     | st.lists(st.tuples(string(), inner), max_size=3).map(
                         lambda m: '{' + ','.join(f'{k}:{v}' for k, v in m) + '}'),
                     max_leaves=4)
key = st.sampled_from(['"a"', '"price"', '"n"', '"\\u0061"', '"q_1"', '"\\u00e9t\\u00e9"', '"x"'])
space = st.sampled_from(['', ' ', '\t', '\r\n '])


@st.composite
def payload(draw) -> bytes:
  ws = lambda: draw(space)
  props = draw(st.lists(st.tuples(key, value), max_size=5))   # keys may repeat
  ts = draw(st.integers(DAY_MS, DAY_MS + 86_399_999).map(str) | st.sampled_from(
      [str(DAY_MS // 1000), str(DAY_MS * 1000), f'{DAY_MS}.5', f'"{DAY_MS}"']))
  members = [('"insert_id"', '"@ID@"'),   # numbered by the test: one insert_id per payload
             ('"event_key"', draw(st.sampled_from(['"purchase"', '"\\u0076iew"', '"장바구니"']))),
             ('"ts"', ts),
             ('"identifiers"', '{"id": "u1", "device_id": "d1"}'),
             ('"hackle_properties"', '{"osname": "iOS", "appversion": "1.0"}'),
             ('"event_properties"', '{' + ','.join(f'{ws()}{k}{ws()}:{ws()}{v}{ws()}'
                                                   for k, v in props) + '}')]
  members += draw(st.lists(st.tuples(st.sampled_from(['"extra"', '"Ts"', '"nested"']), value),
                           max_size=2))
  members = draw(st.permutations(members))
  data = ('{' + ','.join(f'{ws()}{k}{ws()}:{ws()}{v}{ws()}' for k, v in members) + '}').encode()
  cut = draw(st.integers(0, 15))
  if cut == 0:
    data = data[:draw(st.integers(0, len(data) - 1))]          # cut short
  elif cut == 1:
    at = draw(st.integers(0, len(data)))
    data = data[:at] + b'\xff' + data[at:]                       # not UTF-8
  return data


def numbered(payloads: list[bytes]) -> list[bytes]:
  return [p.replace(b'@ID@', uuid(i).encode()) for i, p in enumerate(payloads, start=1)]


def _parse(payloads: list[bytes], c_parser: bool, monkeypatch) -> list:
  batch, rejected = parse_payloads(payloads, c_parser, monkeypatch)
  checked = validate.validate_batch(batch, 'production')
  return ({r['_source_row']: r for r in checked.valid.to_pylist()},
          [r['source_row'] for r in rejected.to_pylist() + checked.rejected.to_pylist()])


def _check(by_row: dict[int, dict], rejected_rows: list[int], payloads: list[bytes]) -> None:
  """Every payload the model accepts is one row holding what it says; every other one is a dead
  letter; none is both or neither. Payloads are numbered from 1; blank lines are no payload."""
  assert len(rejected_rows) == len(set(rejected_rows))
  assert set(by_row) | set(rejected_rows) == {i for i, p in enumerate(payloads, start=1) if p.strip()}
  for i, line in enumerate(payloads, start=1):
    if not line.strip():
      continue
    want = expect(line)
    if want is None:
      assert i in rejected_rows and i not in by_row, line[:300]
      continue
    assert i in by_row and i not in rejected_rows, line[:300]
    got = by_row[i]
    assert got['insert_id'] == want['insert_id'] and got['event_key'] == want['event_key']
    ms = got['ts'] if isinstance(got['ts'], int) else int(got['ts'].timestamp() * 1000)
    assert ms == want['ts']
    stored = dict(got['event_properties'])
    assert set(stored) == set(want['event_properties']), line[:300]
    for k, sent in want['event_properties'].items():
      assert same_value(stored[k], sent), (k, stored[k][:200] if stored[k] else stored[k], sent)


@pytest.mark.parametrize('c_parser', [True, False])
@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(payloads=st.lists(payload(), min_size=1, max_size=5))
def test_the_parse_agrees_with_the_json_model(payloads, c_parser, monkeypatch):
  if c_parser and rawjson.parse is None:
    pytest.skip('transforms/kernels/_rawjson.c was not built (tests/test_rawjson.py says how)')
  payloads = [p or b'[]' for p in numbered(payloads)]   # a payload cut to nothing: not an object
  _check(*_parse(payloads, c_parser, monkeypatch), payloads)


def _metric_model(literal: str) -> tuple[str, decimal.Decimal | None]:
  """What the contract makes of a metric_value number literal, by Python's float and decimal: an
  integer as written, any other number as its double's shortest text (repr), rounded HALF_UP to 6
  decimals; out of range from 10^18 on, or beyond a double's range."""
  if re.fullmatch(r'-?[0-9]+', literal):
    value = decimal.Decimal(literal)
  elif not math.isfinite(float(literal)):
    return 'metric_value_out_of_range', None
  else:
    value = decimal.Decimal(repr(float(literal)))
  value = value.quantize(decimal.Decimal('0.000001'), decimal.ROUND_HALF_UP, decimal.Context(prec=1000))
  return ('metric_value_out_of_range', None) if abs(value) >= 10 ** 18 else ('valid', value)


metric_literal = st.builds(lambda sign, digits, point, exp: f'{sign}{digits[:point]}.{digits[point:] or "0"}e{exp}',
                           st.sampled_from(['', '-']), st.from_regex(r'[1-9][0-9]{0,24}', fullmatch=True),
                           st.integers(1, 25), st.integers(-30, 999)) \
    | st.from_regex(r'-?[1-9][0-9]{0,30}', fullmatch=True) \
    | st.sampled_from(['1e400', '-1E400', '1e308', '1.7976931348623157e308', '1.8e308', '999999999999999999.9999994',
                       '1e18', '-1e18', '999999999999999999', '0.0000005', '1E-400', '0', '-0.0'])


@pytest.mark.parametrize('c_parser', [True, False])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(literals=st.lists(metric_literal, min_size=1, max_size=6))
def test_a_metric_value_of_any_size_is_judged_by_the_metric_rules_not_refused_as_json(literals, c_parser,
                                                                                   monkeypatch):
  if c_parser and rawjson.parse is None:
    pytest.skip('transforms/_rawjson.c was not built (tests/test_rawjson.py says how)')
  payloads = numbered([b'{"insert_id":"@ID@","event_key":"buy","ts":%d,"identifiers":{"id":"u1","device_id":"d1"},'
                       b'"hackle_properties":{"osname":"iOS","appversion":"1.0"},"metric_value":%s}'
                       % (DAY_MS, t.encode()) for t in literals])
  batch, rejected = parse_payloads(payloads, c_parser, monkeypatch)
  checked = validate.validate_batch(batch, 'production')
  got = {r['_source_row']: ('valid', r['metric_value']) for r in checked.valid.to_pylist()}
  got |= {r['source_row']: (r['reason'], None) for r in rejected.to_pylist() + checked.rejected.to_pylist()}
  assert got == {i: _metric_model(t) for i, t in enumerate(literals, start=1)}


def _lake(lake: str) -> tuple[dict[int, dict], list[int]]:
  """({payload number: lake row}, dead-letter rows) of every published day, through DuckDB."""
  def files(base: str) -> list[str]:
    out = []
    for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
      manifest = os.path.join(base, d, '_manifest.json')
      if d.startswith('dt=') and os.path.exists(os.path.join(base, d, '_SUCCESS')):
        out += [os.path.join(base, d, f['name']) for f in json.load(open(manifest))['files']]
    return out
  lake_files, dead_files = files(lake), files(os.path.join(lake, '_rejected'))
  rows = []
  if lake_files:
    cur = duckdb.sql(f'SELECT insert_id, event_key, epoch_ms(ts) AS ts, event_properties '
                     f'FROM read_parquet({lake_files!r})')
    names = [c[0] for c in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
  number = {uuid(i): i for i in range(1, 1000)}
  by_row = {number[r['insert_id']]: r for r in rows}
  assert len(by_row) == len(rows)   # each row once
  dead = [r[0] for r in duckdb.sql(f'SELECT source_row FROM read_parquet({dead_files!r})').fetchall()] \
      if dead_files else []
  return by_row, dead


@settings(max_examples=8, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(payloads=st.lists(payload(), min_size=1, max_size=10), bom=st.booleans(),
       newline=st.sampled_from([b'\n', b'\r\n']), gz=st.booleans())
def test_a_batch_ingest_of_files_agrees_with_the_json_model(payloads, bom, newline, gz, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('model')
  payloads = [p.replace(b'\n', b' ').replace(b'\r', b' ') for p in numbered(payloads)]   # a line each
  data = (BOM.encode() if bom else b'') + newline.join(payloads) + newline
  path = tmp / ('in.jsonl.gz' if gz else 'in.jsonl')
  path.write_bytes(gzip.compress(data) if gz else data)
  lake = str(tmp / 'lake')
  assert ingest_pipeline.run(['--input', str(path), '--lake', lake, '--runner', 'FnApiRunner']) == 0
  _check(*_lake(lake), payloads)
  assert not os.path.exists(os.path.join(lake, '_staging'))
