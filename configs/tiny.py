"""A seconds-long smoke-test variant of the default (tests and CI)."""

from configs import default


def get_config():
  config = default.get_config()
  config.bits = 12
  config.model.num_attention_maps = 2
  config.model.generator_base_channels = 32
  config.model.embed_dim = 64
  return config
