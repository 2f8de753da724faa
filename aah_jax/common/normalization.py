"""How images are scaled for the network (ImageNet mean and standard deviation), in one
place that the input pipelines, the models and the train step import: NumPy only, so a
model does not pull in the input pipeline's readers."""

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(image_uint8, dtype=np.float32) -> np.ndarray:
  """uint8 RGB → ImageNet mean/std normalised, as float32 (or dtype, e.g. bfloat16)."""
  image = ((np.asarray(image_uint8, np.float32) / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
  return image.astype(dtype)


def to_unit_range(images):
  """Inverse of ``normalize`` (numpy or jax arrays): the image scaled to [0, 1]."""
  return images * IMAGENET_STD + IMAGENET_MEAN
