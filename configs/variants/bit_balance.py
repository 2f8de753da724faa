"""A worked variation: the default run plus a bit-balance term, so that each bit is +1 on
about half of a batch,

    balance = (1/k) Σ_j (mean_i F_ij)²      (F = u, the batch's attribute vectors).

The whole change is this file: the term's function, its registration with default weights
(aah_jax.training.losses.register_term), its weights in the config and this module in
config.loss.term_modules (so that a resumed run and the tools know the term too).

    python -m aah_jax.main --config=configs/variants/bit_balance.py --workdir=runs/balance
"""

import jax.numpy as jnp

from aah_jax.training import losses
from configs import default


def bit_balance_loss(inputs: losses.LossInputs):
  """(1/k) Σ_j (mean_i F_ij)²: 0 when every bit's mean over the batch is 0."""
  return jnp.mean(jnp.square(jnp.mean(inputs.output.u, axis=0)))


losses.register_term('balance', bit_balance_loss, (0.1, 0.1))


def get_config():
  config = default.get_config()
  config.loss.term_modules = ('configs.variants.bit_balance',)  # this file, by import name
  config.loss.weights.balance = losses.TERMS['balance'].weights
  return config
