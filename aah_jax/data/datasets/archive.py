"""What every archive-based builder shares: finding the official files in the manual
directory, checking them, and reading images safely.

A builder lists its items per split (``_list_split``: key, image path, label, extra
features); this base class then checks the listing against the official counts, stops
on files the lists name but the folder lacks, decodes every image (a corrupt one stops
the build with its path, unless ``skip_corrupt`` is set, which records it in the
dataset's metadata instead) and yields RGB image bytes: the original file when it is an
RGB JPEG or PNG, otherwise the image converted to RGB and stored as PNG.

Nothing is downloaded: the user places the official archive or its extracted folder in
the manual directory (``aah-prepare --manual_dir=DIR``).
"""

import dataclasses
import io
import os
import tarfile
import tempfile
from typing import Any, Callable, Iterator, Optional

from absl import logging
from PIL import Image
import tensorflow_datasets as tfds

from aah_jax.data import image_decode
from aah_jax.data.image_files import printable_name


class LocalDatasetInfo(tfds.core.DatasetInfo):
  """The DatasetInfo of our builders, which read local files only. tfds's own looks for
  pre-computed info on its GCS bucket whenever a builder is made for a dataset not yet
  prepared, and makes an empty temporary folder for it each time (``mkdtemp('tfds')``,
  left behind, even with GCS access off); ours has none to find."""

  def initialize_from_bucket(self) -> None:
    pass


class DatasetFilesError(FileNotFoundError):
  """The manual directory lacks files the dataset needs."""


class CorruptImageError(ValueError):
  """An image file that cannot be decoded."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One example to write: its key (the file's path relative to the dataset folder, or
  another unique name), image file, label and extra features."""

  key: str
  path: str
  label: Any
  features: dict = dataclasses.field(default_factory=dict)
  transform: Optional[Callable[[Image.Image], Image.Image]] = None


def find_root(manual_dir: str, folder: str, archives: tuple[str, ...], marker: str,
              extract_to: str) -> str:
  """The extracted dataset folder: manual_dir/folder (or manual_dir itself) if it holds
  marker, else an official archive from manual_dir extracted under extract_to."""
  if not manual_dir or not os.path.isdir(manual_dir):
    raise DatasetFilesError(f'manual directory {manual_dir!r} does not exist')
  for candidate in (os.path.join(manual_dir, folder), manual_dir):
    if os.path.exists(os.path.join(candidate, marker)):
      return candidate
  for name in archives:
    archive = os.path.join(manual_dir, name)
    if os.path.isfile(archive):
      logging.info('extracting %s', archive)
      os.makedirs(extract_to, exist_ok=True)
      target = tempfile.mkdtemp(dir=extract_to)
      with tarfile.open(archive) as tar:
        tar.extractall(target, filter='data')
      for candidate in (os.path.join(target, folder), target):
        if os.path.exists(os.path.join(candidate, marker)):
          return candidate
      raise DatasetFilesError(f'{archive} does not contain {folder}/{marker}')
  raise DatasetFilesError(
      f'{manual_dir} holds neither {folder}/ (with {marker}) nor any of {list(archives)}')


def read_lines(path: str) -> list[list[str]]:
  """The whitespace-split non-empty lines of a text file; a missing file names itself."""
  if not os.path.isfile(path):
    raise DatasetFilesError(f'{path} is missing')
  with open(path) as f:
    return [line.split() for line in f if line.strip()]


def image_bytes(path: str, transform=None) -> bytes:
  """RGB image bytes of a file (decoded fully, so corrupt files fail here; every mode made
  8-bit RGB by image_decode.rgb8)."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    with image_decode.open_image(io.BytesIO(data), path) as image:
      image.load()
      if (transform is None and image.format in ('JPEG', 'PNG')
          and not image_decode.needs_conversion(image)):
        return data
      image = image_decode.rgb8(image)
      if transform is not None:
        image = transform(image)
      out = io.BytesIO()
      image.save(out, format='PNG')
      return out.getvalue()
  except image_decode.ImageTooLarge as error:
    raise CorruptImageError(str(error)) from None
  except (OSError, SyntaxError, ValueError) as error:
    raise CorruptImageError(f'{path}: cannot be decoded as an image ({error})') from None


class ArchiveBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the builders that read official archives from the manual directory.

  Subclasses set FOLDER, ARCHIVES, MARKER, SPLITS (split → official count), define
  ``_features()`` and ``_list_split(root, split)``.
  """

  FOLDER: str = ''
  ARCHIVES: tuple[str, ...] = ()
  MARKER: str = ''
  SPLITS: dict = {}
  skip_corrupt = False  # set on the instance (aah-prepare --skip_corrupt)

  def _features(self) -> dict:
    raise NotImplementedError

  def _list_split(self, root: str, split: str) -> list[Item]:
    raise NotImplementedError

  def official_counts(self) -> dict:
    """split → its official number of examples (None: not fixed), for this builder config."""
    return self.SPLITS

  def _metadata(self, root: str) -> dict:
    """Extra metadata (class names, attribute names, …) read from the root folder."""
    del root
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    return LocalDatasetInfo(
        builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'file_name': tfds.features.Text(),  # relative to the dataset folder
            **self._features()}),
        supervised_keys=('image', 'label'), metadata=tfds.core.MetadataDict())

  def _root(self, dl_manager) -> str:
    return find_root(str(dl_manager.manual_dir), self.FOLDER, self.ARCHIVES, self.MARKER,
                     os.path.join(str(dl_manager.download_dir), 'extracted'))

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    listings = {split: self._list_split(root, split) for split in self.SPLITS}
    self._check(root, listings)
    self.info.metadata.update(self._metadata(root))
    self.info.metadata['skipped_files'] = []
    return {split: self._generate_examples(items) for split, items in listings.items()}

  def _check(self, root: str, listings: dict):
    escaped = [printable_name(item.key) for items in listings.values() for item in items
               if printable_name(item.key) != item.key]
    if escaped:
      logging.warning('%d file name(s) are not UTF-8; kept, with their undecodable bytes '
                      'written as \\xNN in file_name: %s', len(escaped), ', '.join(escaped[:20]))
    missing = [item.path for items in listings.values() for item in items
               if not os.path.isfile(item.path)]
    if missing:
      raise DatasetFilesError(
          f'{len(missing)} image file(s) named by the lists in {root} are missing, e.g. '
          + ', '.join(missing[:5]))
    for split, official in self.official_counts().items():
      found = len(listings[split])
      if official is not None and found != official:
        logging.warning('%s %s: %d examples listed, the official split has %d (a partial '
                        'copy?)', self.name, split, found, official)

  def _generate_examples(self, items: list[Item]) -> Iterator[tuple[str, dict]]:
    for item in items:
      try:
        data = image_bytes(item.path, item.transform)
      except CorruptImageError as error:
        if not self.skip_corrupt:
          raise
        logging.warning('skipping %s', error)
        self.info.metadata['skipped_files'].append(item.path)
        continue
      name = printable_name(item.key)
      yield name, {'image': data, 'file_name': name, 'label': item.label, **item.features}

