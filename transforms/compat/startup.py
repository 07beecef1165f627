"""Beam's import without the clients a run does not use.

`import apache_beam` loads, when they are installed, the client of every filesystem (Google Cloud
Storage, boto3 through Beam's S3 filesystem, Azure Blob, HDFS), BigQuery and Pub/Sub (the GCP
block of `apache_beam.io`), pandas (Beam's pandas batch types) and the Dataflow API: more than
half of Beam's import time, spent before a row moves, by a local run that needs none of them.
Beam imports each inside a try/except ImportError, so while `apache_beam` loads, `import_beam`
makes them absent; afterwards
- a filesystem is imported when FileSystems first meets a path of its scheme, so every store
  works as it did;
- the Dataflow API client is imported when a Dataflow job is launched (DataflowRunner.run_pipeline):
  Beam reads it only for a job's state and messages;
- Pub/Sub is imported by the code that reads it (transforms/read_raw.py); the project uses
  neither BigQuery nor pandas, and Beam's other modules import them themselves when they need them;
- what the project sets inside such a client's modules is set when they are imported
  (`after_import`: transforms/compat/filesystems.py hands Beam's S3 filesystem our boto3 client).
pyarrow, too, imports pandas (when installed) on its first conversion of a list or a numpy array,
only to ask whether it was given pandas objects: its first look is made here, so it finds pandas
absent; pyarrow's pandas functions (to_pandas, from_pandas) still import it when called.
A process that imported Beam before (a Beam worker started by Beam) keeps Beam as it is.

Each hook here is checked against the pinned Beam by tests/test_startup.py (in fresh interpreters).
"""
import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ['FILESYSTEMS', 'DATAFLOW_API', 'ABSENT', 'import_beam', 'deferred_schemes', 'after_import']

# scheme -> Beam's filesystem module, imported on the first path of that scheme
FILESYSTEMS = {'gs': 'apache_beam.io.gcp.gcsfilesystem', 's3': 'apache_beam.io.aws.s3filesystem',
               'azfs': 'apache_beam.io.azure.blobstoragefilesystem',
               'hdfs': 'apache_beam.io.hadoopfilesystem'}
DATAFLOW_API = 'google.cloud.dataflow'   # dataflow_runner's `dataflow_api`
# What apache_beam's import leaves out: `apache_beam.io` imports BigQuery, Pub/Sub, gcsio and
# the cross-language IOs in one try block, which the first of them ends.
ABSENT = frozenset({'pandas', 'apache_beam.io.gcp.bigquery', DATAFLOW_API, *FILESYSTEMS.values()})

_deferred: dict[str, str] = {}   # scheme -> module, for the filesystems left out of the import


class _Absent(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name in ABSENT:
      raise ModuleNotFoundError(f'{name} is left out of Beam\'s import', name=name)
    return None


def import_beam() -> None:
  """Imports apache_beam without what ABSENT names (see the module's docstring)."""
  if 'apache_beam' in sys.modules:
    return
  finder = _Absent()
  sys.meta_path.insert(0, finder)
  try:
    import apache_beam  # noqa: F401
    import pyarrow as pa
    from apache_beam.io.filesystems import FileSystems
    pa.array([])   # pyarrow's first look for pandas (see the module's docstring)
  finally:
    sys.meta_path.remove(finder)
  _deferred.update({s: m for s, m in FILESYSTEMS.items() if m not in sys.modules})
  if _deferred:
    get_filesystem = FileSystems.get_filesystem

    def on_first_use(path):
      module = _deferred.get(FileSystems.get_scheme(path))
      if module is not None:
        try:   # once imported, a lookup in sys.modules (Python's import lock serializes threads)
          importlib.import_module(module)   # registers its FileSystem subclass
        except ImportError:
          pass   # not installed: Beam's own "Unable to get filesystem" follows, as without this
      return get_filesystem(path)
    FileSystems.get_filesystem = staticmethod(on_first_use)  # type: ignore[method-assign]
  _dataflow_api_on_launch()


def _dataflow_api_on_launch() -> None:
  from apache_beam.runners.dataflow import dataflow_runner
  if dataflow_runner.dataflow_api is not None or importlib.util.find_spec(DATAFLOW_API) is None:
    return   # imported after all, or not installed (Beam then goes without, as it would)
  launch = dataflow_runner.DataflowRunner.run_pipeline

  def run_pipeline(self, pipeline, options, pipeline_proto=None):
    dataflow_runner.dataflow_api = importlib.import_module(DATAFLOW_API)
    return launch(self, pipeline, options, pipeline_proto)
  dataflow_runner.DataflowRunner.run_pipeline = run_pipeline


def deferred_schemes() -> set[str]:
  """The schemes whose Beam filesystem was left out of the import and is not imported yet."""
  return {s for s, m in _deferred.items() if m not in sys.modules}


class _AfterImport(importlib.abc.MetaPathFinder):
  """Runs hooks on a module right after its first import, whoever imports it."""

  def __init__(self):
    self.hooks: dict[str, list] = {}

  def find_spec(self, name, path=None, target=None):
    if name not in self.hooks:
      return None
    for finder in sys.meta_path:   # the finder that would have found it, then its loader wrapped
      spec = None if finder is self else getattr(finder, 'find_spec', lambda *_: None)(name, path, target)
      if spec is not None:
        break
    if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
      return spec
    spec.loader = _HookedLoader(spec.loader, self.hooks.pop(name))
    return spec


class _HookedLoader(importlib.abc.Loader):
  def __init__(self, loader, hooks: list):
    self._loader, self._hooks = loader, hooks

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    self._loader.exec_module(module)
    for hook in self._hooks:
      hook(module)


_after_import = _AfterImport()


def after_import(name: str, hook) -> None:
  """Calls hook(module) once module `name` is imported: now if it is already, else right after
  its import (the clients left out of Beam's import are imported on first use, if ever)."""
  if name in sys.modules:
    hook(sys.modules[name])
    return
  if _after_import not in sys.meta_path:
    sys.meta_path.insert(0, _after_import)
  _after_import.hooks.setdefault(name, []).append(hook)
