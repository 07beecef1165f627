"""The export contract: seed 000 (Hackle Data Export) schema, and the export run settings."""
import datetime

import pydantic
from pydantic import AwareDatetime, Field

from schemas.events import Metric, arrow_schema


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


EXPORT_SCHEMA = arrow_schema(ExportEvent)
