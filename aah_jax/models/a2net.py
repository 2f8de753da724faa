"""A²-Net++: attribute-aware hashing with self-consistency (the whole network)."""

import functools
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from aah_jax.common import init_compile
from aah_jax.models.attention import AttentionBranch
from aah_jax.models.attributes import AttributeCodec
from aah_jax.models.backbones import backbone_spec
from aah_jax.models.image_decoder import ImageDecoder
from aah_jax.models.norm import BatchNorm
from aah_jax.models.precision import accumulation_dtype, compute_dtype
from aah_jax.models.resnet import global_average_pool


@flax.struct.dataclass
class A2NetOutput:
  """What the network computes for a batch in train mode.

  Attributes:
    u: (n, k) attribute vectors tanh(v Wᵀ); the hash codes are sign(u).
    v: (n, D) visual representation concat(x_1 … x_M, g).
    v_hat: (n, D) its reconstruction u W.
    image_from_v: (n, S, S, 3) G₁(E₁ v) in [0, 1], or None without the image path.
    image_from_v_hat: (n, S, S, 3) G₂(E₂ v̂), or None.
    attention: (n, h, w, M) attention maps A, or None without attention.
  """

  u: jax.Array
  v: jax.Array
  v_hat: jax.Array
  image_from_v: Optional[jax.Array]
  image_from_v_hat: Optional[jax.Array]
  attention: Optional[jax.Array]


def local_features(stage: nn.Module, t, a):
  """x_m = GAP(stage(T ⊙ A_m)) for every part m, concatenated: (n, M · C4).

  All M masked copies of T go through the one shared stage as a batch of n·M,
  image-major, so the blocks of the result are x_1 … x_M of each image.
  """
  n, h, w, c = t.shape
  m = a.shape[-1]
  parts = t[:, None] * jnp.moveaxis(a, -1, 1)[..., None]
  pooled = global_average_pool(stage(parts.reshape(n * m, h, w, c)))
  return pooled.reshape(n, m * pooled.shape[-1])


class A2NetPlusPlus(nn.Module):
  """image (n, S, S, 3), mean/std normalised → u (eval) or A2NetOutput (train).

  Attributes:
    backbone: a name in ``aah_jax.models.BACKBONES`` (ResNets, EfficientNet-Lite0).
    bits: k, the code length.
    num_attention_maps: M (OPEN in the spec; None means M = k).
    use_attention: False keeps the global feature only (v = g; ADSH with a ResNet).
    use_image_decoder: False drops the self-consistency image path.
    embed_dim: output size of the image decoders' linear map E.
    generator_base_channels: channels of the generator's first map (256).
    bn_groups: BatchNorm statistics over this many equal slices of the batch.
    dtype: compute dtype of convolutions (params, BN statistics and the head
      stay float32; all float64 under float64, the CPU reference mode).
    remat_local_stage: recompute the local stage-4 path (it runs M times per image)
      in the backward pass instead of storing its activations.
    codec_init: W's initialisation (``attributes.CODEC_INITS``): 'uniform', PyTorch's
      U(±1/√D); 'global', the global-only network's W for g and 0 for the parts.
  """

  backbone: str = 'resnet50'
  bits: int = 12
  num_attention_maps: Optional[int] = None
  use_attention: bool = True
  use_image_decoder: bool = True
  embed_dim: int = 512
  generator_base_channels: int = 256
  bn_groups: int = 1
  dtype: Any = jnp.float32
  remat_local_stage: bool = False
  codec_init: str = 'uniform'

  @property
  def num_maps(self) -> int:
    return self.bits if self.num_attention_maps is None else self.num_attention_maps

  @property
  def feature_dim(self) -> int:
    """D = (M + 1) · C4 with attention, C4 without."""
    parts = self.num_maps + 1 if self.use_attention else 1
    return parts * backbone_spec(self.backbone).feature_channels

  @nn.compact
  def __call__(self, images, train: bool = False):
    spec = backbone_spec(self.backbone)
    norm = functools.partial(BatchNorm, use_running_average=not train,
                             num_groups=self.bn_groups, dtype=self.dtype)
    t = spec.trunk(norm, self.dtype, name='trunk')(images.astype(self.dtype))
    s = spec.last_stage(norm, self.dtype, name='global_stage')(t)
    g = global_average_pool(s)
    self.sow('intermediates', 'trunk_features', t)
    self.sow('intermediates', 'global_stage_features', s)
    self.sow('intermediates', 'global_feature', g)
    if self.use_attention:
      a = AttentionBranch(self.num_maps, norm, dtype=self.dtype, name='attention')(t)
      self.sow('intermediates', 'attention_maps', a)
      local_stage = spec.last_stage(norm, self.dtype, name='local_stage',
                                    remat=self.remat_local_stage)
      x = local_features(local_stage, t, a)
      self.sow('intermediates', 'local_features', x)
      v = jnp.concatenate([x, g], axis=-1)
    else:
      a, v = None, g
    u, v_hat = AttributeCodec(self.bits, self.codec_init, v.shape[-1] - g.shape[-1],
                              name='attribute_codec')(v)
    if not train:
      return u

    image_from_v = image_from_v_hat = None
    if self.use_image_decoder:
      decoder = functools.partial(ImageDecoder, images.shape[1], norm, self.embed_dim,
                                  self.generator_base_channels, dtype=self.dtype)
      image_from_v = decoder(name='decoder_v')(v)
      image_from_v_hat = decoder(name='decoder_v_hat')(v_hat)
    return A2NetOutput(u=u, v=v, v_hat=v_hat, image_from_v=image_from_v,
                       image_from_v_hat=image_from_v_hat, attention=a)


def create_model(model_config) -> A2NetPlusPlus:
  """The network described by a ``config.model`` ConfigDict (or mapping)."""
  fields = dict(model_config)
  fields.pop('pretrained', None)  # weights to start from: the run loads them (aah_jax.models.convert)
  dtype = compute_dtype(fields.pop('dtype', 'float32'))
  unknown = set(fields) - set(A2NetPlusPlus.__dataclass_fields__)
  if unknown:
    raise ValueError(f'config.model has unknown fields {sorted(unknown)}')
  return A2NetPlusPlus(dtype=dtype, **fields)


def init_variables(model: A2NetPlusPlus, rng, image_size: int):
  """Parameters and batch statistics of every module, the image path included.

  Initialises in train mode (eval mode skips the image decoders) on a batch of
  ``bn_groups`` images; BatchNorm leaves its running statistics untouched at
  initialisation. Variables are float32 (float64 under float64 compute). Compiled by
  ``init_compile`` (faster on CPU, same variables) unless traced into a caller's program.
  """
  images = jnp.zeros((model.bn_groups, image_size, image_size, 3), jnp.float32)
  init = jax.jit(functools.partial(model.init, train=True))
  if isinstance(rng, jax.core.Tracer):  # traced into a caller's program (train.init_state)
    variables = init(rng, images)
  else:
    variables = init_compile.compile_init(init, rng, images)(rng, images)
  return jax.tree.map(lambda x: x.astype(accumulation_dtype(model.dtype)), variables)
