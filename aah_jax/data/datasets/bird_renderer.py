"""Procedural fine-grained "birds": a sub-category is a combination of part attributes.

Each image draws one bird whose parts show its class's attribute values, under
strong nuisance variation (pose, scale, position, mirror, cluttered textured
background, lighting and colour jitter, partial occlusion), so that telling
classes apart needs the parts, as in fine-grained recognition.
"""

import itertools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ATTRIBUTES = (
    ('body_shape', ('round', 'slender')),
    ('body_colour', ('red', 'blue', 'yellow', 'green')),
    ('head_colour', ('black', 'white', 'orange')),
    ('wing_pattern', ('plain', 'striped', 'spotted')),
    ('tail_shape', ('fan', 'pointed')),
    ('beak_length', ('short', 'long')),
)
ATTRIBUTE_NAMES = tuple(name for name, _ in ATTRIBUTES)

_BODY_RGB = {'red': (205, 45, 40), 'blue': (45, 85, 210), 'yellow': (235, 205, 45),
             'green': (55, 165, 70)}
_HEAD_RGB = {'black': (25, 25, 30), 'white': (245, 245, 240), 'orange': (245, 135, 25)}
_SUPERSAMPLE = 4


def all_combinations() -> list[tuple[int, ...]]:
  return list(itertools.product(*(range(len(values)) for _, values in ATTRIBUTES)))


def choose_classes(num_classes: int, seed: int) -> np.ndarray:
  """num_classes distinct attribute combinations, (num_classes, 6) int32, sorted."""
  combos = all_combinations()
  if not 1 <= num_classes <= len(combos):
    raise ValueError(f'num_classes={num_classes}: must be in [1, {len(combos)}]')
  picked = np.random.default_rng(seed).choice(len(combos), num_classes, replace=False)
  return np.array(sorted(combos[i] for i in picked), np.int32)


def class_name(attributes) -> str:
  return '-'.join(values[a] for (_, values), a in zip(ATTRIBUTES, attributes))


def _shade(rgb, factor):
  return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)


def _random_rgb(rng):
  return tuple(int(c) for c in rng.integers(0, 256, 3))


def _background(rng, size):
  """A colour gradient with random clutter: twigs, leaves, blobs."""
  c0, c1 = np.array(_random_rgb(rng)), np.array(_random_rgb(rng))
  t = np.linspace(0, 1, size)[:, None, None]
  angle = rng.uniform(0, 2 * math.pi)
  ramp = (np.cos(angle) * t + np.sin(angle) * t.transpose(1, 0, 2)) / 2 + 0.5
  pixels = c0 * (1 - ramp) + c1 * ramp
  image = Image.fromarray(pixels.astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(rng.integers(4, 11)):
    colour = _random_rgb(rng)
    x0, y0 = rng.uniform(0, size, 2)
    kind = rng.integers(3)
    if kind == 0:
      x1, y1 = x0 + rng.normal(0, size / 3), y0 + rng.normal(0, size / 3)
      draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, size // 24 + 2)))
    elif kind == 1:
      r = rng.uniform(size / 30, size / 8)
      draw.ellipse((x0 - r, y0 - r / 2, x0 + r, y0 + r / 2), fill=colour)
    else:
      r = rng.uniform(size / 40, size / 12)
      draw.rectangle((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
  return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, size / 200)))


