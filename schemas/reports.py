"""Contracts of what a run leaves behind: partition manifests and run reports."""
import datetime
import typing

import pydantic

__all__ = ['Status', 'ManifestFile', 'Manifest', 'DayReport', 'RunReport', 'ExportDay',
           'ExportReport']

# open: streaming, not yet on time; rejected_only: ingest, the day got dead letters only, so it
# has no lake day (the one it had, if any, is as it was)
Status = typing.Literal['published', 'refused', 'failed', 'open', 'rejected_only']


class ManifestFile(pydantic.BaseModel):
  name: str
  rows: int
  bytes: int
  sha256: str


class Manifest(pydantic.BaseModel):
  """`_manifest.json` of a committed partition; written just before `_SUCCESS`."""
  version: int = 1
  run_id: str
  pipeline: str
  source: str
  partition: str
  committed_at: datetime.datetime
  schema_fingerprint: str
  rows: int
  bytes: int
  files: list[ManifestFile]
  source_files: dict[str, int] = {}   # import: the source day's data files (name -> bytes)
  source_fingerprint: str = ''        # import: DayInventory.fingerprint of what was read
  rows_forgotten: int = 0             # rows removed by forget requests since the day's import
  lake_snapshot_id: int | None = None   # export from an Iceberg lake: the snapshot read
  snapshot_id: int | None = None   # export --format iceberg: the customer table's snapshot
  # export: rows this commit added to the day's earlier export (None: it replaced the day)
  rows_added: int | None = None


class DayReport(pydantic.BaseModel):
  dt: str
  status: Status
  message: str = ''
  rows_in: int
  rows_written: int
  rows_rejected: int
  rows_duplicate: int
  rows_replaced: int = 0   # ingest --replace_days: rows of earlier runs the day's commit removed
  rows_forgotten: int = 0  # ingest: rows of users forgotten (pipelines/forget.py), dropped
  rejected_by_reason: dict[str, int]
  flags: dict[str, int]
  files: int
  bytes: int
  partition: str
  rejected_partition: str
  snapshot_id: int | None = None   # an Iceberg lake: the snapshot that committed the day


class RunReport(pydantic.BaseModel):
  run_id: str
  pipeline: str
  source: str
  lake: str
  started_at: datetime.datetime
  finished_at: datetime.datetime | None = None
  seconds: float | None = None
  ignored_files: list[str] = []
  metrics: dict[str, int] = {}
  days: list[DayReport]

  @property
  def ok(self) -> bool:
    return all(d.status == 'published' for d in self.days)


class ExportDay(pydantic.BaseModel):
  dt: str
  rows: int
  files: int
  bytes: int
  partition: str
  snapshot_id: int | None = None   # --format iceberg: the customer table's snapshot of the day
  appended: bool = False   # only the rows the lake day gained since its last export


class ExportReport(pydantic.BaseModel):
  """An export run: STATE/_eventferry/runs/RUN_ID.json (STATE is --state, else DEST)."""
  run_id: str
  pipeline: str = 'export'
  lake: str
  dest: str
  format: str
  started_at: datetime.datetime
  seconds: float
  metrics: dict[str, int] = {}
  days: list[ExportDay]
  warnings: list[str] = []   # e.g. --events names that matched no event of a day
