"""Vectorized JSON text equals the standard library's, for awkward content too; the C kernel
(transforms/kernels/_jsonify.c) writes the same bytes as the Arrow path it replaces."""
import importlib.util
import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import LAKE_SCHEMA
from transforms.kernels import jsonify
from transforms.kernels.jsonify import map_to_json, quote

AWKWARD = ['plain', '', 'quote " and \\ backslash', 'new\nline\r\ttab', '레저 & <스포츠>',
           'nul \x00 and \x1f and \x7f', 'emoji 🚀', ',|;', 'both \x01 "q" \\ \n']
MAP = LAKE_SCHEMA.field('user_properties').type


@pytest.mark.parametrize('value', AWKWARD)
def test_quote_matches_json_dumps(value):
  assert json.loads(quote(pa.array([value])).to_pylist()[0]) == value


def test_maps_round_trip_through_json():
  rows = [[(k, v) for k, v in zip(AWKWARD, reversed(AWKWARD))], [], None, [('k', None)]]
  out = map_to_json(pa.array(rows, pa.map_(pa.string(), pa.string())).slice(0)).to_pylist()
  assert [json.loads(s) for s in out] == [dict(zip(AWKWARD, reversed(AWKWARD))), {}, {},
                                          {'k': None}]


def test_sliced_maps():
  arr = pa.array([[('a', '1')], [('b', '2')], [('c', '3')]], pa.map_(pa.string(), pa.string()))
  assert map_to_json(arr.slice(1, 2)).to_pylist() == ['{"b": "2"}', '{"c": "3"}']


