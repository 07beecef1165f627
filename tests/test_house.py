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
