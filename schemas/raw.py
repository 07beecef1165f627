"""The raw-event contract: one JSON object per Pub/Sub message or JSON line, as an SDK or a
collector sends it. Streaming ingest reads it into the import contract (schemas/events.py), whose
checks then apply unchanged.

Numbers in JSON are IEEE doubles to most parsers: send `metric_value` as a string ("12.345678") to
keep more than 15 significant digits exact.
"""
import typing

import pydantic
from pydantic import Field

__all__ = ['Millis', 'Instant', 'PropertyValue', 'Properties', 'RawEvent', 'COLUMN_OF']

Millis = typing.Annotated[int, Field(description='epoch milliseconds, UTC (a number sized as '
                                   'seconds, below 10^11, or as micros, 10^14 and up, is refused)')]
Instant = typing.Union[Millis, str]
PropertyValue = typing.Union[str, int, float, bool, None, dict, list]
Properties = dict[str, PropertyValue]


class RawEvent(pydantic.BaseModel):
  """What a client or collector sends. Unknown fields are ignored. Property values that are not
  strings are stored as their JSON text exactly as sent (12.5 -> "12.5", 1e3 -> "1e3",
  0.000001 -> "0.000001", true -> "true", [1] -> "[1]")."""
  model_config = pydantic.ConfigDict(extra='ignore', title='eventferry raw event')

  insert_id: str = Field(description='UUID; the same insert_id twice is one event')
  event_key: str = Field(description='event name, e.g. purchase')
  ts: Instant = Field(description='client time: epoch millis or ISO 8601 (no zone means UTC)')
  server_ts: typing.Optional[Instant] = Field(
      None, description='server receive time; absent: the Pub/Sub publish time (or the '
      '--server_time_attribute attribute), and for files the client time ts')
  environment: typing.Optional[str] = Field(None, description='default: --environment')
  identifiers: Properties = Field(description="'id' and 'device_id' required")
  metric_value: typing.Union[str, int, float, None] = Field(None, description='decimal(24,6)')
  user_properties: Properties = {}
  event_properties: Properties = {}
  hackle_properties: Properties = Field(
      {}, description="platform properties; 'osname' and 'appversion' required")


# raw field -> import-contract column it fills
COLUMN_OF = {'insert_id': 'insert_id', 'event_key': 'event_key', 'ts': 'ts',
             'identifiers': 'identifiers', 'metric_value': 'metric_value',
             'user_properties': 'user_properties', 'event_properties': 'event_properties',
             'hackle_properties': 'platform_properties'}
