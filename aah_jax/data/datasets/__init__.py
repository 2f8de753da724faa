"""Dataset registry: user-facing names → tfds builders, and preparing them.

Nothing is ever downloaded. The embedded dataset is generated when missing; the others
are built from the official files in a manual directory (``aah-prepare``, or
``config.data.manual_dir`` on first use).
"""

import dataclasses
from typing import Optional

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from aah_jax.data.datasets.archive import CorruptImageError, DatasetFilesError  # noqa: F401 (re-exported)
from aah_jax.data.datasets.fine_grained import (AahAircraft, AahCub200, AahFood101, AahNabirds,
                                           AahStanfordDogs, AahVegfru)
from aah_jax.data.datasets.generic import AahCifar10, AahImageFolder, AahNuswide
from aah_jax.data.datasets.generic import image_folder_config
from aah_jax.data.datasets.inaturalist import AahInat2021
from aah_jax.data.datasets.synthetic_birds import AahSyntheticBirds


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """A dataset of the protocol: its builder, and which splits are database and queries."""

  builder_cls: type
  database_split: str = 'train'
  query_split: str = 'test'
  embedded: bool = False  # generated locally: build it when missing


DATASETS = {
    'synthetic_birds': DatasetEntry(AahSyntheticBirds, embedded=True),
    'cub200': DatasetEntry(AahCub200),
    'aircraft': DatasetEntry(AahAircraft),
    'food101': DatasetEntry(AahFood101),
    'nabirds': DatasetEntry(AahNabirds),
    'vegfru': DatasetEntry(AahVegfru),
    'stanford_dogs': DatasetEntry(AahStanfordDogs),
    'cifar10': DatasetEntry(AahCifar10, database_split='database', query_split='query'),
    'nuswide': DatasetEntry(AahNuswide, database_split='database', query_split='test'),
    'inat2021': DatasetEntry(AahInat2021, query_split='val'),
    'image_folder': DatasetEntry(AahImageFolder),
}


def dataset_entry(name: str) -> DatasetEntry:
  if name not in DATASETS:
    raise ValueError(f'config.dataset={name!r} is not available; choose one of {sorted(DATASETS)}')
  return DATASETS[name]


def make_builder(name: str, builder_config: Optional[str] = None, data_dir: Optional[str] = None,
                 manual_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The tfds builder of a dataset (prepared or not). image_folder takes its folder from
  manual_dir (its builder config is named after the folder)."""
  entry = dataset_entry(name)
  config = builder_config or None
  if entry.builder_cls is AahImageFolder:
    if not manual_dir:
      raise ValueError('dataset image_folder needs the folder: set config.data.manual_dir '
                       '(or aah-prepare --manual_dir)')
    config = image_folder_config(manual_dir)
  return entry.builder_cls(config=config, data_dir=data_dir)


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: Optional[str] = None,
            skip_corrupt: bool = False):
  """Writes the dataset's array_record files (from manual_dir where it needs files)."""
  builder.skip_corrupt = skip_corrupt
  if hasattr(builder, 'preflight'):  # what it can check before tfds writes anything
    builder.preflight()
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                   try_download_gcs=False))


def load_builder(name: str, builder_config: Optional[str] = None,
                 data_dir: Optional[str] = None,
                 manual_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The prepared tfds builder. A missing dataset is generated (the embedded one), built
  from manual_dir if given, or else an error naming the command that prepares it."""
  entry = dataset_entry(name)
  builder = make_builder(name, builder_config, data_dir, manual_dir)
  if not builder.is_prepared():
    if not (entry.embedded or manual_dir):
      raise FileNotFoundError(
          f'dataset {name!r} ({builder.info.full_name}) is not prepared under '
          f'{builder.data_dir_root}: run `aah-prepare --dataset={name} --manual_dir=DIR` with '
          f'the official files in DIR (README, "Datasets"), or set config.data.manual_dir')
    try:
      prepare(builder, manual_dir)
    except FileExistsError:
      # Another process (a second run started at the same time) built the same version
      # while this one was building: tfds renames its finished folder into place, so the
      # destination exists only once complete. Use that copy; a genuine clash re-raises.
      builder = make_builder(name, builder_config, data_dir, manual_dir)
      if not builder.is_prepared():
        raise
      logging.info('dataset %s was built by another process meanwhile; using %s',
                   builder.info.full_name, builder.data_path)
  return builder


def _read_field(builder: tfds.core.DatasetBuilder, split: str, field: str) -> np.ndarray:
  """One feature of every example of a split, in order, stacked, without decoding images."""
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  return np.stack([np.asarray(example[field]) for example in source])


def read_labels(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """Every example's label of a split, in order, without decoding images: (N,) class ids
  or (N, L) multi-hot."""
  return _read_field(builder, split, 'label')


def read_attributes(builder: tfds.core.DatasetBuilder, split: str):
  """(attributes (N, …), names, values) of a split's examples, or None if the dataset has
  no attribute annotations. values lists each categorical attribute's value names (the
  embedded set); it is None for binary annotations (CUB-200-2011's 312)."""
  if 'attributes' not in builder.info.features:
    return None
  attributes = _read_field(builder, split, 'attributes')
  metadata = builder.info.metadata or {}
  names = metadata.get('attribute_names') or [f'attribute_{i}' for i in range(attributes.shape[1])]
  return attributes, list(names), metadata.get('attribute_values')
