"""Food-101: the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('food101', num_iterations=50, num_samples=2000)
