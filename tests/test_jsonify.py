"""Vectorized JSON text equals the standard library's, for awkward content too."""
import json

import pyarrow as pa
import pytest

from transforms.kernels.jsonify import map_to_json, quote

AWKWARD = ['plain', '', 'quote " and \\ backslash', 'new\nline\r\ttab', '레저 & <스포츠>',
           'nul \x00 and \x1f and \x7f', 'emoji 🚀', ',|;', 'both \x01 "q" \\ \n']


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
