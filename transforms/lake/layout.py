"""Where export files land: a partition template (the folder) and a file template inside it.

The unit of the commit is a day. Usually the folder is the day's (`dt={dt}`) and the commit owns
all of it. A flat layout (CleverTap's) has the day only in the file names: days share the folder,
each day has its own `_manifest-YYYYMMDD.json` and `_SUCCESS-YYYYMMDD`, and a day's commit owns
exactly the files its manifest lists (transforms/lake/commit.py). A folder named by {export_time} or
{run_id} (Adobe's) is new in every run: there the unit is the day, and the day's commit replaces
the folders earlier runs of it wrote (pipelines/export_events.py claim_folders).

Placeholders: {dt} 2023-01-01, {yyyymmdd} 20230101, {run_id}, {export_time} (run start, UTC,
YYYYMMDDHHMM), {dataset} (--dataset_id), {request_id} (--request_id), {database_id}
(--database_id); in file templates also {hh} (hour of ts, UTC; splits the
day's rows by hour), {event} (event_key; splits the rows by event name), {index} and {count}
(00000-style shard numbers), {ext}. Values are made safe for paths: every character other than
letters (any script), digits, '-', '_' and '.' becomes '_', '..' cannot occur, no name starts with
'_' or '.', and a value that had to change (or is over 100 characters) gets a hash of the original
appended, so no event name can steer a file outside DEST or collide with another.
"""
import dataclasses
import hashlib
import posixpath
import re
import string

from transforms.lake.names import MANIFEST, SUCCESS, day_markers

__all__ = ['PRESETS', 'DAY_FIELDS', 'DAYS', 'RUN_FIELDS', 'FILE_FIELDS', 'MAX_PART', 'LayoutError',
           'safe', 'day_values', 'Layout']

PRESETS = {
    'hive': ('dt={dt}', 'part-{index}-of-{count}.{ext}'),
    'hourly': ('dt={dt}', 'hr={hh}/part-{index}-of-{count}.{ext}'),
    'adobe': ('{dataset}/exportTime={export_time}', '{run_id}-{index}.{ext}'),
    'clevertap': ('', '{request_id}-{export_time}-{event}-{yyyymmdd}-{index}-{database_id}.{ext}'),
}
DAY_FIELDS = {'dt', 'yyyymmdd', 'run_id', 'export_time', 'dataset', 'request_id', 'database_id'}
DAYS = {'dt', 'yyyymmdd'}
RUN_FIELDS = {'export_time', 'run_id'}   # a folder named by these is new in every run
FILE_FIELDS = DAY_FIELDS | {'hh', 'event', 'index', 'count', 'ext'}
_UNSAFE = re.compile(r'[^\w.\-]', re.UNICODE)
MAX_PART = 100


def day_values(dt: str, dataset: str, ids: dict[str, str], run_id: str | None = None,
               export_time: str | None = None) -> dict:
  """The values a layout's templates name, for one day of one run. Without the run's (run_id,
  export_time), Layout.day_names matches the day's files of any run."""
  values = {'dt': dt, 'yyyymmdd': dt.replace('-', ''), 'dataset': dataset, **ids}
  if run_id is not None:
    values['run_id'] = run_id
  if export_time is not None:
    values['export_time'] = export_time
  return values


class LayoutError(ValueError):
  pass


def safe(value: str) -> str:
  """A path segment from any value: no separators, no '..', not hidden (leading '_' or '.'), at
  most MAX_PART characters. A value that had to change gets a hash of the original appended, so
  two names never collide ('a/b' and 'a_b' stay apart)."""
  text = _UNSAFE.sub('_', value).replace('..', '__').lstrip('._')
  if text != value or len(text) > MAX_PART:
    text = text[:MAX_PART - 9] + '-' + hashlib.sha1(value.encode()).hexdigest()[:8]
  return text


def _fields(template: str) -> set[str]:
  return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


