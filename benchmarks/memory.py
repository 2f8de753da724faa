"""Device memory of the compiled train step: ResNet-50 at 224 px, the paper's setting.

    python benchmarks/memory.py [--bits=12,48] [--batches=16,32] [--database=5994]

Compiles (does not run) the jitted train step for one device and reads XLA's buffer
assignment (``compiled.memory_analysis()``): arguments (the state: parameters, optimiser
state, B, U, database labels, and the batch) + outputs − donated aliases + temporaries.
Per setting (k = M, with and without rematerialising the local stage-4 path) it fits
peak = fixed + per_image · batch over the batch sizes and prints the largest per-device
batch for 16, 40 and 80 GB. The numbers come from XLA:CPU's buffer assignment on this
machine; a GPU or TPU compile (run the same script there) fuses differently.
"""

import functools
import os
import platform
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aah_jax.training import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from aah_jax.models import create_model, precision  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import cub200  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('bits', ['12', '48'], 'Code lengths k (M = k).')
flags.DEFINE_list('batches', ['16', '32'], 'Per-device batch sizes compiled (for the fit).')
flags.DEFINE_integer('database', 5994, 'Database size N (CUB-200-2011: 5,994).')
flags.DEFINE_integer('samples', 2000, '|Ω| (rows of U).')
GB = 1e9


def peak_bytes(bits: int, batch: int, remat: bool) -> tuple[int, float]:
  """(peak bytes of the compiled step, compile seconds)."""
  config = cub200.get_config()
  config.bits = bits
  config.model.remat_local_stage = remat
  config = precision.resolve_config(config, jax.devices()[0].platform)
  model = create_model(config.model)
  schedule = train.Schedule(40, 125, 1e-4, 0.9, 0.1)
  tx = train.make_optimizer(config.optim, schedule)
  db_labels = jax.ShapeDtypeStruct((FLAGS.database,), jnp.int32)
  state = jax.eval_shape(
      lambda rng, labels: train.init_state(rng, model, tx, image_size=224, db_labels=labels,
                                           num_samples=FLAGS.samples),
      jax.random.key(0), db_labels)
  batch = {'image': jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32),
           'label': jax.ShapeDtypeStruct((batch,), jnp.int32),
           'index': jax.ShapeDtypeStruct((batch,), jnp.int32),
           'position': jax.ShapeDtypeStruct((batch,), jnp.int32)}
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   weights=train.loss_weights(config), gamma=config.loss.gamma),
                 donate_argnums=0)
  start = time.perf_counter()
  memory = step.lower(state, batch).compile().memory_analysis()
  seconds = time.perf_counter() - start
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  return peak, seconds


def main(argv):
  del argv
  print(f'{platform.platform()}, jax {jax.__version__} ({jax.devices()[0].platform}); '
        f'ResNet-50, 224 px, N={FLAGS.database}, |Ω|={FLAGS.samples}, float32')
  batches = [int(b) for b in FLAGS.batches]
  print('| k = M | remat | ' + ' | '.join(f'peak at batch {b}' for b in batches)
        + ' | per image | largest batch at 16 / 40 / 80 GB |')
  print('| --- ' * (3 + len(batches) + 1) + '|')
  for bits in (int(b) for b in FLAGS.bits):
    for remat in (False, True):
      peaks = []
      for b in batches:
        peak, seconds = peak_bytes(bits, b, remat)
        peaks.append(peak)
        print(f'  (k={bits}, remat={remat}, batch {b}: {peak / GB:.2f} GB, compiled in '
              f'{seconds:.0f}s)', file=sys.stderr)
      slope, fixed = np.polyfit(batches, peaks, 1) if len(batches) > 1 else (peaks[0] / batches[0], 0.0)
      largest = [int((limit * GB - fixed) // slope) for limit in (16, 40, 80)]
      print(f'| {bits} | {"yes" if remat else "no"} | '
            + ' | '.join(f'{p / GB:.2f} GB' for p in peaks)
            + f' | {slope / 1e6:.0f} MB | {" / ".join(map(str, largest))} |', flush=True)


if __name__ == '__main__':
  app.run(main)
