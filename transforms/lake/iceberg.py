"""The lake as an Apache Iceberg table (`--lake_format iceberg`; docs/iceberg.md).

Hive-style Parquet stays the default lake. With Iceberg, `--lake` is the warehouse, `--catalog`
the catalog that names the tables (`--table`, default eventferry.events; rejected rows in
NAMESPACE.NAME_rejected), and each server day is the identity partition `dt` of the table.
Workers write each day's Parquet files straight into the table's data folder, under a folder of
their run (unique names: a rerun never overwrites a file a snapshot still lists); ONE step per day
then commits them as ONE overwrite snapshot that removes what the day held and adds the new files
(commit_day). Until that snapshot is committed, no reader sees any of them: a run killed before
it leaves the table at its previous snapshot, its files unreferenced (orphans).

pyiceberg is imported only here and only when a function needs it, so a Hive run never loads it.
"""
import contextlib
import dataclasses
import datetime
import json
import logging
import time
import typing
import urllib.parse

import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from schemas.events import LAKE_SCHEMA, REJECTED_SCHEMA
from transforms.stores import clients

if typing.TYPE_CHECKING:
  from pyiceberg.catalog import Catalog
  from pyiceberg.table import Table

__all__ = ['FORMATS', 'DEFAULT_TABLE', 'DAY', 'IcebergOptions', 'IcebergLake', 'check',
           'catalog_problem', 'table_problem', 'from_options', 'at', 'redacted', 'catalog',
           'table', 'file_schema', 'with_day', 'data_root', 'store_path', 'file_uri',
           'commit_day', 'day_files', 'day_snapshot', 'snapshot_day', 'day_manifest', 'committed_days', 'as_lake',
           'record_day', 'day_record', 'COMMIT_ATTEMPTS', 'SNAPSHOT_DAY', 'SNAPSHOT_RUN', 'SNAPSHOT_COMPLETE']

FORMATS = ('hive', 'iceberg')
DEFAULT_TABLE = 'eventferry.events'
DAY = 'dt'   # the partition column: the server day, as the Hive lake's dt=D folders
COMMIT_ATTEMPTS = 20   # optimistic commits retried when another run committed meanwhile
CREATE_ATTEMPTS = 5   # a new SQL catalog's tables created by runs starting together
SNAPSHOT_DAY = 'eventferry.dt'   # snapshot summary: the day and run a commit replaced
SNAPSHOT_RUN = 'eventferry.run_id'
SNAPSHOT_INPUTS = ('pipeline', 'source', 'source_files', 'source_fingerprint', 'schema_fingerprint')
# A table property per day (eventferry.day.D = JSON: run_id, committed_at, SNAPSHOT_INPUTS), set in
# the transaction that commits the day: expiring old snapshots must not forget who committed a day.
DAY_RECORD = 'eventferry.day.'
SNAPSHOT_COMPLETE = 'eventferry.complete'   # 'false': an ingest pane of a day still open


