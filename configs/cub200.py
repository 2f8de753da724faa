"""CUB-200-2011: the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('cub200', num_iterations=40, num_samples=2000)
