"""The main job's default: the embedded synthetic fine-grained set on 2 CPU cores.

Variants import this file and override a few fields. `--config.bits=48` changes k
and, unless `config.model.num_attention_maps` is set, M with it.
"""

import ml_collections

from aah_jax.losses import DEFAULT_WEIGHTS


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.bits = 12  # k: 12, 24, 32 or 48 in the paper.
  config.image_size = 32

  config.model = ml_collections.ConfigDict()
  config.model.backbone = 'small_cnn'
  config.model.bits = config.get_ref('bits')
  config.model.num_attention_maps = config.get_ref('bits') * 1  # M = k (OPEN); `* 1` keeps
  # the link to bits while letting M be overridden on its own.
  config.model.use_attention = True
  config.model.use_image_decoder = True
  config.model.embed_dim = 512
  config.model.generator_base_channels = 256
  config.model.bn_groups = 1
  config.model.dtype = 'float32'

  config.loss = ml_collections.ConfigDict()
  config.loss.gamma = 200.0
  config.loss.soft_similarity = True
  # term → (phase 1 weight, phase 2 weight); see aah_jax.losses.DEFAULT_WEIGHTS.
  config.loss.weights = ml_collections.ConfigDict(DEFAULT_WEIGHTS)
  return config
