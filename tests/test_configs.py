"""Every config file loads, builds its network, and follows --config.bits."""

import importlib

import jax
import jax.numpy as jnp
import pytest

from aah_jax.models import create_model, precision

CONFIGS = ['default', 'tiny', 'default_pretrained', 'cub200', 'aircraft', 'food101', 'nabirds',
           'vegfru', 'stanford_dogs', 'cifar10', 'nuswide', 'inat2021']
PAPER = {'cub200': (40, 2000), 'aircraft': (40, 2000), 'food101': (50, 2000),
         'nabirds': (50, 4000), 'vegfru': (50, 4000)}


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_its_network(name):
  config = precision.resolve_config(importlib.import_module(f'configs.{name}').get_config(),
                                    'cpu')
  model = create_model(config.model)
  shape = jax.ShapeDtypeStruct((2, config.image_size, config.image_size, 3), jnp.float32)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=True)[0],
                       shape)
  assert out.u.shape == (2, config.bits)
  assert config.train.num_samples % config.train.batch_size == 0


@pytest.mark.parametrize('name,schedule', sorted(PAPER.items()))
def test_paper_configs_use_the_paper_settings(name, schedule):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert (config.train.num_iterations, config.train.num_samples) == schedule
  assert config.model.backbone == 'resnet50' and config.image_size == 224
  assert config.train.batch_size == 16 and config.train.epochs == 30
  assert config.loss.gamma == 200.0 and config.optim.learning_rate == 1e-4


@pytest.mark.parametrize('bits', [12, 24, 32, 48])
def test_bits_sets_k_and_m_unless_m_is_set(bits):
  config = importlib.import_module('configs.cub200').get_config()
  config.bits = bits
  assert config.model.bits == bits and config.model.num_attention_maps == bits
  config.model.num_attention_maps = 4
  assert config.bits == bits and config.model.num_attention_maps == 4


@pytest.mark.parametrize('variant', ['', 'global_only'])
def test_pretrained_configs_give_a_learning_rate_only_to_groups_their_network_has(variant):
  """`--config=configs/default_pretrained.py:global_only` (the ablations without attention):
  train.scale_parameter_groups refuses a multiplier for a group the network lacks."""
  from configs import default_pretrained  # pylint: disable=g-import-not-at-top
  config = precision.resolve_config(default_pretrained.get_config(variant), 'cpu')
  model = create_model(config.model)
  shape = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=True), shape)['params']
  assert set(config.optim.lr_multipliers) <= set(params)
  assert ('local_stage' in params) == (variant == '') == config.model.use_attention
  with pytest.raises(ValueError, match="unknown variant 'adsh'"):
    default_pretrained.get_config('adsh')
