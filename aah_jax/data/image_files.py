"""Images from files, as a data source the pipelines read like a tfds split.

``image_folder(root)`` lists ``root/<class>/<image>`` (classes in sorted order; images
directly under root get label -1); ``ImageFiles(paths, labels)`` serves them as
{'image': uint8 RGB, 'label'} by index; ``check_readable`` opens every file first, so
that a bad file stops a tool before any compute, with its path.
"""

from collections.abc import Sequence
import os
from typing import Optional

import numpy as np

from aah_jax.data import image_decode

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def image_folder(root: str) -> tuple[list[str], np.ndarray, list[str]]:
  """(paths, labels, class names) of root/<class>/<image> and root/<image> (label -1)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'image folder {root} does not exist')
  class_names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  paths, labels = [], []
  for name in sorted(os.listdir(root)):
    if _is_image(name) and os.path.isfile(os.path.join(root, name)):
      paths.append(os.path.join(root, name))
      labels.append(-1)
  for label, class_name in enumerate(class_names):
    folder = os.path.join(root, class_name)
    for name in sorted(os.listdir(folder)):
      if _is_image(name):
        paths.append(os.path.join(folder, name))
        labels.append(label)
  if not paths:
    raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {root} or its '
                            f'sub-folders')
  return [os.path.abspath(p) for p in paths], np.asarray(labels, np.int64), class_names


def check_readable(paths) -> None:
  """Decodes every file's header; raises ValueError naming each that is not an image."""
  bad = []
  for path in paths:
    try:
      with image_decode.open_image(path) as image:
        image.verify()
    except image_decode.ImageTooLarge as error:
      bad.append(str(error))
    except (OSError, SyntaxError) as error:
      bad.append(f'{path} ({error.__class__.__name__}: {error})')
  if bad:
    raise ValueError(f'{len(bad)} file(s) cannot be read as images: ' + '; '.join(bad))


def printable_name(name: str) -> str:
  """name as valid UTF-8 text: the bytes of a file name that is not UTF-8 (which Python holds
  as surrogate escapes) written as \\xNN; every other name unchanged."""
  return os.fsencode(name).decode('utf-8', errors='backslashreplace')


def load_rgb(path: str, min_side: Optional[int] = None) -> np.ndarray:
  """(H, W, 3) uint8 of any image file (image_decode.rgb8: every mode, EXIF orientation).
  min_side: a JPEG larger than needed is decoded at 1/2, 1/4 or 1/8 scale (its DCT
  scaling, PIL's draft) as long as both sides stay ≥ min_side: a 24 MP photo decodes in a
  fraction of the time and memory."""
  with image_decode.open_image(path) as image:
    if min_side and image.format == 'JPEG':
      image.draft(image.mode, (min_side, min_side))
    return np.asarray(image_decode.rgb8(image))


class ImageFiles(Sequence):
  """paths[i] as {'image': (H, W, 3) uint8, 'label': labels[i]}; min_side as load_rgb's."""

  def __init__(self, paths, labels=None, min_side: Optional[int] = None):
    self._paths = list(paths)
    self._labels = (np.full(len(self._paths), -1, np.int64) if labels is None
                    else np.asarray(labels))
    self._min_side = min_side

  def __len__(self):
    return len(self._paths)

  def __getitem__(self, i):
    return {'image': load_rgb(self._paths[i], self._min_side), 'label': self._labels[i]}
