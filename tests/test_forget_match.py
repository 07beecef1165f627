"""Which rows hold a user: the Arrow matching of transforms/lake/forget.py against plain Python loops
over the same values (hypothesis searches maps, keys and ids), and dead letters as real writers'
maps look in JSON."""
import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.lake import forget

MAP = pa.map_(pa.string(), pa.string())
KEYS = ['id', 'device_id', 'user_id', 'email']
VALUES = ['a', 'b', 'ab', 'A', '1', '', '49591', '4959']

maps = st.one_of(st.none(), st.lists(st.tuples(st.sampled_from(KEYS),
                                               st.one_of(st.none(), st.sampled_from(VALUES))),
                                     max_size=4))


def oracle(rows, ids, keys) -> list[bool]:
  return [bool(m) and any(v in ids and (keys is None or k in keys) for k, v in m) for m in rows]


@settings(max_examples=300, deadline=None)
@given(st.lists(maps, max_size=30), st.sets(st.sampled_from(VALUES), min_size=1, max_size=3),
       st.one_of(st.none(), st.sets(st.sampled_from(KEYS), min_size=1, max_size=2)),
       st.integers(0, 5))
def test_identifier_rows_are_the_rows_a_python_loop_finds(rows, ids, keys, offset):
  column = pa.array(rows, MAP).slice(min(offset, len(rows)))   # a slice, as batches arrive
  got = forget.identifier_rows(column, ids, keys).to_pylist()
  assert got == oracle(rows[min(offset, len(rows)):], ids, keys)


@settings(max_examples=100, deadline=None)
@given(st.lists(maps, max_size=20), st.sets(st.sampled_from(VALUES), min_size=1, max_size=3))
def test_hashed_matching_finds_the_same_rows_without_the_ids(rows, ids):
  salt = b'0123456789abcdef'
  column = pa.array(rows, MAP)
  requests = [(frozenset(forget.hashed(salt, i) for i in ids), None)]
  assert (forget.hashed_identifier_rows(column, salt, requests).to_pylist()
          == oracle(rows, ids, None))


def test_a_dead_letter_is_matched_by_its_identifiers_in_every_shape_writers_give_maps():
  originals = [
      json.dumps({'identifiers': {'User_ID': '49591'}, 'insert_id': 'x'}),       # object
      json.dumps({'identifiers': [['user_id', '49591']]}),                        # pairs
      json.dumps({'identifiers': [{'key': 'user_id', 'value': '49591'}]}),        # key/value
      json.dumps({'identifiers': {'user_id': 49591}}),                            # raw JSON number
      json.dumps({'identifiers': {'user_id': '495910'}}),                         # another user
      json.dumps({'identifiers': {'id': 'u1'}, 'user_properties': {'ref': '49591'}}),
      '{"identifiers": {"user_id": "49591"',                                      # cut JSON
      json.dumps({'payload': 'id 49591 somewhere'}),                              # no identifiers
      json.dumps({'identifiers': {'id': 'u2'}}),
  ]
  got = forget.rejected_rows(pa.array(originals), {'49591'}).to_pylist()
  assert got == [True, True, True, True, False, False, True, True, False]
  keyed = forget.rejected_rows(pa.array(originals), {'49591'}, ['device_id']).to_pylist()
  assert keyed == [False, False, False, False, False, False, True, True, False]


def test_request_ids_depend_on_the_hashes_keys_and_range_only():
  a = forget.request_id(['h2', 'h1'], None, None, None)
  assert a == forget.request_id(['h1', 'h2'], None, None, None)
  assert a != forget.request_id(['h1', 'h2'], ['user_id'], None, None)
  assert a != forget.request_id(['h1', 'h2'], None, '2023-01-01', '2023-01-02')


_chars = st.sampled_from(list('ab9-_ .+*?()|[]{}^$\\"é한\t'))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(_chars, max_size=12), max_size=12),
       st.sets(st.text(_chars, min_size=1, max_size=4), min_size=1, max_size=7),
       st.sampled_from([1, 2, 500]))
def test_dead_letters_that_are_not_json_are_matched_by_their_text(texts, ids, per_pattern):
  """Text that is not JSON is erased when it holds an id anywhere (Python's `in` is the model),
  whatever the id's characters and however many ids share one search."""
  texts = ['{' + t for t in texts]   # never JSON
  forget.IDS_PER_PATTERN, before = per_pattern, forget.IDS_PER_PATTERN
  try:
    got = forget.rejected_rows(pa.array(texts, pa.string()), ids).to_pylist()
  finally:
    forget.IDS_PER_PATTERN = before
  assert got == [any(i in t for i in ids) for t in texts]
