"""`./run.sh maintain`: upkeep of an Iceberg lake's events table and its _rejected table.

  ./run.sh maintain --lake WAREHOUSE --catalog C [--table T] [--expire_older_than 7d]
    [--retain_last 5] [--compact] [--target_file_mb 128]
    [--remove_orphans --orphan_older_than 3d] [--dry_run]

Each run compacts the days that have many small files (--compact), then expires snapshots
(unless --expire_older_than off: the files compaction replaced go too), then removes orphan
files (--remove_orphans); what each step did is
one line on stdout, and the JSON report goes to WAREHOUSE/_eventferry/maintain/RUN_ID.json (and
--report). Safe beside a running import or ingest: no lock is taken, every commit is optimistic
(transforms/lake/iceberg_maintain.py says why that is enough). --dry_run changes nothing, writes
no report into the warehouse, and says what it would do.

Exit codes: 0 done, 1 a commit met a newer snapshot every time (run it again), 2 a wrong flag
or a table not in the catalog, 5 the warehouse's store refused or the catalog could not be read.
"""
import dataclasses
import datetime
import json
import logging
import sys
import time

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import options as opts
from pipelines.forget import split_argv
from transforms.lake import iceberg, iceberg_maintain
from transforms.lake.names import MAINTAIN_DIR, STATE_DIR
from transforms.stores import fs

__all__ = ['MaintainOptions', 'Settings', 'settings', 'report_path', 'maintain', 'run']

LOG = logging.getLogger('eventferry')
UNSAFE_ORPHAN_AGE = 86400   # under a day, a running writer's files not yet committed may go


class MaintainOptions(PipelineOptions):
  """Expire snapshots, compact small files and remove orphan files of an Iceberg lake."""
  FLAG_GROUPS = (iceberg.IcebergOptions,)   # shown in --help beside these

  @classmethod
  def _add_argparse_args(cls, parser):
    opts.add_shared(parser, '--lake', help='the Iceberg warehouse (local, s3://, gs://)')
    parser.add_argument('--expire_older_than', default='7d',
                        help='expire snapshots older than this (e.g. 7d, 12h; off: expire none)')
    parser.add_argument('--retain_last', type=int, default=5,
                        help='keep at least this many newest snapshots, however old')
    opts.add_switch(parser, '--compact', help="rewrite each day's small files into files of "
                    f'about --target_file_mb (days with {iceberg_maintain.MIN_INPUT_FILES} or more)')
    opts.add_shared(parser, '--target_file_mb', default='128',
                    help='size of the files compaction writes: MiB, or a size such as 256MB')
    opts.add_switch(parser, '--remove_orphans',
                    help='delete files under the tables that no snapshot or metadata names')
    parser.add_argument('--orphan_older_than', default='3d',
                        help='only orphans last written longer ago than this (at least 1d: a '
                        "running writer's files are orphans until it commits)")
    opts.add_shared(parser, '--run_id', default=None, help='run id (default: time + random)')
    opts.add_shared(parser, '--report', default=None, help='also write the JSON run report here')


@dataclasses.dataclass(frozen=True)
class Settings:
  lake: iceberg.IcebergLake
  expire_before: datetime.datetime | None
  retain_last: int
  compact: bool
  target_bytes: int
  orphans_before: datetime.datetime | None
  run_id: str
  dry_run: bool
  report: str | None


def settings(argv: list[str], now: datetime.datetime | None = None) -> Settings:
  """The run's settings from its flags; a wrong flag raises UsageError."""
  dry, argv = split_argv(argv)
  options = opts.parse(MaintainOptions, argv, './run.sh maintain')
  fs.configure(options)
  o, ice = options.view_as(MaintainOptions), options.view_as(iceberg.IcebergOptions)
  opts.require(o, {'lake': './lake'})
  ice.lake_format = 'iceberg'   # maintain has no Hive lake to keep
  problem = iceberg.check(ice)
  if problem:
    raise opts.UsageError(problem)
  if o.retain_last < 1:
    raise opts.UsageError(f'--retain_last {o.retain_last}: give 1 or more (the current snapshot '
                          'is always kept)')
  now = now or datetime.datetime.now(datetime.timezone.utc)
  expire = None
  if o.expire_older_than.strip().lower() != 'off':
    expire = now - datetime.timedelta(seconds=opts.parse_duration('--expire_older_than',
                                                                  o.expire_older_than))
  orphans = None
  if o.remove_orphans:
    age = opts.parse_duration('--orphan_older_than', o.orphan_older_than)
    if age < UNSAFE_ORPHAN_AGE:
      LOG.warning('--orphan_older_than %s is under a day: files a running import or ingest '
                  'has written but not yet committed can be taken', o.orphan_older_than)
    orphans = now - datetime.timedelta(seconds=age)
  target = opts.parse_size('--target_file_mb', o.target_file_mb, plain=2**20)
  return Settings(iceberg.from_options(options, o.lake), expire, o.retain_last, o.compact, target,
                  orphans, o.run_id or opts.new_run_id(), dry, o.report)


def report_path(warehouse: str, run_id: str) -> str:
  return fs.join(iceberg.store_path(warehouse), STATE_DIR, MAINTAIN_DIR, f'{run_id}.json')


def _tables(lake: iceberg.IcebergLake) -> list[str]:
  """The events table and, when it exists, its rejected table (never created here)."""
  with iceberg.reaching(lake):
    names = iceberg_maintain.existing(lake, [lake.table, lake.rejected_table])
  if lake.table not in names:
    raise opts.UsageError(f'--table {lake.table} is not in --catalog {fs.redact(lake.catalog)}: '
                          'check both flags')
  return names


def maintain(s: Settings) -> list[iceberg_maintain.Action]:
  """Every step the settings ask for, on both tables; each action is told as it ends."""
  actions: list[iceberg_maintain.Action] = []

  def told(done: list[iceberg_maintain.Action]) -> None:
    for action in done:
      print(action.line(s.dry_run), flush=True)
      actions.append(action)

  for name in _tables(s.lake):
    # Compaction first: the files it replaces are then expired in the same run.
    if s.compact:
      told(iceberg_maintain.compact(s.lake, name, s.target_bytes, s.run_id, s.dry_run))
    if s.expire_before is not None:
      told([iceberg_maintain.expire(s.lake, name, s.expire_before, s.retain_last, s.dry_run)])
    if s.orphans_before is not None:
      told([iceberg_maintain.remove_orphans(s.lake, name, s.orphans_before, s.dry_run)])
  return actions


def run(argv: list[str]) -> int:
  started = time.time()
  s = settings(argv)
  try:
    actions = maintain(s)
  except iceberg_maintain.Contended as e:
    LOG.error(str(e))
    return 1
  report = {'run_id': s.run_id, 'pipeline': 'maintain', 'lake': s.lake.warehouse,
            'catalog': fs.redact(s.lake.catalog), 'table': s.lake.table,
            'dry_run': s.dry_run,
            'started_at': datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
            'seconds': round(time.time() - started, 3),
            'actions': [dataclasses.asdict(a) for a in actions]}
  data = json.dumps(report, indent=2).encode()
  if not s.dry_run:
    fs.write_bytes(report_path(s.lake.warehouse, s.run_id), data)
  if s.report:
    fs.write_bytes(s.report, data)
  print(('dry run: nothing was changed; ' if s.dry_run else '')
        + f'maintain run {s.run_id}: {len(actions)} actions in {report["seconds"]:.1f} s')
  return 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
