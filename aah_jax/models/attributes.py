"""The attribute encoder-decoder with tied weights W (k × D, no bias)."""

import flax.linen as nn
import jax.numpy as jnp

from aah_jax.models.precision import accumulation_dtype

# PyTorch's kaiming_uniform_(a=√5) on a (k, D) matrix: U(±1/√D), fan-in on the last axis.
W_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform', in_axis=-1, out_axis=-2)


def attribute_encode(v, w):
  """u = tanh(v Wᵀ): v (n, D), W (k, D) → u (n, k), one attribute per dimension."""
  return jnp.tanh(v @ w.T)


def attribute_decode(u, w):
  """v̂ = u W: the tied-weight reconstruction of v (n, D) from the attribute vector u."""
  return u @ w


class AttributeCodec(nn.Module):
  """Holds W; returns (u, v̂) for the visual representation v.

  Computed in float32 whatever the backbone's dtype (float64 under float64): the tanh
  head and the losses need the precision.
  """

  bits: int

  @nn.compact
  def __call__(self, v):
    w = self.param('W', W_INIT, (self.bits, v.shape[-1]), jnp.float32)
    dtype = accumulation_dtype(v.dtype)
    w = w.astype(dtype)
    u = attribute_encode(v.astype(dtype), w)
    return u, attribute_decode(u, w)