@dataclasses.dataclass(frozen=True)
class Layout:
  partition: str
  file: str

  @classmethod
  def of(cls, preset: str | None, partition: str | None, file: str | None) -> 'Layout':
    base_partition, base_file = PRESETS.get(preset or 'hive', (None, None))
    if base_partition is None or base_file is None:
      raise LayoutError(f'--layout {preset!r} is not one of {", ".join(PRESETS)} '
                        '(or give --partition_template and --file_template)')
    layout = cls(partition or base_partition, file or base_file)
    layout.check()
    return layout

  def check(self) -> None:
    for label, template, allowed in (('--partition_template', self.partition, DAY_FIELDS),
                                     ('--file_template', self.file, FILE_FIELDS)):
      unknown = _fields(template) - allowed
      if unknown:
        raise LayoutError(f'{label} {template!r} uses {{{sorted(unknown)[0]}}}; it may use '
                          + ', '.join('{%s}' % f for f in sorted(allowed)))
      if template.startswith('/') or '..' in template.split('/'):
        raise LayoutError(f'{label} {template!r} must be a relative path without ".."')
    if 'index' not in _fields(self.file):
      raise LayoutError('--file_template needs {index}, so that shards get distinct names')
    if not (_fields(self.partition) & (DAYS | {'export_time'}) or self.flat):
      raise LayoutError(f'--partition_template {self.partition!r} needs {{dt}}, {{yyyymmdd}} or '
                        '{export_time} (each day or run is committed as one folder), or '
                        '--file_template needs {dt} or {yyyymmdd} (a flat layout)')

  def uses(self, field: str) -> bool:
    return field in _fields(self.partition) | _fields(self.file)

  @property
  def flat(self) -> bool:
    """True when days share the folder and only the file names carry the day (CleverTap)."""
    return not _fields(self.partition) & DAYS and bool(_fields(self.file) & DAYS)

  @property
  def per_day(self) -> bool:
    """False when days of one run share one commit unit (e.g. Adobe's exportTime=)."""
    return bool(_fields(self.partition) & DAYS) or self.flat

  def markers(self, values: dict) -> tuple[str, str]:
    """(manifest, success) file names of the day in its folder."""
    if self.flat:
      return day_markers(values['yyyymmdd'])
    return MANIFEST, SUCCESS

  @property
  def run_scoped(self) -> bool:
    """True when each run writes a day to a folder of its own (Adobe's exportTime=): the day's
    earlier folders are removed by its commit, and a folder is never shared by two days."""
    return bool(_fields(self.partition) & RUN_FIELDS) and not self.flat

  def unit(self, values: dict) -> str:
    """The commit unit (what a lock holds): the folder; the folder's day when flat; the day
    within the folders of every run when run-scoped."""
    if self.run_scoped:
      folder = self.partition_path({**values, **{f: '-' for f in RUN_FIELDS}})
      return folder if self.per_day else posixpath.join(folder, values['yyyymmdd'])
    folder = self.partition_path(values)
    if self.flat:
      return posixpath.join(folder, values['yyyymmdd']) if folder else values['yyyymmdd']
    return folder

  @property
  def by_hour(self) -> bool:
    return 'hh' in _fields(self.file)

  @property
  def by_event(self) -> bool:
    return 'event' in _fields(self.file)

  def day_names(self, values: dict) -> re.Pattern:
    """The file paths (under the day's folder) that the file template renders for the day of
    `values`, whatever the run, hour, event or index: in a flat folder, the files the day owns."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(self.file):
      parts.append(re.escape(literal))
      if name is not None:
        parts.append(re.escape(safe(str(values[name]))) if name in values else '[^/]+')
    return re.compile(''.join(parts))

  def partition_path(self, values: dict) -> str:
    return _render(self.partition, values)

  def file_path(self, values: dict) -> str:
    return _render(self.file, values)


def _render(template: str, values: dict) -> str:
  path = template.format(**{k: safe(str(v)) for k, v in values.items()})
  normal = posixpath.normpath(path) if path else ''
  if normal.startswith(('/', '..')) or '/../' in f'/{normal}/':
    raise LayoutError(f'{template!r} rendered to {path!r}, outside the destination')
  return '' if normal == '.' else normal
