"""Map-key lower-casing and the collision rule (pure functions)."""
import pyarrow as pa
import pytest

from transforms.kernels.normalize import lower_map_keys, lower_uuid

MAP = pa.map_(pa.string(), pa.string())


@pytest.mark.parametrize('row,expected,dropped', [
    ([('UserId', 'a'), ('userid', 'b')], [('userid', 'b')], 1),       # the lower-case key wins
    ([('userid', 'b'), ('UserId', 'a')], [('userid', 'b')], 1),
    ([('USERID', 'a'), ('UserId', 'b')], [('userid', 'a')], 1),       # else the first in order
    ([('A', '1'), ('b', '2')], [('a', '1'), ('b', '2')], 0),
    ([('ÄB', 'x')], [('äb', 'x')], 0),
    ([], [], 0),
])
def test_lower_keys_with_collision_rule(row, expected, dropped):
  out, n = lower_map_keys(pa.array([row], MAP))
  assert out.to_pylist() == [expected]
  assert n == dropped


def test_lowering_respects_slices_and_untouched_rows():
  arr = pa.array([[('X', '0')], [('a', '1'), ('A', '2')], [('b', '3')], []], MAP).slice(1)
  out, n = lower_map_keys(arr)
  assert out.to_pylist() == [[('a', '1')], [('b', '3')], []]
  assert n == 1


def test_normalizing_twice_equals_once():
  arr = pa.array([[('K', '1'), ('k', '2'), ('Z', None)]], MAP)
  once, _ = lower_map_keys(arr)
  twice, n = lower_map_keys(once)
  assert twice.to_pylist() == once.to_pylist() and n == 0


def test_uuid_lower_and_trim():
  assert lower_uuid(pa.array([' 8FB8E088-9245-4FCE-BB87-7E09D9917ED6 '])).to_pylist() == [
      '8fb8e088-9245-4fce-bb87-7e09d9917ed6']
