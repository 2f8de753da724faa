"""Batch normalisation with PyTorch's semantics, and optional per-group statistics."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from aah_jax.models.precision import accumulation_dtype

# PyTorch's BatchNorm2d defaults: momentum 0.1 on the new statistic is 0.9 on the old one.
TORCH_MOMENTUM = 0.9
TORCH_EPSILON = 1e-5


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, statistics in float32 (float64 under float64).

  Matches ``torch.nn.BatchNorm2d``: normalises with the biased batch variance and
  updates the running variance with the unbiased one, so torchvision running
  statistics load 1:1 and evolve the same way.

  Attributes:
    use_running_average: eval mode (running statistics) when True.
    momentum: weight of the old running statistic.
    epsilon: added to the variance.
    num_groups: split the batch into this many equal, contiguous groups and
      normalise each with its own statistics ("ghost" batch norm). With the batch
      sharded over G devices, ``num_groups=G`` reproduces per-device BatchNorm as
      in single-GPU or unsynchronised data-parallel PyTorch. The running
      statistics are updated with the mean of the group statistics.
    dtype: dtype of the output.
  """

  use_running_average: bool
  momentum: float = TORCH_MOMENTUM
  epsilon: float = TORCH_EPSILON
  num_groups: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (channels,), self.param_dtype)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), jnp.float32)

    x32 = x.astype(accumulation_dtype(x.dtype))
    if self.use_running_average:
      mean, var = running_mean.value.astype(x32.dtype), running_var.value.astype(x32.dtype)
      y = (x32 - mean) * lax.rsqrt(var + self.epsilon)
    else:
      groups = self.num_groups
      if x.shape[0] % groups:
        raise ValueError(f'BatchNorm: batch of {x.shape[0]} does not split into '
                         f'num_groups={groups} equal groups')
      grouped = x32.reshape((groups, x.shape[0] // groups) + x.shape[1:])
      axes = tuple(range(1, grouped.ndim - 1))
      mean = grouped.mean(axes, keepdims=True)
      var = jnp.square(grouped - mean).mean(axes, keepdims=True)
      y = ((grouped - mean) * lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        count = grouped.size // (groups * channels)
        unbiased = count / max(count - 1, 1)
        batch_mean = mean.reshape(groups, channels).mean(0)
        batch_var = var.reshape(groups, channels).mean(0) * unbiased
        m = self.momentum
        running_mean.value = m * running_mean.value + (1 - m) * batch_mean
        running_var.value = m * running_var.value + (1 - m) * batch_var
    y = y * scale + bias
    return y.astype(self.dtype)
