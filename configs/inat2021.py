"""iNaturalist 2021: 2.7 M database images of 10,000 species, 100,000 validation queries.

Not in the paper: its protocol (ResNet-50, 224 px, batch 16, 30 epochs over Ω) with the
settings of its largest datasets (NABirds, VegFru: 50 outer iterations, |Ω| = 4,000). It
trains in the label-grouped form (the default, docs/method.md §8: G = 10,000 groups, B and
the group ids split over the devices; the explicit form would build a 16 × 2.7 M S_batch per
step and a 4,000 × 2.7 M S per sweep). `--config.data.builder_config=mini` takes train_mini
(500,000 images) as the database.
"""

from configs.paper import paper_config


def get_config():
  config = paper_config('inat2021', num_iterations=50, num_samples=4000)
  config.train.similarity = 'grouped'
  return config
