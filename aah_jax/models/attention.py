"""The attention branch that localises the M parts."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aah_jax.models.resnet import Bottleneck, ModuleDef, conv


class AttentionBranch(nn.Module):
  """T (n, h, w, C) → A (n, h, w, M), non-negative part-attention maps.

  Three times [bottleneck block with identity shortcut → 1×1 conv + BN],
  narrowing C → C/4 → C/16 → M (1024 → 256 → 64 → M for ResNet-50); the last
  BN is followed by ReLU (no softmax), as in the authors' code.
  """

  num_maps: int
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t):
    channels = t.shape[-1]
    if channels % 64:
      raise ValueError(f'attention branch: trunk channels C={channels} must be a multiple of 64 '
                       '(it narrows C → C/4 → C/16 through bottlenecks of C/64 planes)')
    x = t
    for i in range(3):
      x = Bottleneck(channels // 4, 1, self.norm, dtype=self.dtype, name=f'block{i}')(x)
      channels //= 4
      out_channels = channels if i < 2 else self.num_maps
      x = conv(out_channels, 1, dtype=self.dtype, name=f'narrow{i}_conv')(x)
      x = self.norm(name=f'narrow{i}_bn')(x)
    return nn.relu(x)
