"""Prints a contract for customers preparing files: `./run.sh schema import` (or `lake`, or
`raw`: the JSON events streaming ingest reads).

Shows the JSON Schema of the pydantic model, the Arrow/Parquet schema derived from it, and the
rejection reason codes with their meaning.
"""
import json
import sys

import pyarrow as pa
from pydantic import BaseModel

from schemas.events import IMPORT_SCHEMA, LAKE_SCHEMA, ImportEvent, LakeEvent
from schemas.raw import RawEvent
from schemas.reasons import Flag, Reason

__all__ = ['CONTRACTS', 'render', 'main']

CONTRACTS: dict[str, tuple[type[BaseModel], pa.Schema | None]] = {
    'import': (ImportEvent, IMPORT_SCHEMA), 'lake': (LakeEvent, LAKE_SCHEMA),
    'raw': (RawEvent, None)}   # raw events are JSON: read into the import contract


def render(name: str) -> str:
  model, schema = CONTRACTS[name]
  parts = [f'# {name} contract: JSON Schema', json.dumps(model.model_json_schema(), indent=2,
                                                         ensure_ascii=False),
           ]
  if schema is not None:
    parts += [f'\n# {name} contract: Arrow / Parquet schema',
              schema.to_string(show_schema_metadata=False)]
  if name in ('import', 'raw'):
    parts.append('\n# reason codes of rejected rows (LAKE/_rejected/dt=.../, column "reason")')
    parts.extend(f'{r.value:<30} {r.explanation}' for r in Reason)
    parts.append('\n# flags (counted in the run report, rows kept)')
    parts.extend(f'{f.value:<30} {f.explanation}' for f in Flag)
  return '\n'.join(parts)


def main(argv: list[str]) -> int:
  if len(argv) != 1 or argv[0] not in CONTRACTS:
    print(f'usage: ./run.sh schema {{{"|".join(CONTRACTS)}}}', file=sys.stderr)
    return 2
  print(render(argv[0]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
