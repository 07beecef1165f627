"""A lake and a destination built by the real commands (import, export) on any store, for the
status, reconcile and report tests, and an oracle that reads them back with pyarrow and hashlib
only (through the store's bytes, never through the project's readers)."""
import dataclasses
import datetime
import hashlib
import io
import json
import shutil

import pyarrow.parquet as pq

from pipelines import samples
from tests.conftest import run_cli
from transforms.stores import fs

D1, D2, D3, D4 = (datetime.date(2023, 1, d) for d in (1, 2, 3, 4))
EVENTS = {D1: samples.events(D1, 2000, seed=21), D2: samples.events(D2, 3000, seed=22),
          D3: samples.events(D3, 1500, seed=23, invalid=0.2)}


@dataclasses.dataclass
class Site:
  """Where a test's lake lives: a root URL and how the commands reach it."""
  root: str
  flags: list[str] = dataclasses.field(default_factory=list)
  env: dict = dataclasses.field(default_factory=dict)

  def url(self, *parts: str) -> str:
    return '/'.join([self.root.rstrip('/'), *parts])

  def cli(self, module: str, *args: str, check: bool = True):
    return run_cli(f'pipelines.{module}', *args, *self.flags, check=check, env=self.env)


def copy_of(template: str, tmp_path) -> Site:
  """A fresh copy of a built local site, for a test to damage."""
  shutil.copytree(template, tmp_path / 'copy')
  return Site(str(tmp_path / 'copy'))


def build(site: Site) -> dict:
  """D1 and D2 imported in one run and exported (Parquet, hive); D3 imported but refused by the
  quality gate (a fifth of its rows are bad); D4 written without _SUCCESS, never imported."""
  src, lake, dest = site.url('src'), site.url('lake'), site.url('dest')
  for day, table in EVENTS.items():
    samples.write_day(src, day, table, files=2)
  samples.write_day(src, D4, samples.events(D4, 100, seed=24), files=1, success=False)
  site.cli('import_events', '--source', src, '--lake', lake, '--from_date', str(D1),
           '--to_date', str(D2), '--shards', '2')
  refused = site.cli('import_events', '--source', src, '--lake', lake, '--date', str(D3),
                     check=False)
  assert refused.returncode == 1, refused.stderr[-2000:]
  site.cli('export_events', '--lake', lake, '--dest', dest, '--from_date', str(D1),
           '--to_date', str(D2))
  return {'src': src, 'lake': lake, 'dest': dest}


def files(directory: str, ext: str = '.parquet') -> list[str]:
  return sorted(p for p in fs.list_files(directory) if p.endswith(ext))


def rows(directory: str) -> int:
  """Rows of the folder's Parquet files, from pyarrow's reading of their footers."""
  return sum(pq.read_metadata(io.BytesIO(fs.read_bytes(p))).num_rows for p in files(directory))


def insert_ids(directory: str) -> list[str]:
  return sorted(i for p in files(directory)
                for i in pq.read_table(io.BytesIO(fs.read_bytes(p)),
                                       columns=['insert_id'])['insert_id'].to_pylist())


def sha256(path: str) -> str:
  return hashlib.sha256(fs.read_bytes(path)).hexdigest()


def manifest(directory: str) -> dict:
  return json.loads(fs.read_bytes(fs.join(directory, '_manifest.json')))


def build_small(site: Site) -> dict:
  """D1 alone, imported (2 files) and exported: for the stores where each command costs more."""
  src, lake, dest = site.url('src'), site.url('lake'), site.url('dest')
  samples.write_day(src, D1, EVENTS[D1], files=2)
  site.cli('import_events', '--source', src, '--lake', lake, '--date', str(D1), '--shards', '2')
  site.cli('export_events', '--lake', lake, '--dest', dest, '--date', str(D1))
  return {'src': src, 'lake': lake, 'dest': dest}
