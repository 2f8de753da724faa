"""Every image mode PIL opens becomes the right 8-bit RGB (image_decode.rgb8), the same on
the dataset builders' path (archive.image_bytes) and the query path (image_files.load_rgb);
each mode is checked against a reference conversion written here in NumPy."""

import io
import struct
import zlib

import numpy as np
from PIL import ExifTags, Image
import pytest

from aah_jax.data import image_decode, image_files
from aah_jax.data.datasets import archive

RNG = np.random.default_rng(0)


def png16(values: np.ndarray) -> bytes:
  """A 16-bit PNG (grey for (H, W), RGB for (H, W, 3)), written by hand: PIL writes none."""
  height, width = values.shape[:2]
  colour_type = 2 if values.ndim == 3 else 0
  raw = b''.join(b'\x00' + values[y].astype('>u2').tobytes() for y in range(height))

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

  header = struct.pack('>IIBBBBB', width, height, 16, colour_type, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw))
          + chunk(b'IEND', b''))


def grey3(values) -> np.ndarray:
  return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def over_white(rgb, alpha) -> np.ndarray:
  a = np.asarray(alpha, np.float64)[..., None] / 255.0
  return np.round(np.asarray(rgb, np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def both_paths(tmp_path, data: bytes, name: str) -> list[np.ndarray]:
  """The pixels of a file as the builders store them and as a query reads them."""
  path = tmp_path / name
  path.write_bytes(data)
  with Image.open(io.BytesIO(archive.image_bytes(str(path)))) as stored:
    stored = np.asarray(stored.convert('RGB'))  # the stored bytes are 8-bit RGB already
  return [stored, image_files.load_rgb(str(path))]


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
  out = io.BytesIO()
  image.save(out, format=fmt, **kwargs)
  return out.getvalue()


GREY16 = RNG.integers(0, 65536, (6, 7)).astype(np.uint16)
RGB16 = RNG.integers(0, 65536, (6, 7, 3)).astype(np.uint16)
RGBA = RNG.integers(0, 256, (6, 7, 4)).astype(np.uint8)
LA = RNG.integers(0, 256, (6, 7, 2)).astype(np.uint8)


@pytest.mark.parametrize('name,data,expected', [
    # 16-bit grey: the high byte (the bug: PIL's convert('RGB') made it all 255).
    ('grey16.png', png16(GREY16), grey3(GREY16 >> 8)),
    # 16-bit RGB: PIL itself keeps the high byte.
    ('rgb16.png', png16(RGB16), (RGB16 >> 8).astype(np.uint8)),
    ('rgba.png', encoded(Image.fromarray(RGBA, 'RGBA'), 'PNG'), over_white(RGBA[..., :3],
                                                                          RGBA[..., 3])),
    ('la.png', encoded(Image.fromarray(LA, 'LA'), 'PNG'), over_white(grey3(LA[..., 0]),
                                                                    LA[..., 1])),
])
def test_file_modes_on_both_paths(tmp_path, name, data, expected):
  for pixels in both_paths(tmp_path, data, name):
    np.testing.assert_array_equal(pixels, expected)


def test_a_16_bit_picture_gives_the_pixels_of_its_8_bit_copy(tmp_path):
  eight = encoded(Image.fromarray((GREY16 >> 8).astype(np.uint8), 'L'), 'PNG')
  for sixteen, eight_bit in zip(both_paths(tmp_path, png16(GREY16), 'a.png'),
                                both_paths(tmp_path, eight, 'b.png')):
    np.testing.assert_array_equal(sixteen, eight_bit)


def test_32_bit_integer_is_read_as_16_bit_data():
  values = np.array([[-5, 0, 255, 256], [65535, 65536, 10 ** 7, 40000]], np.int32)
  expected = grey3(np.clip(values, 0, 65535) >> 8)
  np.testing.assert_array_equal(np.asarray(image_decode.rgb8(Image.fromarray(values, 'I'))),
                                expected)


@pytest.mark.parametrize('values,expected', [
    (np.array([[0.0, 0.5], [0.999, 1.0]], np.float32), [[0, 128], [255, 255]]),  # ×255
    (np.array([[-3.0, 12.4], [300.0, np.nan]], np.float32), [[0, 12], [255, 0]]),  # clipped
])
def test_32_bit_float(values, expected):
  image = Image.fromarray(values, 'F')
  np.testing.assert_array_equal(np.asarray(image_decode.rgb8(image)), grey3(expected))


def test_palette_with_a_transparent_index_is_composited_over_white():
  palette = [10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6)
  image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), 'P')
  image.putpalette(palette)
  image.info['transparency'] = 1
  expected = np.array([[[10, 20, 30], [255, 255, 255]], [[255, 255, 255], [10, 20, 30]]],
                      np.uint8)
  np.testing.assert_array_equal(np.asarray(image_decode.rgb8(image)), expected)


