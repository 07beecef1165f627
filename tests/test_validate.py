"""Validation: every reason code, contracts vs Arrow schemas, lineage and accounting."""
import datetime
import decimal
import json

import numpy as np
import pyarrow as pa
import pytest

from schemas.events import IMPORT_SCHEMA, LAKE_SCHEMA, ImportEvent, LakeEvent, arrow_schema
from schemas.reasons import Reason
from tests.conftest import SCHEMA, event, raw_batch, uuid
from transforms.kernels.coerce import ContractError
from transforms.validate import _has_keys, validate_batch


def test_arrow_schemas_are_derived_from_the_pydantic_contracts():
  assert IMPORT_SCHEMA == arrow_schema(ImportEvent)
  assert [(f.name, str(f.type), f.nullable) for f in IMPORT_SCHEMA] == [
      ('ts', 'timestamp[ms, tz=UTC]', False), ('event_key', 'string', False),
      ('identifiers', 'map<string, string>', False), ('insert_id', 'string', False),
      ('metric_value', 'decimal128(24, 6)', False), ('user_properties', 'map<string, string>', False),
      ('event_properties', 'map<string, string>', False),
      ('platform_properties', 'map<string, string>', False)]
  assert LAKE_SCHEMA.names == list(LakeEvent.model_fields)


@pytest.mark.parametrize('override,reason', [
    ({'insert_id': None}, Reason.MISSING_INSERT_ID),
    ({'insert_id': '  '}, Reason.MISSING_INSERT_ID),
    ({'insert_id': 'not-a-uuid'}, Reason.INVALID_INSERT_ID),
    ({'insert_id': uuid(1) + 'x'}, Reason.INVALID_INSERT_ID),
    ({'event_key': None}, Reason.MISSING_EVENT_KEY),
    ({'event_key': ' \t'}, Reason.MISSING_EVENT_KEY),
    ({'ts': None}, Reason.MISSING_TS),
    ({'identifiers': [('device_id', 'd')]}, Reason.MISSING_ID),
    ({'identifiers': [('id', ''), ('device_id', 'd')]}, Reason.MISSING_ID),
    ({'identifiers': [('id', 'u')]}, Reason.MISSING_DEVICE_ID),
    ({'identifiers': None}, Reason.MISSING_ID),
    ({'platform_properties': [('appversion', '1')]}, Reason.MISSING_OSNAME),
    ({'platform_properties': [('OSNAME', 'iOS')]}, Reason.MISSING_APPVERSION),
])
def test_each_rule_rejects_with_its_reason(override, reason):
  batch = raw_batch([event(1), event(2, **override)])
  result = validate_batch(batch, 'production')
  assert result.valid.num_rows == 1
  rejected = result.rejected.to_pylist()
  assert [r['reason'] for r in rejected] == [reason.value]
  assert rejected[0]['source_file'] == 'f.parquet' and rejected[0]['source_row'] == 1
  assert reason.explanation in rejected[0]['detail']
  assert json.loads(rejected[0]['original'])['insert_id'] == override.get('insert_id', uuid(2))
  assert result.stats.rows_in == 2 and result.stats.rows_rejected == 1


def test_metric_problems_are_rejected():
  schema = SCHEMA.set(SCHEMA.get_field_index('metric_value'), pa.field('metric_value', pa.float64()))
  rows = [event(1, metric_value=1.25), event(2, metric_value=float('nan')),
          event(3, metric_value=-float('inf')), event(4, metric_value=1e18),
          event(5, metric_value=None)]
  result = validate_batch(raw_batch(rows, schema), 'production')
  assert [r['reason'] for r in result.rejected.to_pylist()] == [
      'invalid_metric_value', 'invalid_metric_value', 'metric_value_out_of_range']
  assert result.valid.column('metric_value').to_pylist() == [decimal.Decimal('1.25'), 0]
  assert result.stats.flags['metric_value_defaulted'] == 1


def test_normalized_lake_rows():
  row = event(7, insert_id=uuid(7).upper(),
              identifiers=[('ID', 'u'), ('Device_Id', 'd'), ('device_id', 'kept')],
              ts=datetime.datetime(2023, 1, 1, 0, 0, 0, 999999, tzinfo=datetime.timezone.utc))
  schema = SCHEMA.set(0, pa.field('ts', pa.timestamp('us', tz='UTC')))
  result = validate_batch(raw_batch([row], schema), 'staging', datetime.date(2023, 1, 1))
  lake = result.valid.to_pylist()[0]
  assert lake['insert_id'] == uuid(7)
  assert lake['identifiers'] == [('id', 'u'), ('device_id', 'kept')]
  assert lake['ts'] == datetime.datetime(2023, 1, 1, 0, 0, 0, 999000, tzinfo=datetime.timezone.utc)
  assert lake['environment'] == 'staging'
  assert lake['event_properties'] == [('product_category', '레저')]
  assert result.stats.flags['map_key_collision'] == 1


