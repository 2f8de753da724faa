"""NABirds: the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('nabirds', num_iterations=50, num_samples=4000)
