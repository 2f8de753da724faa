"""Every image PIL opens, as the 8-bit RGB the network reads: one conversion, used by the
dataset builders (``datasets/archive.py``) and the query path (``image_files.py``), so that
a picture gives the same pixels whichever way it enters.

``rgb8(image)``, mode by mode (PIL's ``convert('RGB')`` alone turns 16-bit grey white and
drops transparency to whatever colour hides under it):

- the EXIF orientation is applied first (a phone's portrait JPEG stands upright);
- 16-bit grey (``I;16``, ``I;16B``, …) keeps its high byte, x >> 8, as PIL does itself for
  16-bit RGB files (which it opens as ``RGB``);
- 32-bit integer (``I``, which is how PIL opens many 16-bit files) is read as 16-bit data:
  clipped to [0, 65535], then x >> 8;
- 32-bit float (``F``): values in [0, 1] (the maximum ≤ 1) are scaled by 255, others are
  taken as [0, 255]; then clipped and rounded; NaN becomes 0;
- with transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent index): composited
  over white, rgb·a + 255·(1 − a) with a = alpha / 255, rounded;
- everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGB``):
  PIL's own conversion.

``open_image(path)`` opens a file after checking its pixel count (from the header, before
any decoding) against ``max_pixels`` (the ``--max_image_pixels`` flag of aah-prepare,
aah-index and aah-search; PIL's own decompression-bomb check is replaced by this one, whose
error names the file and the flag).
"""

from typing import BinaryIO, Optional, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

# PIL's own limit (2 × Image.MAX_IMAGE_PIXELS: it warns above half of it, refuses above it).
DEFAULT_MAX_PIXELS = 178_956_970
Image.MAX_IMAGE_PIXELS = None  # open_image checks instead, naming the file
_limit = {'max_pixels': DEFAULT_MAX_PIXELS}


class ImageTooLarge(ValueError):
  """An image with more pixels than the limit (the message names the file and the flag)."""


def set_max_pixels(max_pixels: int):
  """The largest image (width × height) open_image accepts from now on in this process."""
  if max_pixels < 1:
    raise ValueError(f'--max_image_pixels={max_pixels}: must be ≥ 1')
  _limit['max_pixels'] = int(max_pixels)


def open_image(path: Union[str, BinaryIO], name: Optional[str] = None) -> Image.Image:
  """Image.open(path) once its header says it is within the pixel limit (ImageTooLarge
  otherwise, naming name or path)."""
  image = Image.open(path)
  width, height = image.size
  if width * height > _limit['max_pixels']:
    image.close()
    raise ImageTooLarge(f'{name or path}: {width}×{height} = {width * height:,} pixels, over '
                        f'the limit of {_limit["max_pixels"]:,} (--max_image_pixels)')
  return image


_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')


def _has_alpha(image: Image.Image) -> bool:
  return image.mode in _ALPHA_MODES or (image.mode == 'P' and 'transparency' in image.info)


def _grey(values: np.ndarray) -> Image.Image:
  return Image.fromarray(values.astype(np.uint8), 'L').convert('RGB')


def rgb8(image: Image.Image) -> Image.Image:
  """The image as 8-bit RGB, upright (see the module doc for each mode)."""
  image = ImageOps.exif_transpose(image)
  if image.mode.startswith('I;16'):
    return _grey(np.asarray(image).astype(np.uint32) >> 8)
  if image.mode == 'I':
    return _grey(np.clip(np.asarray(image, np.int64), 0, 65535) >> 8)
  if image.mode == 'F':
    values = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() <= 1.0:
      values = values * 255.0
    return _grey(np.round(np.clip(values, 0.0, 255.0)))
  if _has_alpha(image):
    rgba = np.asarray(image.convert('RGBA'), np.float64)
    alpha = rgba[..., 3:] / 255.0
    return Image.fromarray(np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha))
                           .astype(np.uint8), 'RGB')
  return image if image.mode == 'RGB' else image.convert('RGB')


def needs_conversion(image: Image.Image) -> bool:
  """Whether rgb8 changes the image's pixels (else its file's bytes can be kept as they are)."""
  return image.mode != 'RGB' or image.getexif().get(ExifTags.Base.Orientation, 1) != 1
