"""Binary hash codes from attribute vectors."""

import jax.numpy as jnp


def hash_codes(u):
  """b = sign(u) as int8 ±1, with sign(0) = +1 (jnp.sign would give 0)."""
  return jnp.where(u >= 0, 1, -1).astype(jnp.int8)


def packed_hash_codes(u):
  """sign(u) (sign(0) = +1) with its k bits packed 8 to a byte, as ``np.packbits`` packs
  ``u >= 0`` (first bit in the high bit): (n, ⌈k/8⌉) uint8, the words of
  ``ranking.PackedCodes``. Row by row, so it keeps a row-split array split: the host then
  receives k/8 bytes a row instead of 4k."""
  bits = (u >= 0).astype(jnp.uint8)
  bits = jnp.pad(bits, ((0, 0), (0, -bits.shape[1] % 8)))
  weights = jnp.left_shift(jnp.uint8(1), jnp.arange(7, -1, -1, dtype=jnp.uint8))
  return (bits.reshape(bits.shape[0], -1, 8) * weights).sum(axis=2, dtype=jnp.uint8)
