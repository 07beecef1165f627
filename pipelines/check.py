"""Preflight: can eventferry use these locations with these credentials?

  ./run.sh check --dest s3://customer/export --s3_role_arn ... [--source ...] [--lake ...]

For --dest and --lake it writes a small probe object under LOCATION/_eventferry/, reads it back,
lists it and deletes it, and prints one verdict per permission (PUT, GET, LIST, DELETE). For
--source it only lists and reads (an import never writes to the customer's bucket), and checks that
the prefix holds dt=YYYY-MM-DD folders. Exit 0 when
every needed permission works, 1 otherwise, 2 for a wrong flag. Store flags are the same as the
import's and export's (README: Clouds).
"""
import sys
import uuid

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import options as opts
from transforms import read
from transforms.stores import clients, fs
from transforms.lake.names import STATE_DIR

__all__ = ['PROBE', 'CheckOptions', 'probe_writable', 'probe_readable', 'run']

PROBE = b'eventferry preflight probe\n'


class CheckOptions(PipelineOptions):
  """Check that eventferry can write, read, list and delete at the given locations."""

  @classmethod
  def _add_argparse_args(cls, parser):
    opts.add_shared(parser, '--source', help='customer prefix to import from (LIST, GET)')
    opts.add_shared(parser, '--lake', help='lake root (PUT, GET, LIST, DELETE)')
    opts.add_shared(parser, '--dest', help='export destination (PUT, GET, LIST, DELETE)')


def _step(results: list, permission: str, action) -> bool:
  try:
    detail = action()
  except Exception as e:  # noqa: BLE001 - every failure is a verdict, named and explained
    results.append((permission, 'FAILED', clients.explain(e)))
    return False
  results.append((permission, 'OK', detail))
  return True


def probe_writable(root: str) -> list[tuple[str, str, str]]:
  """PUT, GET, LIST, DELETE of one probe object under ROOT/_eventferry/."""
  folder = fs.join(root, STATE_DIR)
  probe = fs.join(folder, f'check-{uuid.uuid4().hex[:12]}.probe')
  results: list[tuple[str, str, str]] = []
  put = _step(results, 'PUT', lambda: (fs.write_bytes(probe, PROBE),
                                       f'wrote {probe}')[1])

  def get():
    if fs.read_bytes(probe) != PROBE:
      raise RuntimeError(f'{probe} read back different bytes')
    return 'read it back'

  def listed():
    found = fs.list_files(folder)
    if put and probe not in found:
      raise RuntimeError(f'listing {folder}/ did not show {probe}')
    return f'listed {folder}/'

  def delete():
    fs.delete([probe])
    if fs.exists(probe):
      raise RuntimeError(f'{probe} still exists after the delete')
    return 'deleted it'

  if put:
    _step(results, 'GET', get)
  else:
    results.append(('GET', 'UNTESTED', 'needs the probe that PUT could not write'))
  _step(results, 'LIST', listed)
  if put:
    _step(results, 'DELETE', delete)
  else:
    results.append(('DELETE', 'UNTESTED', 'needs the probe that PUT could not write'))
  return results


def probe_readable(root: str) -> list[tuple[str, str, str]]:
  """LIST the prefix and GET the first bytes of one object in it; DAYS: it holds dt= folders."""
  results: list[tuple[str, str, str]] = []
  found: list[str] = []

  def list_root():
    found.extend(fs.list_files(root))
    return f'listed {root}/: {len(found)} objects'

  if _step(results, 'LIST', list_root):
    problem = read.prefix_problem(root)
    results.append(('DAYS', 'FAILED', problem) if problem else ('DAYS', 'OK', read.prefix_days(root)))
  if found:
    def get():
      with fs.open_read(found[0]) as f:
        f.read(4)
      return f'read {found[0]}'
    _step(results, 'GET', get)
  else:
    results.append(('GET', 'UNTESTED', 'no object to read under the prefix'))
  return results


def run(argv: list[str]) -> int:
  options = opts.parse(CheckOptions, argv, './run.sh check')
  fs.configure(options)
  o = options.view_as(CheckOptions)
  targets = [(flag, getattr(o, flag)) for flag in ('source', 'lake', 'dest') if getattr(o, flag)]
  if not targets:
    raise opts.UsageError('give at least one of --source, --lake, --dest, e.g. --dest '
                          's3://customer-bucket/export')
  ok = True
  for flag, root in targets:
    print(f'--{flag} {root}')
    results = probe_readable(root) if flag == 'source' else probe_writable(root)
    for permission, verdict, detail in results:
      print(f'  {permission:<7} {verdict:<8} {detail}')
    good = all(v == 'OK' for _, v, _ in results) or (
        flag == 'source' and all(v != 'FAILED' for _, v, _ in results))
    ok &= good
    print(f'  verdict: {"usable" if good else "NOT usable"} as {flag}')
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