def test_cmyk_primaries_and_bilevel():
  cmyk = np.array([[[255, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0]]], np.uint8)
  expected = np.array([[[0, 255, 255], [0, 0, 0], [255, 255, 255]]], np.uint8)
  np.testing.assert_array_equal(np.asarray(image_decode.rgb8(Image.fromarray(cmyk, 'CMYK'))),
                                expected)
  bilevel = Image.new('1', (2, 1))
  bilevel.putpixel((0, 0), 1)
  np.testing.assert_array_equal(np.asarray(image_decode.rgb8(bilevel)), grey3([[255, 0]]))


def test_exif_rotated_jpeg_stands_upright_on_both_paths(tmp_path):
  picture = Image.fromarray(RNG.integers(0, 256, (16, 24, 3)).astype(np.uint8), 'RGB')
  exif = Image.Exif()
  exif[ExifTags.Base.Orientation] = 6  # stored sideways: display rotated 90° clockwise
  data = encoded(picture, 'JPEG', exif=exif, quality=95)
  with Image.open(io.BytesIO(data)) as raw:
    as_stored = np.asarray(raw.convert('RGB'))  # the decoded pixels, not rotated
  upright = np.rot90(as_stored, k=-1)  # 90° clockwise
  for pixels in both_paths(tmp_path, data, 'phone.jpg'):
    assert pixels.shape == (24, 16, 3)
    np.testing.assert_array_equal(pixels, upright)


def test_plain_rgb_files_are_stored_as_they_are(tmp_path):
  data = encoded(Image.fromarray(RGBA[..., :3], 'RGB'), 'PNG')
  path = tmp_path / 'plain.png'
  path.write_bytes(data)
  assert archive.image_bytes(str(path)) == data  # not decoded and re-encoded


@pytest.fixture
def small_pixel_limit():
  image_decode.set_max_pixels(50 * 50)
  yield 50 * 50
  image_decode.set_max_pixels(image_decode.DEFAULT_MAX_PIXELS)


def test_an_image_over_the_pixel_limit_is_named_on_every_path(tmp_path, small_pixel_limit):
  """Checked from the header before decoding; the error names the file and the flag (PIL's
  own decompression-bomb error named neither and escaped --skip_corrupt)."""
  path = tmp_path / 'large.png'
  Image.new('RGB', (60, 50)).save(path)
  Image.new('RGB', (50, 50)).save(tmp_path / 'fits.png')
  message = rf'{path}: 60×50 = 3,000 pixels, over the limit of 2,500 \(--max_image_pixels\)'
  with pytest.raises(archive.CorruptImageError, match=message):  # --skip_corrupt skips these
    archive.image_bytes(str(path))
  with pytest.raises(image_decode.ImageTooLarge, match=message):
    image_files.load_rgb(str(path))
  with pytest.raises(ValueError, match=message):
    image_files.check_readable([str(tmp_path / 'fits.png'), str(path)])
  assert image_files.load_rgb(str(tmp_path / 'fits.png')).shape == (50, 50, 3)
