"""One 24-megapixel JPEG query through the evaluation pipeline (batch 128, 224 px view),
against the baseline of decoding that file once at full size, in the same run.

    .venv/bin/python benchmarks/large_query.py

Prints the median of 3 rounds of each and their ratio, and the process's peak RSS. The
issue's target: the pass within 1.5× of one decode (it was 130×: the padding re-read the
file for each of the batch's 127 empty rows).
"""

import os
import resource
import statistics
import tempfile
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from aah_jax.data import image_files, input_pipeline  # pylint: disable=wrong-import-position


def _median_seconds(fn, rounds=3):
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  path = os.path.join(tempfile.mkdtemp(), 'query_24mp.jpg')
  small = np.random.default_rng(0).integers(0, 256, (500, 750, 3), dtype=np.uint8)
  Image.fromarray(small).resize((6000, 4000)).save(path, quality=90)
  min_side = 2 * input_pipeline.eval_short_side(224)  # what aah-search asks for
  once = _median_seconds(lambda: Image.open(path).convert('RGB'))
  full = _median_seconds(lambda: list(input_pipeline.eval_batches(
      image_files.ImageFiles([path], min_side=min_side), global_batch=128, image_size=224)))
  print(f'decode once (baseline) {once:.3f} s; evaluation pass of one query {full:.3f} s; '
        f'ratio {full / once:.2f} (target ≤ 1.5); peak RSS '
        f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')


if __name__ == '__main__':
  main()
