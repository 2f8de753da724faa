"""Dataset registry: user-facing names → tfds builders, built on first use where embedded."""

import dataclasses
from typing import Optional

import tensorflow_datasets as tfds

from aah_jax.datasets.synthetic_birds import AahSyntheticBirds


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """A dataset of the protocol: its builder, and which splits are database and queries."""

  builder_cls: type
  database_split: str = 'train'
  query_split: str = 'test'
  embedded: bool = False  # generated locally: build it when missing


DATASETS = {
    'synthetic_birds': DatasetEntry(AahSyntheticBirds, embedded=True),
}


def dataset_entry(name: str) -> DatasetEntry:
  if name not in DATASETS:
    raise ValueError(f'config.dataset={name!r} is not available; choose one of {sorted(DATASETS)}')
  return DATASETS[name]


def load_builder(name: str, builder_config: Optional[str] = None,
                 data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The prepared tfds builder; an embedded dataset is generated if it is missing.

  Never downloads: a missing archive-based dataset is an error naming what to run.
  """
  entry = dataset_entry(name)
  builder = entry.builder_cls(config=builder_config or None, data_dir=data_dir)
  if not builder.is_prepared():
    if not entry.embedded:
      raise FileNotFoundError(f'dataset {name!r} ({builder.info.full_name}) is not prepared under '
                              f'{builder.data_dir_root}')
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
