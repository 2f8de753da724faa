"""The attribute encoder-decoder with tied weights W (k × D, no bias)."""

import flax.linen as nn
import jax.numpy as jnp

from aah_jax.models.precision import accumulation_dtype

# PyTorch's kaiming_uniform_(a=√5) on a (k, D) matrix: U(±1/√D), fan-in on the last axis.
W_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform', in_axis=-1, out_axis=-2)
# model.codec_init: 'uniform' is W_INIT over all of W; 'global' starts W as the global-only
# network's (g's block U(±1/√C4), C4 = g's width) with the parts' blocks at 0.
CODEC_INITS = ('uniform', 'global')


def codec_init(name: str, part_columns: int):
  """W's initialiser; v's first part_columns values are the parts' (v = (x_1 … x_M, g))."""
  if name not in CODEC_INITS:
    raise ValueError(f'model.codec_init={name!r}: not one of {CODEC_INITS}')
  if name == 'uniform' or part_columns == 0:  # without parts, W_INIT is U(±1/√C4) already
    return W_INIT

  def init(rng, shape, dtype):
    w = W_INIT(rng, shape, dtype)  # U(±1/√D), scaled to U(±1/√C4) on g's block
    w = w.at[:, part_columns:].multiply((shape[1] / (shape[1] - part_columns)) ** 0.5)
    return w.at[:, :part_columns].set(0.0)
  return init


def attribute_encode(v, w):
  """u = tanh(v Wᵀ): v (n, D), W (k, D) → u (n, k), one attribute per dimension."""
  return jnp.tanh(v @ w.T)


def attribute_decode(u, w):
  """v̂ = u W: the tied-weight reconstruction of v (n, D) from the attribute vector u."""
  return u @ w


class AttributeCodec(nn.Module):
  """Holds W; returns (u, v̂) for the visual representation v (its first ``part_columns``
  values the parts', the rest g; ``init`` one of CODEC_INITS).

  Computed in float32 whatever the backbone's dtype (float64 under float64): the tanh
  head and the losses need the precision.
  """

  bits: int
  init: str = 'uniform'
  part_columns: int = 0

  @nn.compact
  def __call__(self, v):
    w = self.param('W', codec_init(self.init, self.part_columns), (self.bits, v.shape[-1]),
                   jnp.float32)
    dtype = accumulation_dtype(v.dtype)
    w = w.astype(dtype)
    u = attribute_encode(v.astype(dtype), w)
    return u, attribute_decode(u, w)
