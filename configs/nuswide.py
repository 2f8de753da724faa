"""NUS-WIDE, 21 most frequent labels (generic, multi-label): the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('nuswide', num_iterations=50, num_samples=2000)
