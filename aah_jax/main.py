"""The main job: `python -m aah_jax.main --config=configs/default.py --workdir=DIR`."""

import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from aah_jax.codes import hash_codes
from aah_jax.models import create_model, init_variables

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'ml_collections config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for the run\'s outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def code_statistics(config, workdir: str) -> dict:
  """Until training lands: a forward pass of a fresh model and its code statistics."""
  model = create_model(config.model)
  variables = init_variables(model, jax.random.key(config.seed), config.image_size)
  images = jax.random.normal(jax.random.key(config.seed + 1), (64, config.image_size,
                                                               config.image_size, 3))
  start = time.time()
  u = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  codes = np.asarray(hash_codes(u))
  stats = {
      'bits': int(model.bits),
      'feature_dim': model.feature_dim,
      'num_params': int(sum(x.size for x in jax.tree.leaves(variables['params']))),
      'bit_balance': float(np.abs(codes.mean(axis=0)).mean()),
      'distinct_codes': int(len({c.tobytes() for c in codes})),
      'forward_seconds': time.time() - start,
  }
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'code_statistics.json'), 'w') as f:
    json.dump(stats, f, indent=2)
  return stats


def main(argv):
  del argv
  stats = code_statistics(FLAGS.config, FLAGS.workdir)
  print(json.dumps(stats, indent=2))


def run():
  app.run(main)


if __name__ == '__main__':
  run()
