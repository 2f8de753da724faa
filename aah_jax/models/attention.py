"""The attention branch that localises the M parts."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aah_jax.models.resnet import Bottleneck, ModuleDef, conv


def quarter(channels: int) -> int:
  return -(-channels // 4)


class AttentionBranch(nn.Module):
  """T (n, h, w, C) → A (n, h, w, M), non-negative part-attention maps.

  Three times [bottleneck block with identity shortcut → 1×1 conv + BN],
  narrowing C → C/4 → C/16 → M (1024 → 256 → 64 → M for ResNet-50); the last
  BN is followed by ReLU (no softmax), as in the authors' code. Each bottleneck
  has a quarter of its input's width inside. Widths round up, so any C works
  (EfficientNet-Lite0: 112 → 28 → 7 → M, bottlenecks of 28, 7 and 2).
  """

  num_maps: int
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t):
    x = t
    for i in range(3):
      channels = x.shape[-1]
      x = Bottleneck(quarter(channels), 1, self.norm, dtype=self.dtype,
                     out_channels=channels, name=f'block{i}')(x)
      out_channels = quarter(channels) if i < 2 else self.num_maps
      x = conv(out_channels, 1, dtype=self.dtype, name=f'narrow{i}_conv')(x)
      x = self.norm(name=f'narrow{i}_bn')(x)
    return nn.relu(x)
