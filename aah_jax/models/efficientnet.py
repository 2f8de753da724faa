"""EfficientNet-Lite, split into trunk and last stage like the ResNets.

The layout follows the TensorFlow reference (``efficientnet/lite``) as ported to
PyTorch by lukemelas/EfficientNet-PyTorch, whose state-dict keys the module names
mirror (``_blocks.12._depthwise_conv`` is ``last_stage/block12/depthwise_conv``):
MBConv blocks without squeeze-excitation, ReLU6, TensorFlow "SAME" padding (an even
input to a stride-2 convolution is padded by one on the bottom/right only, which is
what lax's ``'SAME'`` does too), BatchNorm with epsilon 1e-3 and TensorFlow's
momentum 0.99. Stochastic depth (drop-connect) is not applied.

Like every backbone here it takes images normalised with the ImageNet mean and
standard deviation (what the input pipeline delivers); the trunk turns them back
into the TensorFlow models' own input, (pixel − 127) / 128, which the weights
were trained with (tested: on scikit-learn's sample photos this gives the
expected classes with far higher confidence than feeding mean/std inputs).

The trunk is the stem and the stages up to stride 16 (112 channels for Lite0); the
last stage is the remaining stride-32 stages and the 1×1 head convolution (1280
channels), the counterpart of a ResNet's ``layer4``.
"""

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
from jax import lax
import jax.numpy as jnp

from aah_jax.common.normalization import to_unit_range
from aah_jax.models.norm import BatchNorm
from aah_jax.models.resnet import KAIMING_FAN_OUT, ModuleDef, global_average_pool

TF_EPSILON = 1e-3
TF_MOMENTUM = 0.99


@dataclasses.dataclass(frozen=True)
class Stage:
  """``repeats`` MBConv blocks; the first has the stride and changes the width."""

  repeats: int
  kernel: int
  stride: int
  expand_ratio: int
  out_channels: int


@dataclasses.dataclass(frozen=True)
class EfficientNetSpec:
  """An EfficientNet-Lite's shape.

  Attributes:
    stages: the MBConv stages in order.
    trunk_stages: how many of them form the trunk (up to stride 16); the rest and
      the head convolution form the last stage.
    stem_width: channels of the 3×3/2 stem convolution.
    head_width: channels of the final 1×1 convolution (the feature size C4).
  """

  stages: tuple[Stage, ...]
  trunk_stages: int
  stem_width: int = 32
  head_width: int = 1280

  @property
  def trunk_channels(self) -> int:
    return self.stages[self.trunk_stages - 1].out_channels

  @property
  def feature_channels(self) -> int:
    return self.head_width

  def blocks(self):
    """(global block index, stage index, stride, kernel, expand ratio, out channels) of
    every block, in order."""
    index = 0
    for s, stage in enumerate(self.stages):
      for r in range(stage.repeats):
        yield (index, s, stage.stride if r == 0 else 1, stage.kernel, stage.expand_ratio,
               stage.out_channels)
        index += 1

  def trunk(self, norm: ModuleDef, dtype: Any, name: str) -> nn.Module:
    return EfficientNetTrunk(self, norm, dtype=dtype, name=name)

  def last_stage(self, norm: ModuleDef, dtype: Any, name: str, remat: bool = False) -> nn.Module:
    cls = nn.remat(EfficientNetLastStage) if remat else EfficientNetLastStage
    return cls(self, norm, dtype=dtype, name=name)


# efficientnet_lite_builder.py: r1_k3_s11_e1_i32_o16 … r1_k3_s11_e6_i192_o320; width and
# depth coefficients 1.0 for Lite0, stem and head fixed at 32 and 1280.
EFFICIENTNETS = {
    'efficientnet_lite0': EfficientNetSpec(
        stages=(Stage(1, 3, 1, 1, 16), Stage(2, 3, 2, 6, 24), Stage(2, 5, 2, 6, 40),
                Stage(3, 3, 2, 6, 80), Stage(3, 5, 1, 6, 112), Stage(4, 5, 2, 6, 192),
                Stage(1, 3, 1, 6, 320)),
        trunk_stages=5),
}


def _conv(features: int, kernel: int, stride: int = 1, *, dtype, name):
  return nn.Conv(features, (kernel, kernel), strides=stride, padding='SAME', use_bias=False,
                 kernel_init=KAIMING_FAN_OUT, dtype=dtype, name=name)


