"""tfds builders of the fine-grained datasets of the protocol, from their official files.

Each reads the official archive (or its extracted folder) from the manual directory;
the database is the training split, the queries the test split. tfds names carry an
``aah_`` prefix so that they never clash with tfds' own builders.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from aah_jax.data.datasets.archive import ArchiveBuilder, DatasetFilesError, Item, read_lines

_VERSION = tfds.core.Version('1.0.0')
_NOTES = {'1.0.0': 'First release.'}


class AahCub200(ArchiveBuilder):
  """CUB-200-2011: 200 bird species; 312 binary attributes and a bounding box per image."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Place CUB_200_2011.tgz (or its extracted folder) in manual_dir.'
  FOLDER, ARCHIVES, MARKER = 'CUB_200_2011', ('CUB_200_2011.tgz',), 'images.txt'
  SPLITS = {'train': 5994, 'test': 5794}
  NUM_CLASSES = 200
  NUM_ATTRIBUTES = 312

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            'attributes': tfds.features.Tensor(shape=(self.NUM_ATTRIBUTES,), dtype=np.int32),
            'bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32)}

  def _tables(self, root):
    images = dict(read_lines(os.path.join(root, 'images.txt')))
    labels = {i: int(c) - 1 for i, c in read_lines(os.path.join(root, 'image_class_labels.txt'))}
    is_train = {i: s == '1' for i, s in read_lines(os.path.join(root, 'train_test_split.txt'))}
    boxes = {row[0]: np.asarray(row[1:5], np.float32)
             for row in read_lines(os.path.join(root, 'bounding_boxes.txt'))}
    attributes = {i: np.zeros(self.NUM_ATTRIBUTES, np.int32) for i in images}
    for row in read_lines(os.path.join(root, 'attributes', 'image_attribute_labels.txt')):
      attributes[row[0]][int(row[1]) - 1] = int(row[2])
    return images, labels, is_train, boxes, attributes

  def _list_split(self, root, split):
    images, labels, is_train, boxes, attributes = self._tables(root)
    return [Item(path, os.path.join(root, 'images', path), labels[i],
                 {'attributes': attributes[i], 'bbox': boxes[i]})
            for i, path in images.items() if is_train[i] == (split == 'train')]

  def _metadata(self, root):
    classes = [name for _, name in read_lines(os.path.join(root, 'classes.txt'))]
    names_file = next((p for p in (os.path.join(root, 'attributes.txt'),
                                   os.path.join(os.path.dirname(root), 'attributes.txt'),
                                   os.path.join(root, 'attributes', 'attributes.txt'))
                       if os.path.isfile(p)), None)
    attribute_names = ([name for _, name in read_lines(names_file)] if names_file else [])
    return {'class_names': classes, 'attribute_names': attribute_names}


class AahAircraft(ArchiveBuilder):
  """FGVC-Aircraft 2013b, variant level (100 classes); config `crop_banner` removes the
  20-pixel copyright banner at the bottom of every image."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Place fgvc-aircraft-2013b.tar.gz (or its extracted folder) '
                                  'in manual_dir.')
  FOLDER, ARCHIVES = 'fgvc-aircraft-2013b', ('fgvc-aircraft-2013b.tar.gz',)
  MARKER = os.path.join('data', 'variants.txt')
  SPLITS = {'train': 6667, 'test': 3333}
  NUM_CLASSES = 100
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='default', description='Images as distributed.'),
      tfds.core.BuilderConfig(name='crop_banner', description='The bottom 20 pixels removed.'),
  ]
  BANNER = 20

  def _variants(self, root):
    with open(os.path.join(root, 'data', 'variants.txt')) as f:
      return [line.strip() for line in f if line.strip()]

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}

  def _list_split(self, root, split):
    index = {name: i for i, name in enumerate(self._variants(root))}
    listing = os.path.join(root, 'data', f'images_variant_{"trainval" if split == "train" else "test"}.txt')
    if not os.path.isfile(listing):
      raise DatasetFilesError(f'{listing} is missing')
    crop = None
    if self.builder_config.name == 'crop_banner':
      crop = lambda image: image.crop((0, 0, image.width, image.height - self.BANNER))
    items = []
    with open(listing) as f:
      for line in f:
        if line.strip():
          image_id, variant = line.strip().split(' ', 1)  # variant names contain spaces
          path = os.path.join('data', 'images', f'{image_id}.jpg')
          items.append(Item(path, os.path.join(root, path), index[variant], transform=crop))
    return items

  def _metadata(self, root):
    return {'class_names': self._variants(root)}


class AahFood101(ArchiveBuilder):
  """Food-101: 101 dishes, 750 training and 250 test images each."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Place food-101.tar.gz (or its extracted folder) in manual_dir.'
  FOLDER, ARCHIVES = 'food-101', ('food-101.tar.gz',)
  MARKER = os.path.join('meta', 'classes.txt')
  SPLITS = {'train': 75750, 'test': 25250}
  NUM_CLASSES = 101

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}

  def _classes(self, root):
    return [row[0] for row in read_lines(os.path.join(root, 'meta', 'classes.txt'))]

  def _list_split(self, root, split):
    index = {name: i for i, name in enumerate(self._classes(root))}
    items = []
    for (name,) in read_lines(os.path.join(root, 'meta', f'{split}.txt')):
      path = os.path.join('images', f'{name}.jpg')
      items.append(Item(path, os.path.join(root, path), index[name.split('/')[0]]))
    return items

  def _metadata(self, root):
    return {'class_names': self._classes(root)}