def test_ts_far_outside_the_day_is_flagged_not_rejected():
  far = datetime.datetime(2022, 6, 1, tzinfo=datetime.timezone.utc)
  result = validate_batch(raw_batch([event(1), event(2, ts=far)]), 'p', datetime.date(2023, 1, 1))
  assert result.valid.num_rows == 2 and result.stats.flags['ts_outside_day'] == 1


def test_valid_rows_satisfy_the_pydantic_contract():
  result = validate_batch(raw_batch([event(i) for i in range(5)]), 'production')
  assert result.valid.num_rows == 5 and result.rejected.num_rows == 0   # nothing checked is no check
  for row in result.valid.select(LAKE_SCHEMA.names).to_pylist():
    maps = {k: dict(v) for k, v in row.items() if isinstance(v, list)}
    LakeEvent.model_validate({**row, **maps})


def test_json_identifiers_as_the_seed_prints_them():
  schema = SCHEMA.set(2, pa.field('identifiers', pa.string()))
  rows = [event(1, identifiers='{"ID": "u", "device_id": "d", "user_id": "49591"}'),
          event(2, identifiers='{not json')]
  result = validate_batch(raw_batch(rows, schema), 'production')
  assert result.valid.column('identifiers').to_pylist() == [
      [('id', 'u'), ('device_id', 'd'), ('user_id', '49591')]]
  assert result.rejected.column('reason').to_pylist() == ['invalid_map']


def _invalid_utf8(n: int) -> pa.Array:
  return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(
      np.arange(0, 3 * (n + 1), 3, dtype=np.int32).tobytes()), pa.py_buffer(b'\xff\xfe!' * n)])


def test_invalid_utf8_is_rejected_with_its_bytes_shown_not_a_crash():
  batch = raw_batch([event(1), event(2)])
  broken = pa.concat_arrays([batch.column('event_key').slice(0, 1), _invalid_utf8(1)])
  batch = batch.set_column(batch.schema.get_field_index('event_key'), 'event_key', broken)
  result = validate_batch(batch, 'production')
  assert result.valid.num_rows == 1
  rejected = result.rejected.to_pylist()
  assert [r['reason'] for r in rejected] == ['invalid_text']
  assert json.loads(rejected[0]['original'])['event_key'] == '\\xff\\xfe!'


def test_invalid_utf8_in_a_map_key_rejects_the_row():
  bad_key = pa.MapArray.from_arrays([0, 2], _invalid_utf8(2), pa.array(['a', 'b']))
  good = raw_batch([event(1)])
  col = good.schema.get_field_index('user_properties')
  batch = good.set_column(col, 'user_properties', bad_key)
  result = validate_batch(batch, 'production')
  assert result.rejected.column('reason').to_pylist() == ['invalid_text']


def test_extreme_but_valid_values_are_kept():
  rows = [event(1, event_key='nul\x00byte'),
          event(2, event_properties=[(f'k{i}', 'v') for i in range(10_000)]),
          event(3, user_properties=[('big', 'x' * 1_000_000)]),
          event(4, ts=datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)),
          event(5, ts=datetime.datetime(9999, 12, 31, 23, 59, 59, 999000,
                                        tzinfo=datetime.timezone.utc)),
          event(6, metric_value=decimal.Decimal('-5.5'))]
  result = validate_batch(raw_batch(rows), 'production', datetime.date(2023, 1, 1))
  assert result.valid.num_rows == 6 and result.stats.flags['ts_outside_day'] == 2
  assert len(result.valid.column('event_properties')[1]) == 10_000


def test_has_keys_on_a_sliced_map_with_empty_and_null_values():
  maps = pa.array([[('id', 'a')], [('id', 'b'), ('device_id', 'd')], [], [('id', '')],
                   [('device_id', None), ('id', 'c')], [('x', 'y')]],
                  pa.map_(pa.string(), pa.string()))
  id_, device = _has_keys(maps.slice(1), ('id', 'device_id'))
  assert id_.tolist() == [True, False, False, True, False]
  assert device.tolist() == [True, False, False, False, False]


@pytest.mark.parametrize('absent', [['event_properties'], ['user_properties'],
                                    ['user_properties', 'event_properties']])
def test_a_missing_optional_map_column_reads_as_empty_maps(absent):
  schema = pa.schema([f for f in SCHEMA if f.name not in absent])
  rows = [{k: v for k, v in event(n).items() if k not in absent} for n in (1, 2)]
  result = validate_batch(raw_batch(rows, schema), 'production')
  assert result.ok.tolist() == [True, True]
  for name in absent:
    assert result.valid.column(name).to_pylist() == [[], []]


@pytest.mark.parametrize('column', ['ts', 'identifiers', 'insert_id', 'platform_properties'])
def test_a_missing_required_column_is_named_plainly(column):
  schema = pa.schema([f for f in SCHEMA if f.name != column])
  rows = [{k: v for k, v in event(1).items() if k != column}]
  with pytest.raises(ContractError) as e:
    validate_batch(raw_batch(rows, schema), 'production')
  assert str(e.value).startswith(f"the required column '{column}' (")
  assert 'is missing; the file has ts' in str(e.value) or column == 'ts'
  assert 'null' not in str(e.value) and '_source' not in str(e.value)
