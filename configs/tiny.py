"""A smoke-test variant of the default for tests and CI: the 48-class tiny synthetic set,
a small network, a few outer iterations; under a minute on 2 CPU cores."""

from configs import default


def get_config():
  config = default.get_config()
  config.data.builder_config = 'tiny'
  config.model.num_attention_maps = 2
  config.model.generator_base_channels = 16
  config.model.embed_dim = 64
  config.train.num_iterations = 10
  config.train.num_samples = 480  # the whole tiny database
  config.train.epochs = 3
  config.train.batch_size = 32
  config.eval.batch_size = 128
  config.eval.every_iterations = 0
  return config
