"""The export contract: seed 000 (Hackle Data Export) schema, and the export run settings."""
import datetime
import typing

import pydantic
from pydantic import AwareDatetime, Field

from schemas.events import Metric, arrow_schema

__all__ = ['ExportEvent', 'ExportProfile', 'EXPORT_SCHEMA', 'PROFILE_SCHEMA', 'ID_PATTERN',
           'ExportSpec']


class ExportEvent(pydantic.BaseModel):
  """One exported row, exactly the seed's columns in the seed's order, all non-nullable. Map
  columns are JSON object text; hackle_properties carries the lake's platform_properties."""
  model_config = pydantic.ConfigDict(extra='forbid', title='eventferry export event')

  server_dt: datetime.date = Field(description='the lake partition day')
  ts: AwareDatetime
  environment: str
  event_key: str
  identifiers: str = Field(description='JSON object text')
  insert_id: str
  metric_value: Metric
  hackle_properties: str = Field(description='JSON object text (platform properties)')
  user_properties: str = Field(description='JSON object text')
  event_properties: str = Field(description='JSON object text')


class ExportProfile(pydantic.BaseModel):
  """One user's latest profile as of the export date (CleverTap's "all user profiles")."""
  model_config = pydantic.ConfigDict(extra='forbid', title='eventferry export profile')

  as_of: datetime.date
  user_key: str = Field(description="identifiers.user_id, else identifiers.id")
  user_id: str = Field(description="'' for anonymous users")
  id: str
  last_seen: AwareDatetime = Field(description='ts of the event that carried these properties')
  user_properties: str = Field(description='JSON object text')


EXPORT_SCHEMA = arrow_schema(ExportEvent)
PROFILE_SCHEMA = arrow_schema(ExportProfile)
ID_PATTERN = r'[A-Za-z0-9][A-Za-z0-9_-]{0,63}'   # --request_id, --database_id: safe in file names


class ExportSpec(pydantic.BaseModel):
  """A recurring export configured once (`--spec exports/acme.yaml`); command-line flags override
  its fields. Field names are the export command's flag names."""
  model_config = pydantic.ConfigDict(extra='forbid', title='eventferry export spec')

  lake: str
  dest: str
  format: typing.Literal['parquet', 'jsonl', 'csv', 'avro', 'xml', 'iceberg'] = 'parquet'
  dest_catalog: str | None = None   # --format iceberg: the customer's catalog
  dest_table: str | None = None     # default: the export's (--dest_table)
  dest_catalog_endpoint: str | None = None
  compression: str | None = None
  layout: typing.Literal['hive', 'hourly', 'adobe', 'clevertap'] = 'hive'
  partition_template: str | None = None
  file_template: str | None = None
  dataset_id: str = 'events'
  request_id: str | None = Field(None, pattern=f'^{ID_PATTERN}$')
  database_id: str | None = Field(None, pattern=f'^{ID_PATTERN}$')
  max_file_bytes: int | None = Field(None, ge=1)
  max_rows_per_file: int | None = Field(None, ge=1)
  events: list[str] = []
  exclude_events: list[str] = []
  environment: str | None = None
  csv_delimiter: str = Field(',', min_length=1, max_length=1)
  csv_header: bool = True
  timezone: str = 'UTC'
