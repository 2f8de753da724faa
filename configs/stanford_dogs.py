"""Stanford Dogs (outer iterations and |Ω| as for CUB; not given by the spec): the paper's settings."""

from configs.paper import paper_config


def get_config():
  return paper_config('stanford_dogs', num_iterations=40, num_samples=2000)