def _draw_bird(attributes, rng, size):
  """The bird on a transparent canvas, facing right, centred."""
  body_shape, body_colour, head_colour, wing_pattern, tail_shape, beak_length = (
      values[a] for (_, values), a in zip(ATTRIBUTES, attributes))
  layer = Image.new('RGBA', (size, size), (0, 0, 0, 0))
  draw = ImageDraw.Draw(layer)
  cx, cy = size / 2, size / 2
  body = _BODY_RGB[body_colour]
  rx, ry = (0.22, 0.19) if body_shape == 'round' else (0.31, 0.12)
  rx, ry = rx * size, ry * size
  # Tail behind the body.
  tx = cx - rx * 0.85
  if tail_shape == 'fan':
    tail = [(tx, cy), (tx - 0.2 * size, cy - 0.14 * size), (tx - 0.2 * size, cy + 0.14 * size)]
  else:
    tail = [(tx, cy - 0.03 * size), (tx - 0.3 * size, cy + 0.01 * size), (tx, cy + 0.04 * size)]
  draw.polygon(tail, fill=_shade(body, 0.7))
  draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=body)
  # Wing on the body, with its pattern.
  wx0, wx1 = cx - rx * 0.7, cx + rx * 0.35
  wy0, wy1 = cy - ry * 0.55, cy + ry * 0.45
  draw.ellipse((wx0, wy0, wx1, wy1), fill=_shade(body, 0.6))
  if wing_pattern == 'striped':
    for i in range(1, 4):
      x = wx0 + (wx1 - wx0) * i / 4
      draw.line((x, wy0 + 2, x - 0.03 * size, wy1 - 2), fill=(15, 15, 15), width=max(1, size // 22))
  elif wing_pattern == 'spotted':
    r = 0.04 * size
    for fx, fy in ((0.28, 0.4), (0.62, 0.65), (0.7, 0.25)):
      x, y = wx0 + (wx1 - wx0) * fx, wy0 + (wy1 - wy0) * fy
      draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, 250, 250))
  # Head in front, with the beak and an eye.
  hr = 0.11 * size
  hx, hy = cx + rx * 0.85, cy - ry * 0.75
  beak = 0.06 * size if beak_length == 'short' else 0.22 * size
  draw.polygon([(hx + hr * 0.8, hy - 0.03 * size), (hx + hr * 0.8 + beak, hy + 0.01 * size),
                (hx + hr * 0.8, hy + 0.04 * size)], fill=(90, 60, 30))
  draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=_HEAD_RGB[head_colour])
  er = 0.018 * size
  eye = (200, 30, 30) if head_colour == 'black' else (10, 10, 10)
  draw.ellipse((hx + hr * 0.3 - er, hy - hr * 0.2 - er, hx + hr * 0.3 + er, hy - hr * 0.2 + er),
               fill=eye)
  return layer


def render(attributes, seed_sequence, image_size: int) -> np.ndarray:
  """One (image_size, image_size, 3) uint8 image of a bird with these attribute values."""
  rng = np.random.default_rng(seed_sequence)
  size = image_size * _SUPERSAMPLE
  canvas = _background(rng, size)
  bird = _draw_bird(attributes, rng, size)
  # Pose: mirror, rotation, scale, position.
  if rng.random() < 0.5:
    bird = bird.transpose(Image.FLIP_LEFT_RIGHT)
  bird = bird.rotate(rng.uniform(-30, 30), resample=Image.BILINEAR)
  scale = rng.uniform(0.8, 1.2)
  scaled = max(8, int(size * scale))
  bird = bird.resize((scaled, scaled), Image.BILINEAR)
  shift = rng.uniform(-0.12, 0.12, 2) * size
  x, y = int((size - scaled) / 2 + shift[0]), int((size - scaled) / 2 + shift[1])
  canvas.paste(bird, (x, y), bird)
  # Partial occlusion by a branch or a leaf.
  if rng.random() < 0.4:
    draw = ImageDraw.Draw(canvas)
    colour = _shade(_random_rgb(rng), 0.6)
    if rng.random() < 0.5:
      y0 = rng.uniform(0.3, 0.7) * size
      draw.line((0, y0, size, y0 + rng.normal(0, size / 6)), fill=colour,
                width=int(rng.uniform(0.04, 0.09) * size))
    else:
      cx, cy = rng.uniform(0.25, 0.75, 2) * size
      r = rng.uniform(0.08, 0.15) * size
      draw.ellipse((cx - r, cy - r * 0.6, cx + r, cy + r * 0.6), fill=colour)
  image = np.asarray(canvas.resize((image_size, image_size), Image.LANCZOS), np.float32)
  # Lighting: brightness, contrast, per-channel colour cast, sensor noise.
  mean = image.mean()
  image = (image - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
  image = image * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 4.0, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)
