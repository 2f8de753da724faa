"""FGVC-Aircraft (variants): the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('aircraft', num_iterations=40, num_samples=2000)