class IcebergOptions(PipelineOptions):
  """The lake's format and, for Iceberg, its catalog and table."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--lake_format', default='hive', choices=FORMATS,
                        help='hive: dt=D/ folders with _manifest.json and _SUCCESS (default); '
                        'iceberg: an Iceberg table in --catalog, --lake its warehouse')
    parser.add_argument('--catalog', default=None,
                        help='Iceberg catalog: sqlite:///PATH, postgresql://USER@HOST/DB, glue, '
                        'or the http(s):// URL of a REST catalog')
    parser.add_argument('--catalog_endpoint', default=None,
                        help='endpoint of the glue catalog (default: AWS; tests: the emulator)')
    parser.add_argument('--table', default=DEFAULT_TABLE,
                        help='Iceberg table NAMESPACE.NAME; rejected rows go to NAME_rejected')


@dataclasses.dataclass(frozen=True)
class IcebergLake:
  """Where the tables are: plain values, so DoFns can carry it. Secrets stay out of repr."""
  catalog: str
  warehouse: str
  table: str = DEFAULT_TABLE
  endpoint: str | None = None
  s3: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

  @property
  def rejected_table(self) -> str:
    return f'{self.table}_rejected'


def check(o: IcebergOptions) -> str | None:
  """The problem with the Iceberg flags, or None (the caller raises its UsageError)."""
  if o.lake_format != 'iceberg':
    return None
  if not o.catalog:
    return ('--catalog is required with --lake_format iceberg: e.g. --catalog '
            'sqlite:///lake/catalog.db (or postgresql://..., glue, https://rest-catalog)')
  return catalog_problem('--catalog', o.catalog) or table_problem('--table', o.table)


def catalog_problem(flag: str, uri: str) -> str | None:
  """What is wrong with catalog `uri` given as `flag`, or None."""
  if not _catalog_kind(uri):
    return (f'{flag} {redacted(uri)} is not a catalog: use sqlite:///PATH, '
            'postgresql://USER@HOST/DB, glue or an http(s):// REST catalog URL')
  return None


def table_problem(flag: str, name: str) -> str | None:
  """What is wrong with table name `name` given as `flag`, or None."""
  parts = name.split('.')
  if len(parts) != 2 or not all(p.strip() for p in parts):
    return f'{flag} {name!r} must be NAMESPACE.NAME, e.g. {flag} {DEFAULT_TABLE}'
  return None


def _catalog_kind(uri: str) -> str | None:
  scheme = uri.split(':', 1)[0].split('+', 1)[0].lower()
  if uri == 'glue':
    return 'glue'
  if scheme in ('sqlite', 'postgresql'):
    return 'sql'
  if scheme in ('http', 'https'):
    return 'rest'
  return None


def redacted(uri: str) -> str:
  """The URI without its password, for messages and logs."""
  parts = urllib.parse.urlsplit(uri)
  if parts.password is None:
    return uri
  netloc = f'{parts.username}:***@{parts.hostname}' + (f':{parts.port}' if parts.port else '')
  return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def from_options(options: PipelineOptions, lake: str) -> IcebergLake:
  """The Iceberg lake of these options, with the S3 settings Beam's --s3_* flags carry."""
  o = options.view_as(IcebergOptions)
  return at(options, lake, o.catalog, o.table, o.catalog_endpoint)


def at(options: PipelineOptions, warehouse: str, catalog_uri: str, name: str,
       endpoint: str | None) -> IcebergLake:
  """The Iceberg tables of catalog `catalog_uri` in `warehouse` (the lake's, or a customer's),
  with the S3 settings Beam's --s3_* flags carry."""
  s = options.view_as(S3Options)
  props = {'s3.endpoint': s.s3_endpoint_url, 's3.access-key-id': s.s3_access_key_id,
           's3.secret-access-key': s.s3_secret_access_key, 's3.session-token': s.s3_session_token,
           's3.region': s.s3_region_name}
  return IcebergLake(catalog_uri, _warehouse(warehouse), name, endpoint,
                     {k: v for k, v in props.items() if v})


def _warehouse(lake: str) -> str:
  """An absolute URI: the table's metadata names its files by it, for every reader."""
  if '://' in lake:
    return lake.rstrip('/')
  import os
  return 'file://' + os.path.abspath(os.path.expanduser(lake))


