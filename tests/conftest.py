"""Shared builders: small customer files with exactly known rows."""
import datetime
import decimal
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms import storage
from transforms.read import with_lineage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAP = pa.map_(pa.string(), pa.string())
DAY = datetime.date(2023, 1, 1)


def uuid(n: int) -> str:
  return f'00000000-0000-4000-8000-{n:012x}'


def event(n: int, **over) -> dict:
  """A valid import row; `over` replaces fields."""
  row = {
      'ts': datetime.datetime(2023, 1, 1, 0, 1, 2, 333000, tzinfo=datetime.timezone.utc)
            + datetime.timedelta(seconds=n),
      'event_key': 'purchase',
      'identifiers': [('id', f'user-{n}'), ('device_id', f'DEV-{n}')],
      'insert_id': uuid(n),
      'metric_value': decimal.Decimal('1.500000'),
      'user_properties': [('grade', 'GOLD')],
      'event_properties': [('product_category', '레저')],
      'platform_properties': [('osname', 'Android'), ('appversion', '6.9.0')],
  }
  row.update(over)
  return row


SCHEMA = pa.schema([('ts', pa.timestamp('ms', tz='UTC')), ('event_key', pa.string()),
                    ('identifiers', MAP), ('insert_id', pa.string()),
                    ('metric_value', pa.decimal128(24, 6)), ('user_properties', MAP),
                    ('event_properties', MAP), ('platform_properties', MAP)])


def table(rows: list[dict], schema: pa.Schema = SCHEMA) -> pa.Table:
  return pa.Table.from_pylist(rows, schema=schema)


def raw_batch(rows: list[dict], schema: pa.Schema = SCHEMA, source: str = 'f.parquet'):
  return with_lineage(table(rows, schema).combine_chunks().to_batches()[0], source, 0)


def write_file(path: str, t: pa.Table, **kwargs) -> None:
  sink = pa.BufferOutputStream()
  pq.write_table(t, sink, **kwargs)
  storage.write_bytes(path, sink.getvalue().to_pybytes())


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
  """Runs a pipeline module as a user does (python -m ...), from the repository root."""
  proc = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f'exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}')
  return proc


@pytest.fixture
def day() -> datetime.date:
  return DAY
