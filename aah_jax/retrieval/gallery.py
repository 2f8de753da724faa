"""Retrieval galleries: each query with its ranked neighbours, as one PNG (PIL only)."""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

THUMB = 96
CAPTION = 14
BORDER = 4
COLORS = {True: (40, 170, 60), False: (210, 40, 40), None: (150, 150, 150)}


@dataclasses.dataclass
class Tile:
  """One picture of the gallery: an RGB array, a caption, and whether it is a correct
  neighbour (green), a wrong one (red) or neither (grey)."""

  image: np.ndarray
  caption: str = ''
  correct: Optional[bool] = None


def _tile(tile: Tile) -> Image.Image:
  picture = Image.fromarray(np.asarray(tile.image, np.uint8)).convert('RGB')
  picture = picture.resize((THUMB, THUMB), Image.BILINEAR)
  framed = Image.new('RGB', (THUMB + 2 * BORDER, THUMB + 2 * BORDER + CAPTION), 'white')
  ImageDraw.Draw(framed).rectangle([0, 0, THUMB + 2 * BORDER - 1, THUMB + 2 * BORDER - 1],
                                   fill=COLORS[tile.correct])
  framed.paste(picture, (BORDER, BORDER))
  ImageDraw.Draw(framed).text((2, THUMB + 2 * BORDER), tile.caption[:18], fill='black')
  return framed


def render_gallery(rows: Sequence[tuple[Tile, Sequence[Tile]]], path: str):
  """One row per query: the query, a gap, then its neighbours in rank order. Written
  to a temporary file and renamed."""
  width = THUMB + 2 * BORDER
  height = width + CAPTION
  columns = 1 + max(len(neighbours) for _, neighbours in rows)
  sheet = Image.new('RGB', (columns * width + width // 2, len(rows) * height), 'white')
  for r, (query, neighbours) in enumerate(rows):
    sheet.paste(_tile(query), (0, r * height))
    for c, neighbour in enumerate(neighbours):
      sheet.paste(_tile(neighbour), ((c + 1) * width + width // 2, r * height))
  tmp = f'{path}.tmp.png'
  sheet.save(tmp)
  os.replace(tmp, path)