@contextlib.contextmanager
def reaching(lake: IcebergLake) -> typing.Iterator[None]:
  """Whatever a catalog's client raises (a refused connection, a wrong password, a missing
  database, an HTTP error) told as one StoreError (exit code 5) naming the catalog without its
  secrets; pyiceberg's answers about tables and namespaces pass through."""
  from pyiceberg import exceptions
  try:
    yield
  except (exceptions.NoSuchTableError, exceptions.NoSuchNamespaceError,
          exceptions.TableAlreadyExistsError, exceptions.NamespaceAlreadyExistsError,
          exceptions.CommitFailedException, exceptions.ValidationException):
    raise
  except Exception as e:  # noqa: BLE001 - every client's own kinds, told in one line
    reason = clients.redact(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
    password = urllib.parse.urlsplit(lake.catalog).password
    if password:
      reason = reason.replace(password, '***')
    raise clients.StoreError(f'--catalog {redacted(lake.catalog)} could not be read: {reason}; check the '
                     'URL and that the catalog runs') from None


def catalog(lake: IcebergLake) -> 'Catalog':
  with reaching(lake):
    return _catalog(lake)


def _catalog(lake: IcebergLake) -> 'Catalog':
  kind = _catalog_kind(lake.catalog)
  props = dict(lake.s3, warehouse=lake.warehouse)
  if lake.warehouse.startswith('gs://'):
    props.update(_gcs_emulator())
  if kind == 'sql':
    return _sql_catalog(lake.catalog, props)
  if kind == 'glue':
    from pyiceberg.catalog.glue import GlueCatalog
    glue = {'glue.region': lake.s3.get('s3.region'), 'glue.endpoint': lake.endpoint,
            'glue.access-key-id': lake.s3.get('s3.access-key-id'),
            'glue.secret-access-key': lake.s3.get('s3.secret-access-key')}
    return GlueCatalog('eventferry', **props, **{k: v for k, v in glue.items() if v})
  from pyiceberg.catalog.rest import RestCatalog
  return RestCatalog('eventferry', uri=lake.catalog, **props)


def _gcs_emulator() -> dict[str, str]:
  """pyarrow's GCS file system pointed at the emulator STORAGE_EMULATOR_HOST names (as Beam's
  GCS reads it), with a placeholder token: without one pyarrow looks for Google credentials and
  waits for minutes. No emulator: nothing (pyarrow finds the default credentials itself)."""
  import os
  host = os.environ.get('STORAGE_EMULATOR_HOST')
  if not host:
    return {}
  return {'gcs.service.host': host, 'gcs.oauth2.token': 'emulator',
          'gcs.oauth2.token-expires-at': str(int((time.time() + 86400) * 1000))}


def _sql_catalog(uri: str, props: dict) -> 'Catalog':
  """A SQL catalog. Runs starting together on a new catalog race to create its tables: pyiceberg
  checks, then creates, so all but one fail ("table ... already exists"); the next attempt finds
  them."""
  from pyiceberg.catalog.sql import SqlCatalog
  from sqlalchemy.exc import DBAPIError
  for attempt in range(CREATE_ATTEMPTS - 1):
    try:
      return SqlCatalog('eventferry', uri=_sqlalchemy_uri(uri), **props)
    except DBAPIError:
      time.sleep(0.05 * (attempt + 1))
  return SqlCatalog('eventferry', uri=_sqlalchemy_uri(uri), **props)


def _sqlalchemy_uri(uri: str) -> str:
  """postgresql:// is psycopg2's driver in SQLAlchemy. SQLite waits up to 30 s for a lock another
  run holds (its default, 5 s, is less than a busy machine's commit takes), unless the URI says."""
  if uri.startswith('postgresql://'):
    return 'postgresql+psycopg2://' + uri[len('postgresql://'):]
  if uri.startswith('sqlite:') and 'timeout=' not in uri:
    return uri + ('&' if '?' in uri else '?') + 'timeout=30'
  return uri


def _schema(columns: pa.Schema, no_stats: typing.Sequence[str] = ()):
  """The table's Iceberg schema: the columns plus `dt`, with ids, partitioned by `dt`; `no_stats`:
  columns whose files carry no min/max (so none are expected)."""
  from pyiceberg.catalog import Catalog
  from pyiceberg.partitioning import PartitionField, PartitionSpec
  from pyiceberg.schema import assign_fresh_schema_ids
  from pyiceberg.transforms import IdentityTransform
  from pyiceberg.types import MapType
  arrow = columns.append(pa.field(DAY, pa.date32(), nullable=False))
  schema = assign_fresh_schema_ids(Catalog._convert_schema_if_needed(arrow))
  spec = PartitionSpec(PartitionField(source_id=schema.find_field(DAY).field_id, field_id=1000,
                                      transform=IdentityTransform(), name=DAY))
  # The lake writes no min/max for map columns (commit.write_parquet): none are expected.
  nested = [schema.find_column_name(i) for f in schema.fields if isinstance(f.field_type, MapType)
            for i in (f.field_type.key_id, f.field_type.value_id)]
  properties = {'format-version': '2'} | {f'write.metadata.metrics.column.{c}': 'none'
                                          for c in [*nested, *no_stats]}
  return schema, spec, properties


def table(lake: IcebergLake, name: str | None = None, columns: pa.Schema | None = None,
          no_stats: typing.Sequence[str] = ()) -> 'Table':
  """The table `name` (default: the lake's), created on first use with `columns` (default: the
  lake's schema, or the rejected rows' schema for the rejected table) plus the day column,
  partitioned by the server day (`no_stats`: as _schema)."""
  from pyiceberg.exceptions import NoSuchTableError
  name = name or lake.table
  cat = catalog(lake)
  with reaching(lake):
    try:
      return cat.load_table(name)
    except NoSuchTableError:
      pass
  if columns is None:
    columns = REJECTED_SCHEMA if name == lake.rejected_table else LAKE_SCHEMA
  schema, spec, properties = _schema(columns, no_stats)
  with reaching(lake):
    return _create(cat, name, schema, spec, properties)


def _create(cat: 'Catalog', name: str, schema, spec, properties) -> 'Table':
  """The table, created with its namespace (or as another run created them meanwhile)."""
  from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
  try:
    cat.create_namespace(name.split('.')[0])
  except NamespaceAlreadyExistsError:
    pass
  except Exception as e:   # the SQL catalog's IntegrityError when another run created it meanwhile
    if not cat.namespace_exists(name.split('.')[0]):
      raise e
  try:
    return cat.create_table(name, schema, partition_spec=spec, properties=properties)
  except TableAlreadyExistsError:   # another run created it meanwhile
    return cat.load_table(name)


def file_schema(tbl: 'Table') -> pa.Schema:
  """The Arrow schema of the table's data files, with their Iceberg field ids (so every reader
  maps columns by id, as Iceberg files do). Text stays Arrow's `string`, as the lake's rows hold
  it, where pyiceberg says `large_string`: Parquet stores both alike, and the cast would copy
  every string of a file (a 10M-event import peaked 200 MB higher)."""
  schema = tbl.schema().as_arrow()
  return pa.schema([f.with_type(_small(f.type)) for f in schema], metadata=schema.metadata)


def _small(t: pa.DataType) -> pa.DataType:
  if pa.types.is_large_string(t):
    return pa.string()
  if pa.types.is_map(t):
    return pa.map_(t.key_field.with_type(_small(t.key_type)), t.item_field.with_type(_small(t.item_type)))
  return t


def with_day(rows: pa.Table, dt: str, schema: pa.Schema) -> pa.Table:
  """`rows` (lake or rejected columns) with the day column, cast to the file schema (timestamps
  to Iceberg's microseconds: the values are unchanged)."""
  day = pa.repeat(pa.scalar(datetime.date.fromisoformat(dt), pa.date32()), rows.num_rows)
  rows = rows.append_column(DAY, day)
  return pa.table([_cast(rows[f.name], f.type) for f in schema], schema=schema)


def _cast(column: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
  """pyarrow 25.0.1 aborts the process (ValidateChildData: "Map array keys array should have no
  nulls") casting a map column that a filter gave validity bitmaps to large_string keys, as
  ingest's seen-id filter does: maps are rebuilt from their cast keys and items instead."""
  if not pa.types.is_map(to):
    return column.cast(to)
  return pa.chunked_array([pa.MapArray.from_arrays(
      c.offsets, c.keys.cast(to.key_type), c.items.cast(to.item_type), type=to,
      mask=c.is_null() if c.null_count else None) for c in column.chunks], to)


def data_root(tbl: 'Table', run_id: str) -> str:
  """Where a run's workers write the table's files (a store path, for transforms.stores.fs):
  DATA/RUN_ID/dt=D/part-....parquet."""
  return store_path(f'{tbl.location().rstrip("/")}/data/{run_id}')


def store_path(uri: str) -> str:
  """A file:// URI of the table's metadata as the project's stores spell a local path."""
  return uri[len('file://'):] if uri.startswith('file://') else uri


def file_uri(path: str) -> str:
  """A store path as the table's metadata names it (local paths as file:// URIs)."""
  return path if '://' in path else _warehouse(path)


def day_files(tbl: 'Table', dt: str, snapshot_id: int | None = None) -> list:
  """The DataFiles the table's current snapshot (or snapshot `snapshot_id`) lists for day `dt`."""
  if tbl.current_snapshot() is None:
    return []
  day = datetime.date.fromisoformat(dt)   # a date, never text from elsewhere, in the filter
  return [task.file for task in tbl.scan(row_filter=f"{DAY} = '{day}'",
                                         snapshot_id=snapshot_id).plan_files()]


def commit_day(lake: IcebergLake, name: str, dt: str, paths: list[str], run_id: str,
               before_commit: typing.Callable[[], None] = lambda: None,
               inputs: dict[str, str | int | None] | None = None, append: bool = False) -> int | None:
  """Replaces day `dt` of table `name` by the files `paths` in one overwrite snapshot; other days
  keep their files. When another run committed meanwhile (another day: this day is locked), the
  commit is redone on the new snapshot; pyiceberg's own retry re-applies the overwrite to the
  newer table and refuses it (ValidationException), so it is redone here, from the day's files
  as the new snapshot lists them. A retried step whose files are already the day's commits
  nothing again. `paths` are store paths or URIs. `before_commit` runs before each attempt (the
  lock's fence). With `append` the day keeps its files and gains `paths`. `inputs` go into the
  day's record (DAY_RECORD), SNAPSHOT_INPUTS (what the day was made from) also into the
  snapshot's summary, so a rerun of the same input can tell the day is complete (day_manifest);
  forget adds rows_forgotten. -> the snapshot id (None: the table has none, and the day had and
  has no rows)."""
  from pyiceberg.exceptions import CommitFailedException, ValidationException
  from pyiceberg.io.pyarrow import parquet_file_to_data_file
  tbl = table(lake, name)
  paths = sorted(file_uri(p) for p in paths)
  new = [parquet_file_to_data_file(tbl.io, tbl.metadata, p) for p in paths]
  for attempt in range(COMMIT_ATTEMPTS):
    old = day_files(tbl, dt)
    snapshot = tbl.current_snapshot()
    held = {f.file_path for f in old}
    if held == set(paths) or (append and held >= set(paths)):   # committed already (a retry)
      return snapshot.snapshot_id if snapshot else None
    if append:   # an append snapshot: the day's files stay
      old = []
    before_commit()
    try:
      with tbl.transaction() as tx:
        made_of = {k: v for k, v in (inputs or {}).items() if v is not None}
        record_day(tx, dt, run_id, made_of)
        summary = {SNAPSHOT_DAY: dt, SNAPSHOT_RUN: run_id} | {
            f'eventferry.{k}': str(v) for k, v in made_of.items() if k in SNAPSHOT_INPUTS}
        update = tx.update_snapshot(snapshot_properties=summary)
        with update.fast_append() if append else update.overwrite() as change:
          for f in old:
            change.delete_data_file(f)
          for f in new:
            change.append_data_file(f)
      current = tbl.current_snapshot()
      assert current is not None
      return current.snapshot_id
    except (CommitFailedException, ValidationException) as e:   # another day meanwhile
      logging.getLogger('eventferry').info('dt=%s: %s; committing again (%d)', dt, e, attempt + 1)
      time.sleep(0.05 * (attempt + 1))
      tbl = table(lake, name)
  raise RuntimeError(f'dt={dt}: {COMMIT_ATTEMPTS} commits to {name} met a newer snapshot each '
                     'time; rerun the day')


def record_day(tx, dt: str, run_id: str, fields: dict) -> None:
  """Sets day `dt`'s record (DAY_RECORD) in the transaction `tx` that commits the day: the run,
  the time, and `fields` (what the day was made from; `complete`: False for an open ingest day)."""
  now = datetime.datetime.now(datetime.timezone.utc).isoformat()
  tx.set_properties({DAY_RECORD + dt: json.dumps(
      {**{k: v for k, v in fields.items() if v is not None}, 'run_id': run_id, 'committed_at': now},
      sort_keys=True)})


def day_snapshot(tbl: 'Table', dt: str):
  """The latest snapshot that committed day `dt` (its summary names the day), or None."""
  snapshot = tbl.current_snapshot()
  while snapshot is not None and _summary(snapshot, SNAPSHOT_DAY) != dt:
    parent = snapshot.parent_snapshot_id
    snapshot = tbl.snapshot_by_id(parent) if parent is not None else None
  return snapshot


def day_manifest(lake: IcebergLake, dt: str, name: str | None = None, tbl: 'Table | None' = None
                 ) -> dict | None:
  """What the export and the operators' commands need of a committed day of table `name` (default
  the lake's), as a Hive day's manifest gives it: its files (store paths), rows, bytes, the run and
  time of the commit and what it was made from (SNAPSHOT_INPUTS, None where not recorded), plus
  the id of the snapshot read (snapshot_id), and `entries`: (path, rows, bytes) per file. `tbl`:
  the table, loaded already. None when no commit of the day is recorded. A day that streaming
  ingest has committed panes of but is not complete yet (complete false: the Hive lake's day
  without _SUCCESS) is not committed: SourceError (exit 3)."""
  tbl = tbl or table(lake, name)
  current = tbl.current_snapshot()
  record = day_record(tbl, dt) if current is not None else None
  if current is None or record is None:
    return None
  if record.get('complete') is False:
    from transforms.read import SourceError
    raise SourceError(f'{name or lake.table} day {dt} is still open: ingest run '
                      f'{record.get("run_id")} has committed panes of it, and it is '
                      'complete once the stream\'s watermark passes the end of the day (its '
                      'on-time commit); export it then')
  files = day_files(tbl, dt)
  return {'files': sorted(store_path(f.file_path) for f in files),
          'rows': sum(f.record_count for f in files), 'bytes': sum(f.file_size_in_bytes for f in files),
          'run_id': record.get('run_id'), 'committed_at': record.get('committed_at'),
          'snapshot_id': current.snapshot_id, **{k: record.get(k) for k in SNAPSHOT_INPUTS},
          'rows_forgotten': record.get('rows_forgotten', 0), 'record': record,
          'entries': sorted((store_path(f.file_path), f.record_count, f.file_size_in_bytes) for f in files)}


def day_record(tbl: 'Table', dt: str) -> dict | None:
  """The day's record (DAY_RECORD), or for a day committed before records were kept, what the
  snapshot that committed it says (while it is not expired); None: no commit of the day."""
  if DAY_RECORD + dt in tbl.properties:
    return json.loads(tbl.properties[DAY_RECORD + dt])
  commit = day_snapshot(tbl, dt)
  if commit is None:
    return None
  at = datetime.datetime.fromtimestamp(commit.timestamp_ms / 1000, datetime.timezone.utc)
  return {'run_id': _summary(commit, SNAPSHOT_RUN), 'committed_at': at.isoformat(),
          'complete': _summary(commit, SNAPSHOT_COMPLETE) != 'false',
          **{k: _summary(commit, f'eventferry.{k}') for k in SNAPSHOT_INPUTS}}


def committed_days(lake: IcebergLake, name: str | None = None, tbl: 'Table | None' = None) -> list[str]:
  """The days of table `name` (default the lake's) whose commit is recorded, sorted."""
  tbl = tbl or table(lake, name)
  recorded = {k[len(DAY_RECORD):] for k in tbl.properties if k.startswith(DAY_RECORD)}
  summarised = {_summary(x, SNAPSHOT_DAY) for x in tbl.metadata.snapshots}
  return sorted(recorded | {dt for dt in summarised if dt})


def snapshot_day(snapshot) -> str | None:
  """The day a snapshot committed (a day's import or rerun), None for any other snapshot."""
  return _summary(snapshot, SNAPSHOT_DAY)


def _summary(snapshot, key: str) -> str | None:
  return snapshot.summary.get(key) if snapshot.summary is not None else None


def as_lake(rows: pa.Table) -> pa.Table:
  """Rows (all or some columns) of an Iceberg lake file as the Hive lake holds them: no day
  column, the lake's types (timestamps in ms, all the lake keeps). Hive lake rows stay as they are."""
  if DAY not in rows.column_names:
    return rows
  names = [n for n in rows.column_names if n != DAY]
  return rows.select(names).cast(pa.schema([LAKE_SCHEMA.field(n) for n in names]))
