"""Event contracts as pydantic models, and the Arrow schemas derived from them.

The pydantic models are the source of truth: `arrow_schema(Model)` maps each field's annotation to
an Arrow type, so the Parquet schema we read and write cannot drift from the documented contract.
Per-row pydantic validation runs only on rejected rows, to explain them.
"""
import datetime
import decimal
import hashlib
import typing

import pyarrow as pa
import pydantic
from pydantic import AwareDatetime, Field

__all__ = ['UUID_PATTERN', 'Metric', 'StringMap', 'REQUIRED_KEYS', 'MAP_COLUMNS', 'ImportEvent',
           'LakeEvent', 'arrow_schema', 'fingerprint', 'IMPORT_SCHEMA', 'OPTIONAL_COLUMNS',
           'LAKE_SCHEMA', 'REJECTED_SCHEMA', 'SOURCE_FILE', 'SOURCE_ROW', 'LINEAGE', 'PAYLOAD']

UUID_PATTERN = r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

Metric = typing.Annotated[decimal.Decimal, Field(max_digits=24, decimal_places=6)]
StringMap = dict[str, typing.Optional[str]]
REQUIRED_KEYS = {'identifiers': ('id', 'device_id'), 'platform_properties': ('osname', 'appversion')}
MAP_COLUMNS = ('identifiers', 'user_properties', 'event_properties', 'platform_properties')


def _require_keys(column: str, value: StringMap) -> StringMap:
  for key in REQUIRED_KEYS[column]:
    if not value.get(key):
      raise ValueError(f"{column} needs a non-empty '{key}'")
  return value


def _lower_keys(value: StringMap) -> StringMap:
  if any(k != k.lower() for k in value):
    raise ValueError('map keys must be lower-case')
  return value


class ImportEvent(pydantic.BaseModel):
  """One row of a customer's import file (seed 001), after normalization."""
  model_config = pydantic.ConfigDict(extra='forbid', title='eventferry import event')

  ts: AwareDatetime = Field(description='client time, UTC, truncated to milliseconds')
  event_key: str = Field(min_length=1, pattern=r'\S', description='event name, e.g. purchase')
  identifiers: StringMap = Field(description="user identifiers; 'id' and 'device_id' required")
  insert_id: str = Field(pattern=UUID_PATTERN, description='UUID used to drop duplicates')
  metric_value: Metric = Field(description='decimal(24,6); 0.0 when unused')
  user_properties: StringMap = Field(default_factory=dict,
                                     description='optional: a file without the column has {}')
  event_properties: StringMap = Field(default_factory=dict,
                                      description='optional: a file without the column has {}')
  platform_properties: StringMap = Field(description="'osname' and 'appversion' required")

  @pydantic.field_validator('identifiers', 'platform_properties')
  @classmethod
  def _required(cls, value, info):
    return _require_keys(info.field_name, value)

  @pydantic.field_validator(*MAP_COLUMNS)
  @classmethod
  def _lower(cls, value):
    return _lower_keys(value)


class LakeEvent(pydantic.BaseModel):
  """One row of the event lake: the import event plus its environment."""
  model_config = pydantic.ConfigDict(extra='forbid', title='eventferry lake event')

  ts: AwareDatetime
  environment: str = Field(min_length=1)
  event_key: str = Field(min_length=1)
  identifiers: StringMap
  insert_id: str = Field(pattern=UUID_PATTERN)
  metric_value: Metric
  user_properties: StringMap
  event_properties: StringMap
  platform_properties: StringMap


def _decimal_type(info: pydantic.fields.FieldInfo) -> pa.DataType:
  limits = {}
  for meta in info.metadata:
    for name in ('max_digits', 'decimal_places'):
      if getattr(meta, name, None) is not None:
        limits[name] = getattr(meta, name)
  return pa.decimal128(limits['max_digits'], limits['decimal_places'])


def _arrow_type(info: pydantic.fields.FieldInfo) -> pa.DataType:
  annotation = info.annotation
  if annotation is str:
    return pa.string()
  if annotation is datetime.datetime or annotation is AwareDatetime:
    return pa.timestamp('ms', tz='UTC')
  if annotation is datetime.date:
    return pa.date32()
  if annotation is decimal.Decimal:
    return _decimal_type(info)
  if typing.get_origin(annotation) is dict:
    return pa.map_(pa.string(), pa.string())
  raise TypeError(f'no Arrow type for {annotation!r}')


def arrow_schema(model: type[pydantic.BaseModel]) -> pa.Schema:
  """The Arrow schema of a contract: one non-nullable field per model field, in model order."""
  return pa.schema([pa.field(name, _arrow_type(info), nullable=False)
                    for name, info in model.model_fields.items()])


def fingerprint(schema: pa.Schema) -> str:
  """A stable hash of a schema's names, types and nullability, for manifests."""
  text = '\n'.join(f'{f.name}:{f.type}:{"null" if f.nullable else "required"}' for f in schema)
  return 'sha256:' + hashlib.sha256(text.encode()).hexdigest()


IMPORT_SCHEMA = arrow_schema(ImportEvent)
OPTIONAL_COLUMNS = tuple(name for name, info in ImportEvent.model_fields.items()
                         if not info.is_required())   # a missing one reads as empty maps
LAKE_SCHEMA = arrow_schema(LakeEvent)
# Lineage the pipeline carries beside each row until it is written or rejected (never in the lake).
SOURCE_FILE = '_source_file'
SOURCE_ROW = '_source_row'
LINEAGE = (SOURCE_FILE, SOURCE_ROW)
PAYLOAD = '_payload'   # streaming ingest: the message as it arrived, shown for rejected rows
# The dead letters (LAKE/_rejected/dt=D/): one row per rejected event, with why and where from.
REJECTED_SCHEMA = pa.schema([
    pa.field('reason', pa.string(), nullable=False),   # schemas/reasons.py
    pa.field('detail', pa.string(), nullable=False),
    pa.field('source_file', pa.string(), nullable=False),
    pa.field('source_row', pa.int64(), nullable=False),
    pa.field('original', pa.string(), nullable=False),   # the row as read, as a JSON object
])