@pytest.mark.parametrize('rows', [[[], []], [None, None], [], [[]], [None, [], None]])
def test_maps_without_any_entry_are_empty_objects(rows):
  """Many customers send no properties at all: no row of the column has an entry."""
  arr = pa.array(rows, pa.map_(pa.string(), pa.string()))
  assert [json.loads(s) for s in map_to_json(arr).to_pylist()] == [{} for _ in rows]
  assert [json.loads(s) for s in map_to_json(arr.slice(len(rows) // 2)).to_pylist()] == \
      [{} for _ in rows[len(rows) // 2:]]


# --- the C kernel -------------------------------------------------------------------------------

def test_the_c_kernel_was_built():
  assert importlib.util.find_spec('transforms.kernels._jsonify') is not None, (
      'transforms/kernels/_jsonify.c was not compiled at install: install gcc and python3-dev, then '
      'rm .venv/.installed-* and run ./run.sh again (run.sh does this itself when run as root)')


needs_kernel = pytest.mark.skipif(jsonify._c_maps is None, reason='see test_the_c_kernel_was_built')


@needs_kernel
def test_the_lake_columns_take_the_c_path(monkeypatch):
  """A column typed as the lake's maps, and a string column, go through the kernel: a type
  check that turned them away would still give the right text, only five times slower."""
  calls = []

  def counted(kernel):
    def call(*args):
      calls.append(kernel.__name__)
      return kernel(*args)
    return call
  monkeypatch.setattr(jsonify, '_c_maps', counted(jsonify._c_maps))
  monkeypatch.setattr(jsonify, '_c_quote', counted(jsonify._c_quote))
  maps = pa.array([[('k', 'v')], None], MAP)
  assert map_to_json(maps).to_pylist() == ['{"k": "v"}', '{}']
  assert quote(pa.array(['a', None])).to_pylist() == ['"a"', None]
  assert calls == ['maps', 'quote']


def test_a_null_map_with_entries_is_an_empty_object():
  """Arrow lets a null list keep entries, which are not its value: both paths write {}."""
  keys, items = pa.array(['a', 'b']), pa.array(['1', None])
  arr = pa.MapArray.from_arrays(pa.array([0, 1, 2], pa.int32()), keys, items,
                                mask=pa.array([True, False]))
  assert arr.to_pylist() == [None, [('b', None)]]
  assert map_to_json(arr).to_pylist() == jsonify._map_to_json_arrow(arr).to_pylist() == \
      ['{}', '{"b": null}']


def test_escapes_that_lengthen_the_text_past_the_estimate():
  """Every byte a 6-byte escape: the kernel counts, the buffer grows, the kernel writes again."""
  value = ''.join(map(chr, range(32))) * 50
  arr = pa.array([[(value, value)]] * 3, MAP)
  assert map_to_json(arr).to_pylist() == [json.dumps({value: value}, ensure_ascii=False)] * 3
  assert quote(pa.array([value])).to_pylist() == [json.dumps(value, ensure_ascii=False)]


@needs_kernel
def test_buffers_shorter_than_the_array_are_refused():
  arr = pa.array([[('k', 'v')]], MAP)
  own, keys, items = arr.buffers(), arr.keys, arr.items
  out = pa.allocate_buffer(64), pa.allocate_buffer(64)
  with pytest.raises(ValueError, match='shorter'):
    jsonify._c_maps(5, (None, own[1], 0), (keys.buffers()[1], keys.buffers()[2], 0),
                    (None, items.buffers()[1], items.buffers()[2], 0), *out)
  bad = pa.py_buffer(pa.array([0, 1000], pa.int32()).buffers()[1])
  with pytest.raises(ValueError, match='outside'):
    jsonify._c_quote(1, (None, bad, pa.py_buffer(b'x'), 0), *out)


# Text with what JSON escapes (quotes, backslashes, every control character), what it passes
# through (DEL, non-ASCII, astral characters, U+2028) and plain keys that repeat.
text = st.text(st.characters(codec='utf-8'), max_size=10) | st.sampled_from(
    ['', 'k', 'a"b', 'back\\slash', '\x00', '\x1f\x7f', '\b\f\n\r\t', '레저', '\U0001F680', '\u2028',
     '"\\"', 'x' * 20])
rows = st.lists(st.none() | st.dictionaries(text, st.none() | text, max_size=6), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows, cut=st.tuples(st.integers(0, 30), st.integers(0, 30)), chunks=st.integers(1, 4))
def test_maps_equal_json_dumps_and_the_arrow_path(rows, cut, chunks):
  """The oracle is the json module: each row is json.dumps of its dict (the export's format is
  json.dumps' default separators), and it loads back to the dict. Slices start mid-array
  (offset != 0), and a chunked column's chunks are written one by one."""
  arr = pa.array([None if r is None else list(r.items()) for r in rows], MAP)
  start = min(cut[0], len(rows))
  length = min(cut[1], len(rows) - start)
  part = arr.slice(start, length)
  expected = [json.dumps(r or {}, ensure_ascii=False) for r in rows[start:start + length]]
  out = map_to_json(part)
  assert out.type == pa.string() and out.null_count == 0
  assert out.to_pylist() == expected
  assert [json.loads(s) for s in out.to_pylist()] == [r or {} for r in rows[start:start + length]]
  assert out.equals(jsonify._map_to_json_arrow(part))   # byte for byte, when the kernel is there
  bounds = sorted({0, len(rows), *(len(rows) * i // chunks for i in range(chunks))})
  column = pa.chunked_array([arr.slice(a, b - a) for a, b in zip(bounds, bounds[1:])], MAP)
  written = [map_to_json(c).to_pylist() for c in column.chunks]
  assert sum(written, []) == [json.dumps(r or {}, ensure_ascii=False) for r in rows]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.none() | text, max_size=25), start=st.integers(0, 30))
def test_quote_equals_json_dumps_and_the_arrow_path(values, start):
  part = pa.array(values, pa.string()).slice(min(start, len(values)))
  out = quote(part)
  assert out.to_pylist() == [None if v is None else json.dumps(v, ensure_ascii=False)
                             for v in values[start:]]
  assert out.equals(jsonify._quote_arrow(part))
