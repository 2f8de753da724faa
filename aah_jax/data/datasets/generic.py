"""tfds builders of the generic hashing benchmarks and of a user's own image folder.

- CIFAR-10 in the hashing protocol: all 60,000 images pooled, 1,000 queries (100 per
  class) drawn with a fixed seed, the other 59,000 are the database; the query indices
  are recorded in the dataset's metadata.
- NUS-WIDE as list files of image paths with 21-label multi-hot vectors (relevant =
  share a label).
- An image folder ``root/<class>/<image>``, with ``train/`` and ``test/`` sub-folders
  or, without them, a seeded per-class split.
"""

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import tarfile

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from aah_jax.data import image_files
from aah_jax.data.datasets.archive import (ArchiveBuilder, DatasetFilesError, Item,
                                           LocalDatasetInfo, read_lines)

_VERSION = tfds.core.Version('1.0.0')
_NOTES = {'1.0.0': 'First release.'}


class AahCifar10(tfds.core.GeneratorBasedBuilder):
  """CIFAR-10, hashing protocol: 1,000 queries (100 per class), the rest is the database."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Place cifar-10-python.tar.gz in manual_dir.'
  QUERIES_PER_CLASS = 100
  SEED = 0
  CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
             'truck')
  NUM_CLASSES = len(CLASSES)

  def _info(self):
    return LocalDatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(32, 32, 3), encoding_format='png'),
            'label': tfds.features.ClassLabel(names=list(self.CLASSES)),
            'file_name': tfds.features.Text(),  # "data_batch_3[17]"
        }),
        supervised_keys=('image', 'label'), metadata=tfds.core.MetadataDict())

  def _read_batches(self, manual_dir):
    archive = os.path.join(manual_dir, 'cifar-10-python.tar.gz')
    folder = os.path.join(manual_dir, 'cifar-10-batches-py')
    names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
    images, labels, sources = [], [], []

    def add(name, raw):
      batch = pickle.loads(raw, encoding='bytes')  # the official format is a pickle
      data = np.asarray(batch[b'data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      images.append(data)
      labels.extend(int(x) for x in batch[b'labels'])
      sources.extend(f'{name}[{i}]' for i in range(len(data)))

    if os.path.isdir(folder):
      for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
          raise DatasetFilesError(f'{path} is missing')
        with open(path, 'rb') as f:
          add(name, f.read())
    elif os.path.isfile(archive):
      with tarfile.open(archive) as tar:
        for name in names:
          try:
            member = tar.extractfile(f'cifar-10-batches-py/{name}')
          except KeyError:
            raise DatasetFilesError(f'{archive} lacks cifar-10-batches-py/{name}') from None
          add(name, member.read())
    else:
      raise DatasetFilesError(f'{manual_dir} holds neither cifar-10-python.tar.gz nor '
                              f'cifar-10-batches-py/')
    return np.concatenate(images), np.asarray(labels), sources

  @classmethod
  def query_indices(cls, labels: np.ndarray) -> np.ndarray:
    """The protocol's queries: QUERIES_PER_CLASS per class, drawn with the fixed SEED."""
    rng = np.random.default_rng(cls.SEED)
    picked = [rng.choice(np.flatnonzero(labels == c), cls.QUERIES_PER_CLASS, replace=False)
              for c in range(len(cls.CLASSES))]
    return np.sort(np.concatenate(picked))

  def _split_generators(self, dl_manager):
    images, labels, sources = self._read_batches(str(dl_manager.manual_dir))
    if len(labels) != 60000:
      logging.warning('CIFAR-10: %d images found, the official set has 60,000', len(labels))
    queries = self.query_indices(labels)
    database = np.setdiff1d(np.arange(len(labels)), queries)
    self.info.metadata['query_indices'] = queries.tolist()
    self.info.metadata['query_seed'] = self.SEED
    return {'query': self._generate_examples(images, labels, sources, queries),
            'database': self._generate_examples(images, labels, sources, database)}

  def _generate_examples(self, images, labels, sources, indices):
    for i in indices:
      png = io.BytesIO()
      Image.fromarray(images[i]).save(png, format='PNG')
      yield sources[i], {'image': png.getvalue(), 'label': int(labels[i]),
                         'file_name': sources[i]}


