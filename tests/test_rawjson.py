"""The C parser of raw events (transforms/kernels/_rawjson.c) against the msgspec path it shortcuts: on
generated payloads, usual and hostile, parse_chunk must give the same rows, rejections and details
with the parser as without it."""
import json
import math
import random

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.kernels import raw, rawjson



def test_the_c_parser_was_built():
  assert rawjson.parse is not None, (
      'transforms/kernels/_rawjson.c was not compiled at install: install gcc and python3-dev, then '
      'rm .venv/.installed-* and run ./run.sh again (run.sh does this itself when run as root)')


needs_parser = pytest.mark.skipif(rawjson.parse is None, reason='see test_the_c_parser_was_built')

FIELDS = ['insert_id', 'event_key', 'environment', 'ts', 'server_ts', 'metric_value',
          'identifiers', 'user_properties', 'event_properties', 'hackle_properties']
text = st.text(st.characters(codec='utf-8'), max_size=12) | st.sampled_from(
    ['', 'ok', '한글', 'a"b', 'back\\slash', 'line\nbreak', '\x00', '\U0001F600', 'é'])
number = (st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 1672531200000, 253402300799999,
                                                        253402300800000, -253402300799999])
          | st.floats(allow_nan=False, allow_infinity=False))
scalar = st.none() | st.booleans() | number | text
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(text, inner, max_size=3), max_leaves=6)
instant = st.integers(-10**16, 10**16) | st.sampled_from(
    ['2023-01-01T00:00:00Z', '2023-01-01 09:00:00+09:00', '2023-01-01', 'yesterday', '']) | value
string_map = st.dictionaries(text, text, max_size=4)
field_value = {
    'insert_id': st.uuids().map(str) | value, 'event_key': text | value,
    'environment': text | value | st.none(), 'ts': instant, 'server_ts': instant,
    'metric_value': number | st.sampled_from(['1.5', '-0', '1e400', 'abc', '123456789012.1234567'])
    | value,
    **{name: string_map | st.dictionaries(text, value, max_size=3) | value
       for name in FIELDS[6:]}}


def _encode(pairs: list, style: int) -> bytes:
  """An object from (key, value) pairs, keys possibly repeated, in one of a few spellings."""
  sep = [(', ', ': '), (',', ':'), (' ,\n', ' : ')][style % 3]
  ensure_ascii = style % 2 == 0
  body = sep[0].join(json.dumps(k, ensure_ascii=ensure_ascii) + sep[1]
                     + json.dumps(v, ensure_ascii=ensure_ascii) for k, v in pairs)
  return ('{' + body + '}').encode('utf-8', errors='surrogatepass')


@st.composite
def payload(draw) -> bytes:
  names = draw(st.lists(st.sampled_from(FIELDS + ['extra', 'Ts', 'insert\\u005fid']), max_size=12))
  pairs = [(name.replace('\\u005f', '_') if draw(st.booleans()) else name,
            draw(field_value.get(name, value))) for name in names]
  data = _encode(pairs, draw(st.integers(0, 5)))
  mutation = draw(st.integers(0, 9))
  if mutation == 0:   # cut short
    data = data[:draw(st.integers(0, len(data)))]
  elif mutation == 1:   # a byte that is not UTF-8, or an escape that is not a character
    at = draw(st.integers(0, len(data)))
    data = data[:at] + draw(st.sampled_from([b'\xff', b'\xed\xa0\x80', b'\\ud800', b'\\x'])) + data[at:]
  elif mutation == 2:
    data = b' \t' + data + b'\n '
  return data


def _parse_both(payloads: list[bytes], monkeypatch) -> tuple:
  chunk = raw.RawChunk(source=['f'] * len(payloads), rows=list(range(1, len(payloads) + 1)),
                       payloads=payloads, received_ms=1_672_531_200_000)
  fast = raw.parse_chunk(chunk)
  with monkeypatch.context() as m:
    m.setattr(rawjson, 'parse', None)
    slow = raw.parse_chunk(chunk)
  return fast, slow


