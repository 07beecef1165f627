"""The Iceberg lake behind a REST catalog: Iceberg's own RESTCatalogServer (iceberg-open-api
1.11.0 test fixtures, Java, started by tests/servers.py on a free port, a JDBC catalog on SQLite
behind it). Days written by pyarrow, pandas, Polars and DuckDB are imported through it; the table
holds exactly the Hive lake's rows, read by pyiceberg (through the REST catalog), Polars and
DuckDB's iceberg extension (by the metadata file the server wrote); an export from it writes
what the Hive lake's export writes; maintain compacts and expires through it.
"""
import os
import shutil

import pytest

from pipelines import export_events, options
from tests import servers
from tests.conftest import run_cli
from tests.icebergkit import (duckdb_rows, hive_import, hive_rows, iceberg_import, load,
                              polars_rows, pyiceberg_rows, table_flags, write_day)
from transforms.lake import iceberg

pytestmark = pytest.mark.engine

DAY1, DAY2 = '2023-03-01', '2023-03-02'


@pytest.fixture(scope='module')
def rest_catalog(servers_dir):
  """(catalog URL, warehouse): the server creates its tables under the warehouse, so the tests
  give the same folder as --lake."""
  if shutil.which('java') is None or shutil.which('mvn') is None:
    pytest.skip('the REST catalog server needs Java (17) and mvn on PATH')
  workdir = os.path.join(servers_dir, 'rest-catalog')
  warehouse = os.path.join(workdir, 'warehouse')
  os.makedirs(warehouse, exist_ok=True)
  server = servers.rest_catalog(workdir, 'file://' + warehouse)
  yield server.endpoint, warehouse
  server.stop()


def test_the_rest_catalog_lake_holds_the_hive_lake_rows(tmp_path, rest_catalog, duckdb_iceberg):
  url, warehouse = rest_catalog
  source, hive = str(tmp_path / 'bucket'), str(tmp_path / 'hive')
  flags = ['--catalog', url, *table_flags(tmp_path)]
  write_day(source, DAY1, 1, 40)
  write_day(source, DAY2, 100, 21)
  for day in (DAY1, DAY2):
    hive_import(source, day, hive)
    iceberg_import(source, day, warehouse, flags)
  iceberg_import(source, DAY1, warehouse, flags)   # a rerun replaces the day
  want = hive_rows(hive, [DAY1, DAY2])
  assert len(want) == 40 + 21
  tbl = load(warehouse, flags)
  assert type(tbl.catalog).__name__ == 'RestCatalog'
  assert tbl.location().startswith('file://' + warehouse)
  assert pyiceberg_rows(tbl) == want
  assert polars_rows(tbl) == want
  assert duckdb_rows(duckdb_iceberg, tbl) == want
  assert len([s for s in tbl.snapshots() if s.summary[iceberg.SNAPSHOT_DAY] == DAY1]) == 2

  # Export reads the day through the REST catalog: the Hive lake's export, byte for byte.
  for lake, dest, extra in ((hive, 'from-hive', []),
                            (warehouse, 'from-rest', ['--lake_format', 'iceberg', *flags])):
    assert options.main_guard(export_events.run, [
        '--lake', lake, '--date', DAY1, '--dest', str(tmp_path / dest), '--format', 'jsonl',
        *extra]) == 0
  def lines(dest):
    folder = tmp_path / dest / f'dt={DAY1}'
    return sorted(line for n in os.listdir(folder) if not n.startswith('_')
                  for line in open(folder / n).read().splitlines())
  assert lines('from-rest') == lines('from-hive') and len(lines('from-hive')) == 40

  # maintain commits through the REST catalog too.
  pane_tbl = load(warehouse, flags)
  for _ in range(5):
    pane_tbl.append(pane_tbl.scan(row_filter=f"dt = '{DAY2}'", limit=3).to_arrow())
  before = load(warehouse, flags).scan().to_arrow().num_rows
  proc = run_cli('pipelines.maintain', '--lake', warehouse, *flags, '--compact',
                 '--target_file_mb', '1', '--expire_older_than', '0s', '--retain_last', '1')
  assert f'dt={DAY2}: rewrite 6 small files' in proc.stdout
  tbl = load(warehouse, flags)
  assert len(tbl.snapshots()) == 1 and len(iceberg.day_files(tbl, DAY2)) == 1
  assert tbl.scan().to_arrow().num_rows == before == 61 + 15
  assert duckdb_rows(duckdb_iceberg, tbl) == want
