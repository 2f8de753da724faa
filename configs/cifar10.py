"""CIFAR-10 (generic; 1,000 queries, the rest is the database): the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('cifar10', num_iterations=50, num_samples=2000)
