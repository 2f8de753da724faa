"""Binary hash codes from attribute vectors."""

import jax.numpy as jnp


def hash_codes(u):
  """b = sign(u) as int8 ±1, with sign(0) = +1 (jnp.sign would give 0)."""
  return jnp.where(u >= 0, 1, -1).astype(jnp.int8)
