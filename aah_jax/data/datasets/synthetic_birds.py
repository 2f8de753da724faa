"""tfds builder of the embedded default dataset: procedural fine-grained birds.

Nothing is downloaded: every image is drawn from the builder config's seed, so
the same config gives the same bytes. Writes array_record files and needs no
TensorFlow (images are yielded as PNG bytes).
"""

import dataclasses
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from aah_jax.data.datasets import bird_renderer
from aah_jax.data.datasets.archive import LocalDatasetInfo

SPLITS = ('train', 'test')


@dataclasses.dataclass
class SyntheticBirdsConfig(tfds.core.BuilderConfig):
  """How many classes and images, at what size, from which seed."""

  num_classes: int = 64
  train_per_class: int = 40
  test_per_class: int = 20
  image_size: int = 32
  seed: int = 0


class AahSyntheticBirds(tfds.core.GeneratorBasedBuilder):
  """Procedural fine-grained birds; each class is a unique combination of 6 part attributes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      SyntheticBirdsConfig(name='default', description='64 classes, 40 train / 20 test each, 32 px.'),
      SyntheticBirdsConfig(name='tiny', num_classes=48, train_per_class=20, test_per_class=5,
                           description='48 classes, 20 train / 5 test each, 32 px (tests).'),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    classes = bird_renderer.choose_classes(cfg.num_classes, cfg.seed)
    size = cfg.image_size
    return LocalDatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3), encoding_format='png'),
            'label': tfds.features.ClassLabel(
                names=[bird_renderer.class_name(c) for c in classes]),
            'attributes': tfds.features.Tensor(shape=(len(bird_renderer.ATTRIBUTES),),
                                               dtype=np.int32),
        }),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(
            attribute_names=list(bird_renderer.ATTRIBUTE_NAMES),
            attribute_values=[list(values) for _, values in bird_renderer.ATTRIBUTES],
            class_attributes=classes.tolist()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    cfg = self.builder_config
    classes = bird_renderer.choose_classes(cfg.num_classes, cfg.seed)
    per_class = cfg.train_per_class if split == 'train' else cfg.test_per_class
    split_id = SPLITS.index(split)
    for i in range(cfg.num_classes * per_class):
      label = i % cfg.num_classes
      pixels = bird_renderer.render(classes[label], [cfg.seed, split_id, i], cfg.image_size)
      png = io.BytesIO()
      Image.fromarray(pixels).save(png, format='PNG')
      yield i, {'image': png.getvalue(), 'label': label, 'attributes': classes[label]}
