"""The whole compiled train step as the database grows: the label-grouped form (docs/method.md
§8: the step takes B's summary and never reads B) against the explicit one (an n × N
similarity and F·Bᵀ per step), in the same run, on this host's CPU, one device.

    .venv/bin/python benchmarks/scale_step.py [--sizes=6000,75000,1000000,10000000] [--rounds=5]

configs/default.py's network (small CNN, 32 px, k = 12, batch 64), a database of N items in
200 classes. For each N and form: the median seconds of one step (the state donated from
step to step, as in a run) and XLA's memory analysis of the compiled step (arguments:
the state with B and the database's labels or group ids; temporaries). The explicit form
stops at --max_explicit. Ratios are against the grouped form at the smallest N.
"""

import argparse
import functools
import statistics
import time

import jax
from jax.sharding import Mesh
import numpy as np

from aah_jax.models import precision
from aah_jax.training import grouped, train
from configs import default


def _measure(config, N: int, grouped_form: bool, rounds: int, rng) -> dict:
  mesh = Mesh(np.array(jax.devices()[:1]), ('data',))
  model, schedule, tx = train.network_and_optimizer(config, 1)
  n, samples = config.train.batch_size, config.train.num_samples
  labels = rng.integers(0, 200, N).astype(np.int32)
  groups = grouped.LabelGroups.of(labels)
  init = functools.partial(train.init_state, model=model, tx=tx, image_size=config.image_size,
                           db_labels=groups.group_of if grouped_form else labels,
                           num_samples=samples)
  state = jax.jit(init, out_shardings=train.state_sharding(mesh, grouped_form))(
      jax.random.key(0))
  omega = rng.choice(N, samples, replace=False)
  positions = rng.choice(samples, n, replace=False).astype(np.int32)
  batch = {'image': rng.normal(size=(n, config.image_size, config.image_size, 3)).astype(
               np.float32),
           'label': labels[omega[positions]], 'index': omega[positions].astype(np.int32),
           'position': positions}
  step = train.compile_train_step(mesh, grouped_form, model=model, tx=tx, schedule=schedule,
                                  weights=train.loss_weights(config), gamma=config.loss.gamma)
  extra = ()
  if grouped_form:
    extra = (jax.jit(functools.partial(grouped.summarize, num_database=N))(
        state.B, jax.device_put(groups), omega),)
  memory = step.lower(state, batch, *extra).compile().memory_analysis()
  state, metrics = step(state, batch, *extra)  # compiled; warm
  jax.block_until_ready(metrics)
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    state, metrics = step(state, batch, *extra)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return {'step_s': statistics.median(times), 'arguments': memory.argument_size_in_bytes,
          'temporaries': memory.temp_size_in_bytes}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='6000,75000,1000000,10000000')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--max_explicit', type=int, default=1_000_000)
  args = parser.parse_args()
  config = precision.resolve_config(default.get_config(), 'cpu')
  rng = np.random.default_rng(0)
  rows = []
  for N in (int(s) for s in args.sizes.split(',')):
    row = {'N': N, 'grouped': _measure(config, N, True, args.rounds, rng)}
    if N <= args.max_explicit:
      row['explicit'] = _measure(config, N, False, args.rounds, rng)
    rows.append(row)
    print(row, flush=True)
  base = rows[0]['grouped']['step_s']
  mib = lambda b: f'{b / 2**20:,.1f}'
  print(f'\nbatch {config.train.batch_size}, {config.image_size} px, k={config.bits}, 200 '
        f'classes; ratios against the grouped step at N={rows[0]["N"]:,}')
  print('| N | grouped step ms (×) | arguments MiB | temporaries MiB | explicit step ms (×) | '
        'arguments MiB | temporaries MiB |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for row in rows:
    cells = []
    for form in ('grouped', 'explicit'):
      m = row.get(form)
      cells += ([f'{m["step_s"] * 1e3:,.1f} ({m["step_s"] / base:.2f}×)', mib(m['arguments']),
                 mib(m['temporaries'])] if m else ['not run', '–', '–'])
    print(f'| {row["N"]:,} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main()
