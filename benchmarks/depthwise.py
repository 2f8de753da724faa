"""Depthwise convolution on XLA:CPU: ``depthwise_by_shifts`` (what EfficientNet-Lite's
``DepthwiseConv`` runs on CPU) against XLA's grouped convolution (the baseline), forward
and forward + both gradients, on the shapes of EfficientNet-Lite0 in the A²-Net++ step.

    python benchmarks/depthwise.py [--repeats=3]

Prints each time and the baseline/ours ratio (> 1: ours faster), after checking that
both give the same output.
"""

import os
import platform
import sys
import time

from absl import app, flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aah_jax.models.efficientnet import depthwise_by_shifts  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement (the median is shown).')

# (what, batch, size, channels, kernel, stride): the global path at 96 px (batch 64) and the
# local path (64 images × 13 copies of the last stage's input).
SHAPES = [('trunk block 2, 96 px', 64, 48, 96, 3, 2),
          ('last stage block 11, local path', 64 * 13, 6, 672, 5, 2),
          ('last stage block 12, local path', 64 * 13, 3, 1152, 5, 1)]


def grouped(x, k, stride):
  return jax.lax.conv_general_dilated(x, k, (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=x.shape[-1])


def _median_seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  print(f'{platform.platform()}, {os.cpu_count()} CPUs; jax {jax.__version__} '
        f'({jax.default_backend()})')
  print('| shape | grouped conv fwd | shifts fwd | ratio | grouped fwd+grad | shifts fwd+grad | ratio |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  rng = np.random.default_rng(0)
  for what, n, size, c, kernel, stride in SHAPES:
    x = rng.standard_normal((n, size, size, c)).astype(np.float32)
    k = rng.standard_normal((kernel, kernel, 1, c)).astype(np.float32)
    row = [what]
    for make in (lambda f: jax.jit(lambda x, k: f(x, k, stride)),
                 lambda f: jax.jit(jax.grad(lambda x, k: (f(x, k, stride) ** 2).sum(),
                                            argnums=(0, 1)))):
      base, ours = make(grouped), make(depthwise_by_shifts)
      t_base, t_ours = _median_seconds(base, x, k), _median_seconds(ours, x, k)
      row += [f'{t_base * 1e3:.0f} ms', f'{t_ours * 1e3:.0f} ms', f'{t_base / t_ours:.1f}×']
    np.testing.assert_allclose(depthwise_by_shifts(x, k, stride), grouped(x, k, stride),
                               rtol=1e-4, atol=1e-4)
    print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
  app.run(main)
