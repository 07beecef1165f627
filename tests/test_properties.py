"""Properties of validation and normalization, over generated input (Hypothesis)."""
import datetime
import decimal

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MAP, SCHEMA, event, raw_batch
from transforms.kernels import coerce
from transforms.kernels.normalize import lower_map_keys
from transforms.validate import validate_batch

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
keys = st.text(alphabet='aAbBkK_é', min_size=1, max_size=4)
# Distinct original keys, as writers of real maps produce them; case variants collide on lowering.
maps = st.lists(st.tuples(keys, st.one_of(st.none(), st.text(max_size=5))), max_size=6,
                unique_by=lambda kv: kv[0])


@SETTINGS
@given(st.lists(maps, max_size=8))
def test_lowering_twice_equals_once_and_the_collision_rule_holds(rows):
  once, _ = lower_map_keys(pa.array(rows, MAP))
  twice, dropped = lower_map_keys(once)
  assert twice.to_pylist() == once.to_pylist() and dropped == 0
  for before, after in zip(rows, once.to_pylist()):
    lowered = [k.lower() for k, _ in before]
    assert sorted(k for k, _ in after) == sorted(set(lowered))
    for key, value in after:
      variants = [(k, v) for k, v in before if k.lower() == key]
      exact = [v for k, v in variants if k == key]
      assert value == (exact[0] if exact else variants[0][1])


decimals = st.decimals(min_value=decimal.Decimal('-1e17'), max_value=decimal.Decimal('1e17'),
                       places=6, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(st.lists(decimals, max_size=20))
def test_rounding_never_changes_a_value_that_fits(values):
  for type_ in (pa.decimal128(24, 6), pa.decimal128(38, 10)):
    out, invalid, big, rounded = coerce.to_metric(pa.array(values, type_))
    assert out.to_pylist() == values
    assert not (invalid.any() or big.any() or rounded.any())


row_changes = st.sampled_from([{}, {'insert_id': 'bad'}, {'event_key': ''}, {'ts': None},
                               {'identifiers': [('id', 'u')]}, {'platform_properties': []},
                               {'event_properties': [('K', '1'), ('k', '2')]},
                               {'insert_id': None}, {'metric_value': None}])


@SETTINGS
@given(st.lists(row_changes, min_size=1, max_size=30), st.integers(0, 3))
def test_no_row_is_lost_or_invented(changes, duplicated):
  rows = [event(i, **change) for i, change in enumerate(changes)]
  rows += [event(i, ts=datetime.datetime(2023, 1, 2, tzinfo=datetime.timezone.utc))
           for i in range(min(duplicated, len(rows)))]
  result = validate_batch(raw_batch(rows, SCHEMA), 'production')
  assert result.valid.num_rows + result.rejected.num_rows == len(rows)
  assert result.stats.rows_in == len(rows)
  assert result.stats.rows_rejected == result.rejected.num_rows
  assert sorted(result.rejected.column('source_row').to_pylist() +
                result.valid.column('_source_row').to_pylist()) == list(range(len(rows)))
  if result.valid.num_rows:   # normalizing the normalized rows changes nothing
    lake = result.valid.select(SCHEMA.names)
    again = validate_batch(raw_batch(lake.to_pylist(), SCHEMA), 'production').valid
    assert again.select(SCHEMA.names).equals(lake)
