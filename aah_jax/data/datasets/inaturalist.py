"""iNaturalist 2021 (10,000 species, 2.7 M training images), from its official files.

The competition release: ``train.json`` / ``val.json`` (COCO-style: ``images`` with a
``file_name`` relative to the dataset folder, ``annotations`` giving each image's
``category_id``, ``categories`` with the taxonomy of each species) and the image folders
``train/`` and ``val/``. The database is the training split (2,686,843 images; the
``mini`` builder config: ``train_mini.json`` and ``train_mini/``, 500,000), the queries the
validation split (100,000). The label is the species (the category id, 0 … 9,999); the six
levels above it (kingdom, phylum, class, order, family, genus) are the ``attributes``, one
categorical value each, their names in the metadata (``aah-explain`` reads them as
attributes).
"""

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from aah_jax.data.datasets.archive import ArchiveBuilder, DatasetFilesError, Item

TAXONOMY = ('kingdom', 'phylum', 'class', 'order', 'family', 'genus')
NUM_SPECIES = 10_000


class AahInat2021(ArchiveBuilder):
  """iNaturalist 2021: 10,000 species; the higher taxonomy levels as six categorical
  attributes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Extract train.tar.gz, val.tar.gz, train.json.tar.gz and val.json.tar.gz (for the mini '
      'config train_mini.tar.gz and train_mini.json.tar.gz) into manual_dir, or into '
      'manual_dir/inat2021/: train.json, val.json, train/, val/.')
  FOLDER, ARCHIVES, MARKER = 'inat2021', (), 'val.json'
  SPLITS = {'train': 2_686_843, 'val': 100_000}
  NUM_CLASSES = NUM_SPECIES
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='default', description='The full training set as database.'),
      tfds.core.BuilderConfig(name='mini', description='train_mini (50 images per species) as '
                                                       'database.'),
  ]

  def official_counts(self) -> dict:
    return dict(self.SPLITS, train=500_000) if self.builder_config.name == 'mini' else self.SPLITS

  def _features(self):
    return {'label': tfds.features.ClassLabel(num_classes=NUM_SPECIES),
            'attributes': tfds.features.Tensor(shape=(len(TAXONOMY),), dtype=np.int32)}

  def _annotation_file(self, root, split):
    name = 'train_mini' if split == 'train' and self.builder_config.name == 'mini' else split
    return os.path.join(root, f'{name}.json')

  def _read(self, path) -> dict:
    if not os.path.isfile(path):
      raise DatasetFilesError(f'{path} is missing')
    with open(path) as f:
      try:
        data = json.load(f)
      except json.JSONDecodeError as error:
        raise DatasetFilesError(f'{path} is not valid JSON ({error})') from None
    missing = [key for key in ('images', 'annotations', 'categories') if key not in data]
    if missing:
      raise DatasetFilesError(f'{path} lacks {missing}: not an iNaturalist annotation file')
    return data

  def _taxonomy(self, categories: list, path: str):
    """(species id → its six taxonomy value indices, the value names of each level), the
    values of each level sorted by name."""
    for category in categories:
      absent = [key for key in ('id',) + TAXONOMY if key not in category]
      if absent:
        raise DatasetFilesError(f'{path}: category {category.get("id")} lacks {absent}')
      if not 0 <= category['id'] < NUM_SPECIES:
        raise DatasetFilesError(f'{path}: category id {category["id"]} is outside 0 … '
                                f'{NUM_SPECIES - 1}')
    values = [sorted({c[level] for c in categories}) for level in TAXONOMY]
    index = [{name: i for i, name in enumerate(names)} for names in values]
    codes = {c['id']: np.asarray([index[i][c[level]] for i, level in enumerate(TAXONOMY)],
                                 np.int32) for c in categories}
    return codes, values

  def _species(self, root):
    """(species id → taxonomy value indices, the value names of each level, the categories),
    from val.json: the same for both splits; read once per root (both splits and the
    metadata ask)."""
    if getattr(self, '_species_of', (None,))[0] != root:
      path = self._annotation_file(root, 'val')
      categories = sorted(self._read(path)['categories'], key=lambda c: c['id'])
      self._species_of = (root, (*self._taxonomy(categories, path), categories))
    return self._species_of[1]

  def _list_split(self, root, split):
    path = self._annotation_file(root, split)
    data = self._read(path)
    codes, _, _ = self._species(root)
    species = {a['image_id']: a['category_id'] for a in data['annotations']}
    items = []
    for image in data['images']:
      if image['id'] not in species:
        raise DatasetFilesError(f'{path}: image {image["id"]} ({image["file_name"]}) has no '
                                f'annotation')
      label = species[image['id']]
      if label not in codes:
        raise DatasetFilesError(f'{path}: image {image["id"]} has category {label}, which '
                                f'is not among the categories of val.json')
      items.append(Item(image['file_name'], os.path.join(root, image['file_name']), label,
                        {'attributes': codes[label]}))
    return items

  def _metadata(self, root):
    _, values, categories = self._species(root)
    return {'class_names': [c.get('name', str(c['id'])) for c in categories],
            'attribute_names': list(TAXONOMY), 'attribute_values': values}
