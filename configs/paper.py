"""The paper's protocol (docs/method.md §4–5): ResNet-50 at 224 px, batch 16, 30 epochs per
outer iteration, SGD lr 1e-4. Each dataset's config calls `paper_config`; `--config.bits`
selects 12, 24, 32 or 48 bits."""

from configs import default


def paper_config(dataset: str, *, num_iterations: int, num_samples: int):
  config = default.get_config()
  config.dataset = dataset
  config.image_size = 224
  config.data.builder_config = ''  # the builder's default config
  config.data.train_crop_scale = (0.08, 1.0)
  config.data.num_threads = 8
  config.model.backbone = 'resnet50'
  config.model.generator_base_channels = 256
  config.train.num_iterations = num_iterations
  config.train.num_samples = num_samples
  config.train.epochs = 30
  config.train.batch_size = 16
  config.optim.learning_rate = 1e-4
  config.optim.lr_multipliers = {}
  config.eval.batch_size = 128
  config.eval.every_iterations = 10
  return config
