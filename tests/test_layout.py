"""The package's layout: each module belongs to a role (a subpackage of aah_jax, or one of
the top-level modules) and imports only the roles below it. The same rules are written in
each role's __init__.py docstring; this test is what holds them."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'aah_jax'
_BELOW_TRAINING = {'common', 'models', 'data', 'retrieval'}
# role → the roles it may import (its own always).
ALLOWED = {
    'common': set(),
    'models': {'common'},
    'data': {'common'},
    'retrieval': {'common'},
    'training': _BELOW_TRAINING,
    'analysis': _BELOW_TRAINING | {'training'},
    'run': _BELOW_TRAINING | {'training', 'analysis'},  # aah_jax/run.py: the whole run
    'cli': _BELOW_TRAINING | {'training', 'analysis', 'run'},
    'package': set(),  # aah_jax/__init__.py
}
# Top-level modules: run.py, and the documented `python -m aah_jax.main|prepare` spellings of
# two programs of aah_jax/cli.
TOP_LEVEL = {'__init__': 'package', 'run': 'run', 'main': 'cli', 'prepare': 'cli'}


def role_of(dotted: str) -> str:
  """The role of an aah_jax module name ('aah_jax.training.losses' → 'training')."""
  parts = dotted.split('.')
  assert parts[0] == 'aah_jax', dotted
  if len(parts) == 1:
    return 'package'
  return TOP_LEVEL.get(parts[1], parts[1])


def imported_modules(source: str) -> list[str]:
  """Every module an import statement of source names (lazy imports in functions too); for
  ``from P import N``, P.N where N may be a module."""
  names = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.append(node.module)
      if node.module == 'aah_jax':
        names += [f'aah_jax.{alias.name}' for alias in node.names]
  return names


def violations(role: str, source: str) -> list[str]:
  found = []
  for name in imported_modules(source):
    top = name.split('.')[0]
    if top == 'configs':
      found.append(f'{name} (the library never imports configs/)')
    elif top == 'aah_jax' and name != 'aah_jax':
      other = role_of(name)
      if other != role and other not in ALLOWED[role]:
        found.append(f'{name} (role {other!r}; {role!r} may import {sorted(ALLOWED[role])})')
  return found


def _modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(PACKAGE).with_suffix('').parts
    yield path, role_of('.'.join(('aah_jax',) + parts))


def test_every_module_has_a_declared_role():
  unknown = [str(path) for path, role in _modules() if role not in ALLOWED]
  assert not unknown, f'modules outside the declared roles (see ALLOWED): {unknown}'


def test_no_module_imports_a_role_above_it_or_beside_it():
  found = {str(path.relative_to(PACKAGE.parent)): violations(role, path.read_text())
           for path, role in _modules() if role in ALLOWED}
  assert not {path: v for path, v in found.items() if v}


@pytest.mark.parametrize('role', [name for name in ALLOWED if name != 'package'])
def test_each_role_package_says_what_lives_there(role):
  init = PACKAGE / role / '__init__.py'
  if role in TOP_LEVEL.values() and not init.exists():
    return  # run (a module) and the shims have their own docstrings
  assert ast.get_docstring(ast.parse(init.read_text())), f'{init}: no docstring'


@pytest.mark.parametrize('role, source, bad', [
    ('models', 'from aah_jax.training import losses', True),  # upward
    ('data', 'import aah_jax.retrieval.ranking', True),  # beside
    ('training', 'def f():\n  from aah_jax import report', True),  # no such role: flagged
    ('training', 'def f():\n  from aah_jax.analysis import report', True),  # lazy, upward
    ('analysis', 'from aah_jax import run', True),
    ('cli', 'from configs import default', True),
    ('cli', 'from aah_jax import run\nfrom aah_jax.models import A2NetPlusPlus', False),
    ('training', 'from aah_jax.training import losses\nfrom aah_jax.common import mesh', False),
])
def test_the_check_flags_what_it_should(role, source, bad):
  assert bool(violations(role, source)) == bad
