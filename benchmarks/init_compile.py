"""Compile time of the program that initialises the network's variables, with XLA's default
options (the baseline) against ``aah_jax.common.init_compile`` (XLA:CPU's backend optimisation
level 1, what ``init_variables`` and the run's ``init_state`` use), in the same run, on this
host's CPU; and whether the two programs give bitwise the same variables.

    .venv/bin/python benchmarks/init_compile.py [--configs=tiny,default,default_pretrained]
        [--rounds=3]

Each round compiles the config's ``model.init`` both ways, each from a fresh lowering (JAX
keeps the executable of a lowering it has compiled, and the persistent compilation cache is
off here, so every compile is a real one); the medians over the rounds and their ratio are
printed per config.
"""

import argparse
import functools
import importlib
import os
import statistics
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # a CPU measurement: no GPU or TPU plugin start
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aah_jax.common import init_compile  # noqa: E402
from aah_jax.models import create_model, precision  # noqa: E402


def _measure(name: str, rounds: int):
  config = precision.resolve_config(importlib.import_module(f'configs.{name}').get_config(), 'cpu')
  model = create_model(config.model)
  images = jnp.zeros((model.bn_groups, config.image_size, config.image_size, 3), jnp.float32)
  rng = jax.random.key(0)
  seconds = {'default': [], 'level 1': []}
  leaves = {}
  for _ in range(rounds):
    for form, options in (('default', None), ('level 1', init_compile.CPU_OPTIONS)):
      lowered = jax.jit(functools.partial(model.init, train=True)).lower(rng, images)
      start = time.perf_counter()
      compiled = lowered.compile(compiler_options=options)
      seconds[form].append(time.perf_counter() - start)
      leaves[form] = jax.tree.leaves(compiled(rng, images))
  same = all(np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(leaves['default'], leaves['level 1']))
  base, fast = statistics.median(seconds['default']), statistics.median(seconds['level 1'])
  arrays = len(leaves['default'])
  print(f'| {name} | {config.model.backbone}, {config.image_size} px, {arrays} arrays | '
        f'{base:.1f} s | {fast:.1f} s | {fast / base:.2f}× | {"yes" if same else "NO"} |',
        flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='tiny,default,default_pretrained')
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  jax.config.update('jax_enable_compilation_cache', False)
  print(f'{jax.devices()[0].device_kind}; medians of {args.rounds} rounds')
  print('| config | network | XLA defaults (baseline) | level 1 | ratio | bitwise equal |')
  print('| --- | --- | --- | --- | --- | --- |')
  for name in args.configs.split(','):
    _measure(name, args.rounds)


if __name__ == '__main__':
  main()
