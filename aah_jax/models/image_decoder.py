"""The self-consistency image decoders: E (D → 512) and a DCGAN-style generator G."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aah_jax.models.precision import accumulation_dtype
from aah_jax.models.resnet import ModuleDef

# PyTorch's default nn.Linear / nn.ConvTranspose2d kernel initialisation, U(±1/√fan_in);
# biases start at zero.
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def generator_geometry(image_size: int) -> tuple[int, int]:
  """(seed, doublings): the first transposed conv makes a seed×seed map, then
  ``doublings`` stride-2 transposed convs reach image_size = seed · 2^doublings.

  The largest number of doublings that leaves an integer seed ≥ 4: 224 → (7, 5)
  as in the paper, 112 → (7, 4), 32 → (4, 3), 96 → (6, 4).
  """
  seed, doublings = image_size, 0
  while seed % 2 == 0 and seed // 2 >= 4:
    seed, doublings = seed // 2, doublings + 1
  if seed > 16 or doublings == 0:
    raise ValueError(f'image decoder: image size {image_size} is not seed·2^d with 4 ≤ seed ≤ 16 '
                     'and d ≥ 1; choose an image size such as 32, 96, 112 or 224')
  return seed, doublings


def generator_channels(doublings: int, base_channels: int) -> tuple[int, ...]:
  """Output channels of each transposed conv: base, base/2, …, then 3 (RGB).

  For 224 px and base 256: 256 (7×7), 128, 64, 32, 16, 3.
  """
  return tuple(max(base_channels >> i, 1) for i in range(doublings)) + (3,)


def _transposed_conv(features: int, kernel: int, stride: int, padding: int, *, dtype, name):
  """PyTorch's ConvTranspose2d(kernel, stride, padding, bias=False) semantics."""
  pad = kernel - 1 - padding
  return nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride),
                          padding=((pad, pad), (pad, pad)), transpose_kernel=True,
                          use_bias=False, kernel_init=TORCH_DEFAULT_INIT, dtype=dtype, name=name)


class ImageDecoder(nn.Module):
  """features (n, D) → image (n, S, S, 3) in [0, 1]: G(E(features)).

  E is a linear map to ``embed_dim`` (512); G treats it as a 1×1 map, a k=seed
  transposed conv makes it seed×seed, then (k4, s2, p1) transposed convs double
  it to S; each with BN + ReLU, the last with BN + sigmoid.
  """

  image_size: int
  norm: ModuleDef
  embed_dim: int = 512
  base_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    seed, doublings = generator_geometry(self.image_size)
    channels = generator_channels(doublings, self.base_channels)
    z = nn.Dense(self.embed_dim, kernel_init=TORCH_DEFAULT_INIT, dtype=self.dtype,
                 name='encoder')(features)
    x = z[:, None, None, :]
    for i, features_out in enumerate(channels):
      if i == 0:
        x = _transposed_conv(features_out, seed, 1, 0, dtype=self.dtype, name='deconv0')(x)
      else:
        x = _transposed_conv(features_out, 4, 2, 1, dtype=self.dtype, name=f'deconv{i}')(x)
      x = self.norm(name=f'bn{i}')(x)
      x = nn.sigmoid(x) if i == len(channels) - 1 else nn.relu(x)
    return x.astype(accumulation_dtype(self.dtype))