def _assert_same(fast, slow):
  assert fast[2].tolist() == slow[2].tolist()   # the server time of each rejected row
  for got, want in zip(fast[:2], slow[:2]):
    assert got.schema == want.schema
    for name in want.schema.names:
      assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


@needs_parser
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(payload(), min_size=1, max_size=30))
def test_the_c_parser_and_msgspec_give_the_same_rows(payloads, monkeypatch):
  _assert_same(*_parse_both(payloads, monkeypatch))


@needs_parser
def test_the_usual_payloads_are_taken_and_the_rest_left_to_msgspec(monkeypatch):
  usual = json.dumps({'insert_id': '2e3169ec-47de-434f-87af-311ee1a94fc7', 'event_key': 'buy',
                      'ts': 1672585208248, 'server_ts': '2023-01-01T15:00:08Z',
                      'metric_value': 12.5, 'identifiers': {'id': 'u', 'device_id': 'd'},
                      'event_properties': {'q': 'a \\"quoted\\"\n한글 \U0001F600', 'n': -3,
                                           'price': 12.50, 'big': 1e16, 'ok': True, 'no': None},
                      'unknown': [{'x': None}, 1e5, True]}).encode()
  odd = [b'{"insert_id": "a", "insert_id": "b"}',            # a field twice
         b'{"identifiers": {"id": "u", "id": "v"}}',          # a key twice
         b'{"identifiers": {"n": {"x": 1}}}',                  # a nested value
         b'{"ts": 1.5}', b'{"metric_value": -0}',
         b'{"insert_\\u0069d": "x"}', b'[1]', b'', b'{"a": "\xff"}']
  literal = [b'{"identifiers": {"n": 1e400}}', b'{"identifiers": {"n": -0}}',   # kept as sent
             b'{"metric_value": 1e400}']   # kept as sent too: its range rule refuses it
  taken, _ = rawjson.columns([usual] + literal + odd)
  assert taken.tolist() == [True] * 4 + [False] * len(odd)
  _assert_same(*_parse_both([usual] + literal + odd, monkeypatch))


@needs_parser
def test_columns_are_arrow_arrays_of_the_contract_types():
  _, columns = rawjson.columns([b'{"identifiers": {"id": "u"}, "ts": 5}'])
  assert columns['identifiers'].type == pa.map_(pa.string(), pa.string())
  assert columns['ts'].to_pylist() == [5] and columns['ts_text'].to_pylist() == [None]


@needs_parser
def test_metric_doubles_read_as_python_writes_them():
  """The C parser's metric literals with a fraction or exponent become the text of their double,
  by Arrow's casts where they agree with Python (plain decimals) and by repr elsewhere: against
  repr(float(literal)) over random literals, the edges of repr's plain notation, and literals
  beyond a double's range (kept as sent)."""
  rng = random.Random(11)
  literals = ['0.0', '-0.0', '1.50', '1e5', '1E+5', '2.5e-3', '1e-4', '9.9999e-5', '1e16', '1e-400',
              '9999999999999998.0', '1e15', '123456789012345.6', '1e400', '-1e400', '5e-324']
  for _ in range(20_000):
    whole = str(rng.randint(0, 10 ** rng.randint(1, 20)))
    fraction = ''.join(rng.choice('0123456789') for _ in range(rng.randint(1, 18)))
    exponent = f'e{rng.choice(["", "+", "-"])}{rng.randint(0, 30)}' if rng.random() < 0.3 else ''
    literals.append(f'{rng.choice(["", "-"])}{whole}.{fraction}{exponent}')
  taken, columns = rawjson.columns([b'{"metric_value": %s}' % v.encode() for v in literals])
  assert taken.all()
  assert columns['metric_value'].to_pylist() == [
      repr(float(v)) if math.isfinite(float(v)) else v for v in literals]
