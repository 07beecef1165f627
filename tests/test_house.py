"""The tree's roles, checked: the Arrow kernels import no Beam, and the layers import downwards
(schemas <- transforms <- pipelines), so a module in the wrong place fails here, not in review."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = sorted(p.stem for p in (ROOT / 'transforms' / 'kernels').glob('*.py') if p.stem != '__init__')


def imports_of(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
  return names


@pytest.mark.parametrize('kernel', KERNELS)
def test_a_kernel_imports_no_beam(kernel):
  """A kernel may import schemas, other kernels and libraries, never Beam or a module that does
  (the package's own __init__ registers Beam coders, which is the PTransforms' business)."""
  path = ROOT / 'transforms' / 'kernels' / f'{kernel}.py'
  wrong = sorted(name for name in imports_of(path)
                 if name.split('.')[0] == 'apache_beam'
                 or (name.startswith('transforms.') and not name.startswith('transforms.kernels'))
                 or name.split('.')[0] == 'pipelines')
  assert not wrong, f'transforms/kernels/{kernel}.py imports {wrong}'


@pytest.mark.parametrize('layer,forbidden', [('schemas', ('transforms', 'pipelines')),
                                             ('transforms', ('pipelines',))])
def test_layers_import_downwards(layer, forbidden):
  wrong = sorted(f'{path.relative_to(ROOT)} imports {name}'
                 for path in (ROOT / layer).rglob('*.py') for name in imports_of(path)
                 if name.split('.')[0] in forbidden)
  assert not wrong, wrong


MODULES = sorted(p for layer in ('pipelines', 'transforms', 'schemas')
                 for p in (ROOT / layer).rglob('*.py') if p.name != '__init__.py')


@pytest.mark.parametrize('path', MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_says_what_it_offers(path):
  """Every module names its public names in __all__, and each of them is defined there."""
  tree = ast.parse(path.read_text())
  declared = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == '__all__' for t in node.targets)]
  assert declared, f'{path.relative_to(ROOT)} has no __all__'
  defined = {n.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
             for n in ast.walk(target) if isinstance(n, ast.Name)}
  defined |= {node.name for node in tree.body
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
  defined |= {(a.asname or a.name).split('.')[0] for node in tree.body
              if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
  missing = [n for n in ast.literal_eval(declared[0]) if n not in defined]
  assert not missing, f'{path.relative_to(ROOT)} lists {missing} in __all__ but defines none of them'


def test_option_classes_declare_their_flags_in_any_order():
  """Beam parses every loaded options class with one parser: a flag two of ours declare must go
  through opts.add_shared, or the class that comes second loses every flag after it (the order
  is the order classes were created in, which the test run or a worker's imports decide)."""
  import argparse
  import importlib
  import pkgutil

  import pipelines
  from apache_beam.options import pipeline_options as po
  from pipelines import options as opts
  for module in pkgutil.iter_modules(pipelines.__path__):
    importlib.import_module(f'pipelines.{module.name}')
  ours = [c for c in dict.fromkeys(opts._all_option_classes())
          if c.__module__.startswith(('pipelines', 'transforms'))]
  for order in (ours, ours[::-1]):
    parser = po._BeamArgumentParser(allow_abbrev=False, add_help=False)
    for cls in order:
      try:
        cls._add_argparse_args(parser)
      except argparse.ArgumentError as e:
        raise AssertionError(f'{cls.__module__}.{cls.__name__}: {e}') from None


def _keyword(call: ast.Call, name: str):
  return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == name), None)


def test_parquet_from_a_store_is_read_without_pre_buffering():
  """pyarrow's pre-buffered read of a Python file object (a store's file) leaves Arrow I/O
  threads that can hold Python bytes at interpreter exit, and the process aborts with exit 134
  after its work is done (seen after reconcile --deep). So a whole-file read goes through
  fs.read_parquet, which does not pre-buffer, or reads Arrow's own in-memory buffer."""
  wrong = []
  for path in MODULES:
    for node in ast.walk(ast.parse(path.read_text())):
      if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        continue
      where = f'{path.relative_to(ROOT)}:{node.lineno}'
      if node.func.attr == 'read_table':
        source = node.args[0] if node.args else None
        in_memory = (isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute)
                     and source.func.attr == 'BufferReader')
        if not in_memory and not (path.name == 'fs.py' and _keyword(node, 'pre_buffer') is False):
          wrong.append(where)
      elif node.func.attr == 'ParquetFile' and _keyword(node, 'pre_buffer'):
        wrong.append(where)
  assert not wrong, wrong
