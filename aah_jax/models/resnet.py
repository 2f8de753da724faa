"""ResNets in the torchvision "v1.5" layout, split into trunk and last stage.

Module and parameter names follow torchvision's state-dict keys
(``layer3/block2/conv2`` is ``layer3.2.conv2``, ``downsample_conv`` is
``downsample.0``), and every convolution pads explicitly and symmetrically as
PyTorch does, so pretrained torchvision weights map 1:1.
"""

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Optional

import flax.linen as nn
import jax.numpy as jnp

from aah_jax.models.norm import BatchNorm
from aah_jax.models.precision import accumulation_dtype

ModuleDef = Callable[..., nn.Module]

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def global_average_pool(x):
  """(n, h, w, C) → (n, C), in float32 (float64 under float64 compute)."""
  return x.astype(accumulation_dtype(x.dtype)).mean(axis=(1, 2))


def conv(features: int, kernel: int, stride: int = 1, *, dtype: Any, name: str) -> nn.Conv:
  """A bias-free k×k convolution padded by k // 2 on every side, like PyTorch's."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=KAIMING_FAN_OUT, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3×3 convolutions (ResNet-18/34); stride on the first."""

  planes: int
  stride: int
  norm: ModuleDef
  dtype: Any = jnp.float32
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x):
    out = conv(self.planes, 3, self.stride, dtype=self.dtype, name='conv1')(x)
    out = nn.relu(self.norm(name='bn1')(out))
    out = conv(self.planes, 3, dtype=self.dtype, name='conv2')(out)
    out = self.norm(name='bn2')(out)
    return nn.relu(out + _shortcut(self, x, self.planes))


class Bottleneck(nn.Module):
  """1×1 → 3×3 → 1×1 (ResNet-50), stride on the 3×3 convolution (v1.5).

  out_channels: None for planes × 4 (the ResNets); set where a caller needs another
  width (the attention branch keeps its input width).
  """

  planes: int
  stride: int
  norm: ModuleDef
  dtype: Any = jnp.float32
  out_channels: Optional[int] = None
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x):
    out = conv(self.planes, 1, dtype=self.dtype, name='conv1')(x)
    out = nn.relu(self.norm(name='bn1')(out))
    out = conv(self.planes, 3, self.stride, dtype=self.dtype, name='conv2')(out)
    out = nn.relu(self.norm(name='bn2')(out))
    out_channels = self.out_channels or self.planes * 4
    out = conv(out_channels, 1, dtype=self.dtype, name='conv3')(out)
    out = self.norm(name='bn3')(out)
    return nn.relu(out + _shortcut(self, x, out_channels))


def _shortcut(block: nn.Module, x, out_channels: int):
  """Identity, or a strided 1×1 projection + BN where the shape changes."""
  if block.stride == 1 and x.shape[-1] == out_channels:
    return x
  x = conv(out_channels, 1, block.stride, dtype=block.dtype, name='downsample_conv')(x)
  return block.norm(name='downsample_bn')(x)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A ResNet's shape. The last stage is the "refine" stage of the method.

  Attributes:
    block: 'basic' or 'bottleneck'.
    stage_sizes: blocks per stage.
    widths: planes per stage (output channels are planes × expansion).
    stem: 'imagenet' (7×7/2 conv + 3×3/2 max-pool) or 'small' (3×3/1 conv).
    stem_width: channels of the stem convolution.
  """

  block: str
  stage_sizes: tuple[int, ...]
  widths: tuple[int, ...]
  stem: str = 'imagenet'
  stem_width: int = 64

  @property
  def block_cls(self):
    return BLOCKS[self.block]

  @property
  def trunk_channels(self) -> int:
    """C of the trunk output T (1024 for ResNet-50)."""
    return self.widths[-2] * self.block_cls.expansion

  @property
  def feature_channels(self) -> int:
    """C4, channels of the last stage (2048 for ResNet-50)."""
    return self.widths[-1] * self.block_cls.expansion

  def trunk(self, norm: ModuleDef, dtype: Any, name: str) -> nn.Module:
    return ResNetTrunk(self, norm, dtype=dtype, name=name)

  def last_stage(self, norm: ModuleDef, dtype: Any, name: str, remat: bool = False) -> nn.Module:
    return last_stage(self, norm, dtype, name, remat)


_RESNET_WIDTHS = (64, 128, 256, 512)
RESNETS = {
    'resnet18': BackboneSpec('basic', (2, 2, 2, 2), _RESNET_WIDTHS),
    'resnet34': BackboneSpec('basic', (3, 4, 6, 3), _RESNET_WIDTHS),
    'resnet50': BackboneSpec('bottleneck', (3, 4, 6, 3), _RESNET_WIDTHS),
    # For tests and the CPU default: a narrow ResNet-10 with a stride-1 stem, for
    # ≤ 32 px inputs (a 32 px image gives an 8×8 trunk output and a 4×4 last stage).
    'small_cnn': BackboneSpec('basic', (1, 1, 1, 1), (16, 32, 64, 128), stem='small',
                              stem_width=16),
}


class ResNetStage(nn.Module):
  """One stage: ``num_blocks`` blocks, the first strided."""

  block_cls: Any
  planes: int
  num_blocks: int
  stride: int
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      x = self.block_cls(self.planes, self.stride if i == 0 else 1, self.norm,
                         dtype=self.dtype, name=f'block{i}')(x)
    return x


def stage_stride(index: int) -> int:
  return 1 if index == 0 else 2


def last_stage(spec: BackboneSpec, norm: ModuleDef, dtype: Any, name: str,
               remat: bool = False) -> ResNetStage:
  """The backbone's last stage, as a module of its own (global or local path). remat:
  recompute its activations in the backward pass instead of keeping them (same
  parameters and results, less memory, one more forward)."""
  index = len(spec.stage_sizes) - 1
  stage_cls = nn.remat(ResNetStage) if remat else ResNetStage
  return stage_cls(spec.block_cls, spec.widths[index], spec.stage_sizes[index],
                   stage_stride(index), norm, dtype=dtype, name=name)


class ResNetTrunk(nn.Module):
  """Stem and all stages but the last: image (n, H, W, 3) → T (n, H/16, W/16, C)."""

  spec: BackboneSpec
  norm: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    spec = self.spec
    if spec.stem == 'imagenet':
      x = conv(spec.stem_width, 7, 2, dtype=self.dtype, name='conv1')(x)
      x = nn.relu(self.norm(name='bn1')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif spec.stem == 'small':
      x = conv(spec.stem_width, 3, dtype=self.dtype, name='conv1')(x)
      x = nn.relu(self.norm(name='bn1')(x))
    else:
      raise ValueError(f'unknown stem {spec.stem!r}')
    for i in range(len(spec.stage_sizes) - 1):
      x = ResNetStage(spec.block_cls, spec.widths[i], spec.stage_sizes[i], stage_stride(i),
                      self.norm, dtype=self.dtype, name=f'layer{i + 1}')(x)
    return x


class ResNet(nn.Module):
  """Trunk + last stage + global average pool: a torchvision ResNet without fc."""

  spec: BackboneSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype)
    x = ResNetTrunk(self.spec, norm, dtype=self.dtype, name='trunk')(x)
    x = last_stage(self.spec, norm, self.dtype, name='layer4')(x)
    return global_average_pool(x)
