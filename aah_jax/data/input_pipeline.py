"""Input pipelines: grain over tfds data sources, random access by example index.

Training reads the sampled subset Ω in a fresh order each epoch; evaluation reads
a whole split in order, padding the last batch and marking the padding in a
``mask`` so that every item is counted exactly once. On several processes each
one loads only its contiguous slice of every global batch.
"""

from collections.abc import Sequence
from typing import Iterator, Optional

import grain
import ml_dtypes
import numpy as np
from PIL import Image

from aah_jax.common.normalization import normalize

IMAGE_DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}


def _iterate(dataset, num_threads: int, num_workers: int):
  """Reads with num_threads threads, in num_workers processes if > 0 (same order)."""
  iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads))
  if num_workers > 0:
    iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(iterable)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """torchvision's RandomResizedCrop: a random area/aspect crop resized to size×size."""
  height, width = image.shape[:2]
  area = height * width
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    w = int(round(np.sqrt(target_area * aspect)))
    h = int(round(np.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return _resize(image[top:top + h, left:left + w], size, size)
  # Fallback: the whole image, centre-cropped to the nearest allowed aspect ratio.
  in_ratio = width / height
  w, h = ((width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else
          (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height))
  top, left = (height - h) // 2, (width - w) // 2
  return _resize(image[top:top + h, left:left + w], size, size)


def eval_short_side(size: int) -> int:
  """The shorter side the evaluation view resizes an image to before its central crop."""
  return int(round(size * 256 / 224))


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Evaluation view: shorter side to round(size·256/224), then the central size×size."""
  height, width = image.shape[:2]
  short = eval_short_side(size)
  if height <= width:
    new_h, new_w = short, int(round(width * short / height))
  else:
    new_h, new_w = int(round(height * short / width)), short
  image = _resize(image, new_w, new_h)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return image[top:top + size, left:left + size]


class _Indexed(Sequence):
  """source[indices[i]] with its database index (and position in Ω, and a mask). Rows
  masked out (an evaluation pass's padding) are not read: they take the labels of an
  example already read (read once if none is yet) with a black 1×1 image (what they encode
  is discarded)."""

  def __init__(self, source, indices, positions=None, mask=None):
    self._source, self._indices = source, np.asarray(indices)
    self._positions, self._mask = positions, mask
    self._padding = None

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    index = int(self._indices[i])
    if self._mask is not None and not self._mask[i]:
      if self._padding is None:
        self._padding = dict(self._source[index], image=np.zeros((1, 1, 3), np.uint8))
      example = self._padding
    else:
      example = self._source[index]
      if self._padding is None and self._mask is not None:
        self._padding = dict(example, image=np.zeros((1, 1, 3), np.uint8))
    item = {'image': example['image'], 'label': np.asarray(example['label']),
            'index': np.int32(index)}
    if self._positions is not None:
      item['position'] = np.int32(self._positions[i])
    if self._mask is not None:
      item['mask'] = np.bool_(self._mask[i])
    return item


def local_slice(global_order: np.ndarray, global_batch: int, process_index: int,
                process_count: int) -> np.ndarray:
  """This process's part of each global batch: contiguous, equal, disjoint slices."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} does not split over {process_count} processes')
  local = global_batch // process_count
  return global_order.reshape(-1, process_count, local)[:, process_index].reshape(-1)


def train_epoch(source, omega: np.ndarray, order: np.ndarray, *, global_batch: int,
                image_size: int, crop_scale, seed: int, num_threads: int = 2,
                num_workers: int = 0, dtype=np.float32, process_index: int = 0,
                process_count: int = 1, start_batch: int = 0) -> Iterator[dict]:
  """One epoch over Ω in the given order of positions, as this process's batches.

  Yields dicts of 'image' (normalised float32 NHWC, random-resized-crop + flip),
  'label', 'index' (database index ω) and 'position' (row of U). ``len(order)``
  must be a multiple of ``global_batch``. The augmentation of an example is drawn from
  ``seed`` and its position in Ω, so it does not depend on which process reads it.
  ``start_batch`` skips the epoch's first batches without reading them.
  """
  if len(order) % global_batch:
    raise ValueError(f'{len(order)} samples do not split into global batches of {global_batch}')
  positions = local_slice(np.asarray(order), global_batch, process_index, process_count)

  def augment(item):
    # Drawn from (seed, position in Ω): the same for an example whichever process reads it
    # and wherever the epoch is resumed.
    rng = np.random.default_rng([seed, int(item['position'])])
    image = random_resized_crop(item['image'], rng, image_size, scale=tuple(crop_scale))
    if rng.random() < 0.5:
      image = image[:, ::-1]
    return dict(item, image=normalize(image, dtype))

  dataset = (grain.MapDataset.source(_Indexed(source, omega[positions], positions))
             .map(augment)
             .batch(global_batch // process_count, drop_remainder=True))[start_batch:]
  return _iterate(dataset, num_threads, num_workers)


def eval_batches(source, *, global_batch: int, image_size: int, num_threads: int = 2,
                 num_workers: int = 0, dtype=np.float32, indices: Optional[np.ndarray] = None,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """A whole split (or the given indices) in order, evaluation view, padded with mask=False."""
  indices = np.arange(len(source)) if indices is None else np.asarray(indices)
  total = -(-len(indices) // global_batch) * global_batch
  padded = np.concatenate([indices, np.full(total - len(indices), indices[0], indices.dtype)])
  mask = np.arange(total) < len(indices)
  rows = local_slice(np.arange(total), global_batch, process_index, process_count)

  padding = normalize(np.zeros((image_size, image_size, 3), np.uint8), dtype)

  def view(item):
    if not item['mask']:
      return dict(item, image=padding)  # discarded: not resized
    return dict(item, image=normalize(resize_center_crop(item['image'], image_size), dtype))

  dataset = (grain.MapDataset.source(_Indexed(source, padded[rows], mask=mask[rows]))
             .map(view)
             .batch(global_batch // process_count))
  return _iterate(dataset, num_threads, num_workers)
