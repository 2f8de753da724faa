"""Input pipeline throughput: decoded + augmented training images per second at 224 px.

    python benchmarks/input_pipeline.py [--images=400] [--size=500x375]

Writes a set of real-size JPEGs (textured, so decoding costs what a photo costs) into an
image folder, prepares it as a tfds dataset (array_record), then reads one training
epoch (array_record read → JPEG decode → random-resized-crop to 224 → flip → normalise
→ batches of 32) with 1 and 2 reader threads and with 2 reader processes, and prints
images/s and images/s per core used. The baseline is the single-thread reader measured
in the same run.
"""

import os
import platform
import sys
import tempfile
import time

from absl import app, flags
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aah_jax.data import datasets, input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_integer('images', 400, 'Images in the generated set.')
flags.DEFINE_string('size', '500x375', 'Width x height of the generated JPEGs.')
flags.DEFINE_integer('batch', 32, 'Batch size.')


def write_images(root: str, count: int, width: int, height: int):
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (-(-height // 8), -(-width // 8), 3), np.uint8)
  for i in range(count):
    tile = np.roll(base, i, axis=1).repeat(8, 0).repeat(8, 1)
    noise = rng.integers(0, 40, (height, width, 3), np.uint8)
    folder = os.path.join(root, f'class{i % 10}')
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(tile[:height, :width] // 2 + noise).save(os.path.join(folder, f'{i}.jpg'),
                                                              quality=90)


def epoch_rate(source, batch: int, num_threads: int, num_workers: int) -> float:
  count = len(source) // batch * batch
  omega, order = np.arange(count), np.random.default_rng(0).permutation(count)
  start = time.perf_counter()
  seen = 0
  for local in input_pipeline.train_epoch(source, omega, order, global_batch=batch,
                                          image_size=224, crop_scale=(0.08, 1.0), seed=0,
                                          num_threads=num_threads, num_workers=num_workers):
    seen += len(local['image'])
  return seen / (time.perf_counter() - start)


def main(argv):
  del argv
  width, height = (int(x) for x in FLAGS.size.split('x'))
  print(f'{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}')
  with tempfile.TemporaryDirectory() as tmp:
    root, data_dir = os.path.join(tmp, 'images'), os.path.join(tmp, 'tfds')
    write_images(root, FLAGS.images, width, height)
    builder = datasets.load_builder('image_folder', None, data_dir, root)
    source = builder.as_data_source('train')
    print(f'{len(source)} JPEGs of {width}×{height}, training view 224×224, batches of '
          f'{FLAGS.batch}')
    epoch_rate(source, FLAGS.batch, 1, 0)  # warm the page cache
    baseline = epoch_rate(source, FLAGS.batch, 1, 0)
    print(f'  1 thread:            {baseline:7.1f} images/s  ({baseline:.1f} per core)')
    for threads, workers in ((2, 0), (1, 2)):
      rate = epoch_rate(source, FLAGS.batch, threads, workers)
      cores = max(threads, workers)
      what = f'{threads} threads' if not workers else f'{workers} processes'
      print(f'  {what + ":":20s} {rate:7.1f} images/s  ({rate / cores:.1f} per core, '
            f'{rate / baseline:.2f}× one thread)')


if __name__ == '__main__':
  app.run(main)