class AahNabirds(ArchiveBuilder):
  """NABirds: 555 leaf classes (the label ids of image_class_labels.txt, remapped in
  increasing order to 0 … 554)."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Place nabirds.tar.gz (or its extracted folder) in manual_dir.'
  FOLDER, ARCHIVES, MARKER = 'nabirds', ('nabirds.tar.gz',), 'images.txt'
  SPLITS = {'train': 23929, 'test': 24633}
  NUM_CLASSES = 555

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}

  def _leaf_ids(self, root):
    raw = {i: int(c) for i, c in read_lines(os.path.join(root, 'image_class_labels.txt'))}
    leaves = sorted(set(raw.values()))
    return raw, {c: k for k, c in enumerate(leaves)}

  def _list_split(self, root, split):
    images = dict(read_lines(os.path.join(root, 'images.txt')))
    is_train = {i: s == '1' for i, s in read_lines(os.path.join(root, 'train_test_split.txt'))}
    raw, remap = self._leaf_ids(root)
    if len(remap) > 555:
      raise DatasetFilesError(f'{root}/image_class_labels.txt has {len(remap)} classes, '
                              f'NABirds has 555 leaf classes')
    return [Item(path, os.path.join(root, 'images', path), remap[raw[i]])
            for i, path in images.items() if is_train[i] == (split == 'train')]

  def _metadata(self, root):
    _, remap = self._leaf_ids(root)
    names = {}
    classes_file = os.path.join(root, 'classes.txt')
    if os.path.isfile(classes_file):
      with open(classes_file) as f:
        for line in f:
          if line.strip():
            class_id, name = line.strip().split(' ', 1)
            names[int(class_id)] = name
    return {'class_names': [names.get(c, str(c)) for c in sorted(remap)],
            'original_class_ids': sorted(remap)}


class AahVegfru(ArchiveBuilder):
  """VegFru: 292 classes of vegetables and fruit (vegfru_list/vegfru_{train,test}.txt)."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Place the extracted VegFru folder (veg200_images/, '
                                  'fru92_images/, vegfru_list/) in manual_dir.')
  FOLDER, ARCHIVES = 'vegfru', ('vegfru.tar.gz',)
  MARKER = os.path.join('vegfru_list', 'vegfru_train.txt')
  SPLITS = {'train': 29200, 'test': 116931}
  NUM_CLASSES = 292

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}

  def _list_split(self, root, split):
    return [Item(path, os.path.join(root, path), int(label))
            for path, label in read_lines(os.path.join(root, 'vegfru_list', f'vegfru_{split}.txt'))]


class AahStanfordDogs(ArchiveBuilder):
  """Stanford Dogs: 120 breeds; splits from train_list.mat / test_list.mat (scipy reads them)."""

  VERSION, RELEASE_NOTES = _VERSION, _NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Place images.tar and lists.tar, extracted (Images/, '
                                  'train_list.mat, test_list.mat), in manual_dir.')
  FOLDER, ARCHIVES, MARKER = 'stanford_dogs', (), 'train_list.mat'
  SPLITS = {'train': 12000, 'test': 8580}
  NUM_CLASSES = 120

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)}

  def _list_split(self, root, split):
    import scipy.io  # pylint: disable=g-import-not-at-top
    lists = scipy.io.loadmat(os.path.join(root, f'{split}_list.mat'))
    files = [str(np.ravel(entry)[0]) for entry in np.ravel(lists['file_list'])]
    labels = np.ravel(lists['labels']).astype(int) - 1
    return [Item(os.path.join('Images', f), os.path.join(root, 'Images', f), int(label))
            for f, label in zip(files, labels)]

  def _metadata(self, root):
    folders = sorted(os.listdir(os.path.join(root, 'Images')))
    return {'class_names': [f.split('-', 1)[-1] for f in folders]}