class AahNuswide(ArchiveBuilder):
  """NUS-WIDE, 21 most frequent concepts: ``database.txt`` and ``test.txt`` in the
  dataset folder, one image per line: its path relative to the folder, then 21 0/1
  labels (the list format of the common hashing releases)."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Place the NUS-WIDE images and the list files database.txt, '
                                  'test.txt (path + 21 labels per line) in manual_dir/nuswide.')
  FOLDER, ARCHIVES, MARKER = 'nuswide', (), 'database.txt'
  SPLITS = {'database': None, 'test': None}  # releases differ in size (e.g. 193,734 / 2,100)
  NUM_LABELS = 21

  def _features(self):
    return {'label': tfds.features.Tensor(shape=(self.NUM_LABELS,), dtype=np.int32)}

  def _list_split(self, root, split):
    listing = os.path.join(root, f'{split}.txt')
    items = []
    for row in read_lines(listing):
      if len(row) != 1 + self.NUM_LABELS:
        raise DatasetFilesError(f'{listing}: "{" ".join(row)[:80]}" is not a path and '
                                f'{self.NUM_LABELS} labels')
      items.append(Item(row[0], os.path.join(root, row[0]),
                        np.asarray(row[1:], np.int32)))
    return items


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
  """A folder of class sub-folders; test_fraction applies when it has no train/ and test/."""

  root: str = ''
  test_fraction: float = 0.2
  seed: int = 0


def image_folder_config(root: str, test_fraction: float = 0.2, seed: int = 0) -> ImageFolderConfig:
  """The builder config of a folder: named after it (and a hash of its absolute path)."""
  root = os.path.abspath(root)
  digest = hashlib.sha256(f'{root}|{test_fraction}|{seed}'.encode()).hexdigest()[:8]
  base = ''.join(c if c.isalnum() else '_' for c in os.path.basename(root.rstrip('/')))
  return ImageFolderConfig(name=f'{base or "root"}_{digest}', root=root,
                           test_fraction=test_fraction, seed=seed,
                           description=f'Images of {root}.')


class AahImageFolder(ArchiveBuilder):
  """Your own images: root/<class>/<image>, or root/train/<class>/… and root/test/<class>/…
  (train is the database, test the queries). Without train/ and test/, a seeded
  test_fraction of each class becomes the queries."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  SPLITS = {'train': None, 'test': None}

  def _has_split_folders(self):
    root = self.builder_config.root
    return all(os.path.isdir(os.path.join(root, s)) for s in ('train', 'test'))

  def _classes(self):
    root = self.builder_config.root
    if not os.path.isdir(root):
      raise DatasetFilesError(f'image folder {root!r} does not exist')
    folders = [os.path.join(root, s) for s in ('train', 'test')] if self._has_split_folders() \
        else [root]
    return sorted({d for f in folders for d in os.listdir(f) if os.path.isdir(os.path.join(f, d))})

  def _features(self):
    return {'label': tfds.features.ClassLabel(names=self._classes())}

  def _root(self, dl_manager):
    del dl_manager
    return self.builder_config.root

  def _list_split(self, root, split):
    classes = {name: i for i, name in enumerate(self._classes())}
    if self._has_split_folders():
      paths, labels, names = image_files.image_folder(os.path.join(root, split))
      return [Item(os.path.relpath(p, root), p, classes[names[label]])
              for p, label in zip(paths, labels) if label >= 0]
    paths, labels, names = image_files.image_folder(root)
    rng = np.random.default_rng(self.builder_config.seed)
    items = []
    for label in range(len(names)):
      members = np.flatnonzero(labels == label)
      test = set(rng.choice(members, int(round(len(members) * self.builder_config.test_fraction)),
                            replace=False).tolist())
      items += [Item(os.path.relpath(paths[i], root), paths[i], classes[names[label]])
                for i in members if (i in test) == (split == 'test')]
    return items

  def preflight(self):
    """The folder's listing and layout checked before tfds creates anything."""
    root = self.builder_config.root
    self._check(root, {split: self._list_split(root, split) for split in self.SPLITS})

  def _check(self, root: str, listings: dict):
    """The layout, said plainly (a bare 'No examples were yielded' used to stand for all)."""
    layout = (f'expected {root}/<class>/<image> (a seeded {self.builder_config.test_fraction:g} '
              f'of each class become the queries) or {root}/train/<class>/<image> and '
              f'{root}/test/<class>/<image>')
    classes = self._classes()
    if not classes:
      raise DatasetFilesError(f'{root} has no class folders: {layout}')
    for split, items in listings.items():
      if items:
        continue
      if self._has_split_folders():
        raise DatasetFilesError(f'{os.path.join(root, split)} has no images in class folders: '
                                f'{layout}')
      counts = collections.Counter(item.label for item in listings['train'])
      smallest = min(classes, key=lambda c: counts.get(classes.index(c), 0))
      need = int(np.floor(0.5 / self.builder_config.test_fraction)) + 1  # round(need·f) ≥ 1
      raise DatasetFilesError(
          f'the {split} split of {root} would be empty: a class needs at least {need} images '
          f'to give one query (class {smallest!r} has {counts.get(classes.index(smallest), 0)}); '
          f'add images, or give train/ and test/ folders: {layout}')
    if len(classes) == 1:
      logging.warning('%s has one class only (%s): every database image is relevant to '
                      'every query, so every mAP is 1', root, classes[0])
    super()._check(root, listings)

  def _metadata(self, root):
    return {'class_names': self._classes(), 'root': root}
