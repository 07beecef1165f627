"""Why a row was rejected or flagged. The codes appear verbatim in the dead-letter output."""
import enum

__all__ = ['Reason', 'Flag']


class _Explained(str, enum.Enum):
  """A code with a one-line explanation: Member = ('code', 'explanation')."""
  explanation: str   # set per member by __new__; annotated only, so not a member itself

  def __new__(cls, code: str, explanation: str):
    member = str.__new__(cls, code)
    member._value_ = code
    member.explanation = explanation
    return member


class Reason(_Explained):
  """Rejection reasons, in the order they are checked: a row carries the first that applies."""
  INVALID_TEXT = ('invalid_text', 'a text value (or map key/value) is not valid UTF-8')
  INVALID_MAP = ('invalid_map', 'a map column held a value that is not a JSON object of strings')
  MISSING_INSERT_ID = ('missing_insert_id', 'insert_id is null or empty')
  INVALID_INSERT_ID = ('invalid_insert_id', 'insert_id is not a UUID (8-4-4-4-12 hex digits)')
  MISSING_EVENT_KEY = ('missing_event_key', 'event_key is null, empty or only whitespace')
  MISSING_TS = ('missing_ts', 'ts is null')
  INVALID_TS = ('invalid_ts', 'ts could not be read as a timestamp')
  MISSING_ID = ('missing_identifier_id', "identifiers has no non-empty 'id'")
  MISSING_DEVICE_ID = ('missing_identifier_device_id', "identifiers has no non-empty 'device_id'")
  MISSING_OSNAME = ('missing_platform_osname', "platform_properties has no non-empty 'osname'")
  MISSING_APPVERSION = ('missing_platform_appversion',
                        "platform_properties has no non-empty 'appversion'")
  INVALID_METRIC_VALUE = ('invalid_metric_value',
                          'metric_value is NaN, infinite or not a number')
  METRIC_VALUE_OUT_OF_RANGE = ('metric_value_out_of_range',
                               'metric_value does not fit decimal(24,6) (|v| >= 10^18)')
  # Streaming ingest only (raw JSON events); checked before the contract checks above.
  INVALID_JSON = ('invalid_json', 'the payload is not a JSON object (malformed JSON or not an object)')
  INVALID_FIELD = ('invalid_field_type',
                   'a field of the raw event has the wrong JSON type (see schemas/raw.py)')
  UNREADABLE_FILE = ('unreadable_file', 'the rest of a compressed file is corrupt or missing '
                     '(truncated); the lines before it were read')
  TOO_LATE = ('too_late', 'arrived more than --allowed_lateness after the end of its server day')


class Flag(_Explained):
  """Conditions that are counted and reported but do not reject the row."""
  TS_OUTSIDE_DAY = ('ts_outside_day',
                    'ts lies more than a day before or after the partition day (kept)')
  METRIC_VALUE_DEFAULTED = ('metric_value_defaulted',
                            'metric_value was null and was stored as 0.000000 (kept)')
  METRIC_VALUE_ROUNDED = ('metric_value_rounded',
                          'metric_value had more than 6 decimals and was rounded (kept)')
  KEY_COLLISION = ('map_key_collision',
                   'map keys collided after lower-casing; one entry kept per key (see README)')
