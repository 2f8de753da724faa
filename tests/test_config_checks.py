"""Impossible config values are refused when the run starts, naming the field, its value and
what it allows, before anything is computed or written."""

import pathlib
import subprocess
import sys

import pytest

from aah_jax import run as run_lib
from aah_jax.training import config_checks
from configs import tiny

BAD = [  # (field, value, fragment of the message)
    ('bits', 0, 'config.bits=0: must be an integer ≥ 1'),
    ('bits', -3, 'config.bits=-3: must be an integer ≥ 1'),
    ('eval.batch_size', 0, 'config.eval.batch_size=0: must be an integer ≥ 1'),
    ('data.image_dtype', 'float16', "config.data.image_dtype='float16': must be one of "
                                    "['auto', 'float32', 'bfloat16']"),
    ('model.dtype', 'int8', "config.model.dtype='int8': must be one of"),
    ('model.backbone', 'vgg', "config.model.backbone='vgg': must be one of"),
    ('train.epochs', 0, 'config.train.epochs=0: must be an integer ≥ 1'),
    ('train.num_samples', -1, 'config.train.num_samples=-1: must be an integer ≥ 1'),
    ('optim.learning_rate', 0.0, 'config.optim.learning_rate=0.0: must be a number in (0, ∞)'),
    ('optim.momentum', 1.0, 'config.optim.momentum=1.0: must be a number in [0, 1)'),
    ('optim.lr_decay_fraction', 1.5, 'must be a number in [0, 1]'),
    ('loss.gamma', -1.0, 'config.loss.gamma=-1.0: must be a number in [0, ∞)'),
    ('loss.weights.hash', (1.0, -1.0), 'config.loss.weights.hash=(1.0, -1.0): must be 2 '
                                       'numbers ≥ 0, a weight per phase'),
    ('loss.weights.rec', (0.0, 1.0, 1.0), 'config.loss.weights.rec=(0.0, 1.0, 1.0): must be 2'),
    ('loss.phase_boundaries', (0.6, 0.3), 'config.loss.phase_boundaries=(0.6, 0.3): must be '
                                          'increasing fractions'),
    ('loss.phase_boundaries', (1.0,), 'must be increasing fractions of the outer iterations'),
    ('data.train_crop_scale', (0.5, 0.2), 'the first ≤ the second'),
    ('data.num_threads', 0, 'config.data.num_threads=0: must be an integer ≥ 1'),
    ('checkpoint.keep', 0, 'config.checkpoint.keep=0: must be an integer ≥ 1'),
    ('log.every_steps', -1, 'config.log.every_steps=-1: must be an integer ≥ 0'),
    ('image_size', 4, 'config.image_size=4: must be an integer ≥ 16'),
]


def _with(field: str, value):
  config = tiny.get_config()
  *parents, leaf = field.split('.')
  node = config
  for name in parents:
    node = node[name]
  with node.ignore_type():
    node[leaf] = value
  return config


@pytest.mark.parametrize('field,value,fragment', BAD)
def test_each_bad_value_is_refused_before_anything_is_written(tmp_path, field, value,
                                                              fragment):
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match='bad config') as raised:
    run_lib.train_and_evaluate(_with(field, value), str(workdir))
  assert fragment in str(raised.value)
  assert not workdir.exists()  # no folder, lock, log or checkpoint left behind


def test_every_shipped_config_passes_and_all_problems_are_listed_at_once():
  import importlib  # pylint: disable=g-import-not-at-top
  for name in ('default', 'tiny', 'default_pretrained', 'cub200', 'aircraft', 'food101',
               'nabirds', 'vegfru', 'stanford_dogs', 'cifar10', 'nuswide', 'inat2021'):
    assert config_checks.problems(importlib.import_module(f'configs.{name}').get_config()) == []
  config = _with('eval.batch_size', 0)
  config.optim.momentum = -0.5
  assert len(config_checks.problems(config)) == 2
  config.loss.weights['novel'] = (1.0, 1.0)
  assert any('not a loss term' in p for p in config_checks.problems(config))


def test_the_main_job_exits_with_the_message(tmp_path):
  workdir = tmp_path / 'run'
  result = subprocess.run([sys.executable, '-m', 'aah_jax.main', '--config=configs/tiny.py',
                           f'--workdir={workdir}', '--config.bits=0'],
                          cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode != 0
  assert 'config.bits=0: must be an integer ≥ 1' in result.stderr
  assert not workdir.exists()