def depthwise_by_shifts(x, kernel, stride: int):
  """The depthwise convolution with 'SAME' padding as a sum of k² strided slices of the
  padded input, each times the kernel's tap (i, j) (a C-vector): the same numbers as
  ``lax.conv_general_dilated(..., feature_group_count=C)``, but XLA:CPU runs it as fused
  elementwise loops, 3–10× faster than its grouped convolution forward and 6–9× with
  both gradients (benchmarks/depthwise.py)."""
  n, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = lax.padtype_to_pads((h, w), (kh, kw), (stride, stride), 'SAME')
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  oh, ow = -(-h // stride), -(-w // stride)
  out = None
  for i in range(kh):
    for j in range(kw):
      window = lax.slice(padded, (0, i, j, 0),
                         (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                         (1, stride, stride, 1))
      term = window * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


class DepthwiseConv(nn.Module):
  """k×k depthwise convolution, 'SAME' padding, no bias; the kernel is (k, k, 1, C) as
  ``nn.Conv(C, feature_group_count=C)``'s. Compiled for CPU it runs as
  ``depthwise_by_shifts``, for anything else as XLA's grouped convolution (cuDNN/TPU
  kernels): the choice follows the platform the program is lowered for
  (``lax.platform_dependent``), not the host's default backend, so a TPU program compiled
  on a CPU host (aah-plan) is the one the pod runs."""

  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    kernel = self.param('kernel', KAIMING_FAN_OUT,
                        (self.kernel_size, self.kernel_size, 1, channels), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    shifts = functools.partial(depthwise_by_shifts, stride=self.stride)
    grouped = functools.partial(lax.conv_general_dilated, window_strides=(self.stride,) * 2,
                                padding='SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                feature_group_count=channels)
    return lax.platform_dependent(x, kernel, cpu=shifts, default=grouped)


class MBConvBlock(nn.Module):
  """[1×1 expand + BN + ReLU6] → k×k depthwise + BN + ReLU6 → 1×1 project + BN
  (+ input when the shape is unchanged)."""

  kernel: int
  stride: int
  expand_ratio: int
  out_channels: int
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    hidden = inputs.shape[-1] * self.expand_ratio
    x = inputs
    if self.expand_ratio != 1:
      x = _conv(hidden, 1, dtype=self.dtype, name='expand_conv')(x)
      x = nn.relu6(self.norm(name='bn0')(x))
    x = DepthwiseConv(self.kernel, self.stride, dtype=self.dtype, name='depthwise_conv')(x)
    x = nn.relu6(self.norm(name='bn1')(x))
    x = _conv(self.out_channels, 1, dtype=self.dtype, name='project_conv')(x)
    x = self.norm(name='bn2')(x)
    if self.stride == 1 and inputs.shape[-1] == self.out_channels:
      x = x + inputs
    return x


def _tf_norm(norm: ModuleDef) -> ModuleDef:
  return functools.partial(norm, epsilon=TF_EPSILON, momentum=TF_MOMENTUM)


def _run_blocks(module: nn.Module, x, stages: range):
  norm = _tf_norm(module.norm)
  for index, stage, stride, kernel, expand, out in module.spec.blocks():
    if stage in stages:
      x = MBConvBlock(kernel, stride, expand, out, norm, dtype=module.dtype,
                      name=f'block{index}')(x)
  return x


def tf_inputs(x):
  """ImageNet mean/std-normalised images → (pixel − 127) / 128, pixels in 0…255."""
  pixels = to_unit_range(x) * 255.0
  return ((pixels - 127.0) / 128.0).astype(x.dtype)


class EfficientNetTrunk(nn.Module):
  """Stem and the stages up to stride 16: image (n, H, W, 3) → T (n, H/16, W/16, C)."""

  spec: EfficientNetSpec
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = tf_inputs(x)
    x = _conv(self.spec.stem_width, 3, 2, dtype=self.dtype, name='conv_stem')(x)
    x = nn.relu6(_tf_norm(self.norm)(name='bn0')(x))
    return _run_blocks(self, x, range(self.spec.trunk_stages))


class EfficientNetLastStage(nn.Module):
  """The stride-32 stages and the 1×1 head convolution: T → (n, H/32, W/32, 1280)."""

  spec: EfficientNetSpec
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _run_blocks(self, x, range(self.spec.trunk_stages, len(self.spec.stages)))
    x = _conv(self.spec.head_width, 1, dtype=self.dtype, name='conv_head')(x)
    return nn.relu6(_tf_norm(self.norm)(name='bn1')(x))


class EfficientNetLite(nn.Module):
  """Trunk + last stage + global average pool [+ ImageNet classifier]: the whole
  EfficientNet-Lite, for checking converted weights (dropout is not applied)."""

  spec: EfficientNetSpec
  num_classes: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
    x = self.spec.trunk(norm, self.dtype, name='trunk')(x)
    x = self.spec.last_stage(norm, self.dtype, name='last_stage')(x)
    x = global_average_pool(x)
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, name='classifier')(x)
    return x
