"""An independent PyTorch build of the networks and losses, written from docs/method.md, for
the tests and benchmarks that check aah_jax against it. Nothing here imports aah_jax.

- ``TorchvisionResNet``: torchvision's ResNet modules and state-dict key names (and the CPU
  default's narrow ResNet-10, 'small_cnn').
- ``A2NetPlusPlus``: the whole network (§2): a ResNet trunk (stem, stages 1–3), the last
  stage twice (global and local copies), the attention branch, the tied attribute codec W and
  the two self-consistency image decoders; ``use_attention`` / ``use_image_decoder`` False
  give the ADSH ablation.
- ``loss_terms``: the five loss terms (§3) on its outputs.
- ``flax_to_torch_key`` / ``load_flax_variables``: copy a Flax variable tree into it, by a
  mapping written here (not aah_jax.models.convert).
"""

import re

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride here
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = torch.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


_WIDTHS = (64, 128, 256, 512)
# name → (block, blocks per stage, planes per stage, stem, stem width): torchvision's ResNets,
# and the narrow ResNet-10 of the CPU default ('small' stem: one 3×3 stride-1 conv, no pool).
ARCHS = {
    'resnet18': (BasicBlock, (2, 2, 2, 2), _WIDTHS, 'imagenet', 64),
    'resnet50': (Bottleneck, (3, 4, 6, 3), _WIDTHS, 'imagenet', 64),
    'small_cnn': (BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128), 'small', 16),
}


def make_stage(block, inplanes, planes, blocks, stride):
  """torchvision's ResNet._make_layer: (the stage, its output channels)."""
  downsample = None
  if stride != 1 or inplanes != planes * block.expansion:
    downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride,
                                         bias=False), nn.BatchNorm2d(planes * block.expansion))
  layers = [block(inplanes, planes, stride, downsample)]
  layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
  return nn.Sequential(*layers), planes * block.expansion


class ResNetTrunk(nn.Module):
  """Stem and stages 1–3 of torchvision's ResNet (same key names): image → T."""

  def __init__(self, block, layers, widths=_WIDTHS, stem='imagenet', stem_width=64):
    super().__init__()
    self.block, self.layers, self.widths = block, layers, widths
    if stem == 'imagenet':
      self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
    else:
      self.conv1 = nn.Conv2d(3, stem_width, 3, 1, 1, bias=False)
      self.maxpool = nn.Identity()
    self.bn1 = nn.BatchNorm2d(stem_width)
    channels = stem_width
    for i in range(3):
      stage, channels = make_stage(block, channels, widths[i], layers[i], 1 if i == 0 else 2)
      setattr(self, f'layer{i + 1}', stage)
    self.channels = channels

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    return self.layer3(self.layer2(self.layer1(x)))

  def last_stage(self):
    """A fresh last stage (stride 2) for this trunk: (the stage, its output channels)."""
    return make_stage(self.block, self.channels, self.widths[3], self.layers[3], 2)


class TorchvisionResNet(ResNetTrunk):
  """torchvision.models.resnet.ResNet's modules and key names."""

  def __init__(self, *arch):
    super().__init__(*arch)
    self.layer4, channels = self.last_stage()
    self.fc = nn.Linear(channels, 1000)

  def features(self, x):
    t = super().forward(x)
    s = self.layer4(t)
    return t, s, s.mean(dim=(2, 3))


class AttentionBranch(nn.Module):
  """T → A (n, M, h, w): three times [bottleneck with identity shortcut, a quarter of its input
  wide inside → 1×1 conv + BN], C → C/4 → C/16 → M, then ReLU."""

  def __init__(self, channels, num_maps):
    super().__init__()
    for i in range(3):
      assert channels % 4 == 0, channels
      setattr(self, f'block{i}', Bottleneck(channels, channels // 4))
      out = channels // 4 if i < 2 else num_maps
      setattr(self, f'narrow{i}_conv', nn.Conv2d(channels, out, 1, bias=False))
      setattr(self, f'narrow{i}_bn', nn.BatchNorm2d(out))
      channels = out

  def forward(self, t):
    x = t
    for i in range(3):
      x = getattr(self, f'block{i}')(x)
      x = getattr(self, f'narrow{i}_bn')(getattr(self, f'narrow{i}_conv')(x))
    return torch.relu(x)


class AttributeCodec(nn.Module):
  """u = tanh(v Wᵀ), v̂ = u W with one W (k × D)."""

  def __init__(self, bits, dim):
    super().__init__()
    self.W = nn.Parameter(torch.empty(bits, dim))
    nn.init.kaiming_uniform_(self.W, a=5 ** 0.5)

  def forward(self, v):
    u = torch.tanh(v @ self.W.t())
    return u, u @ self.W


class ImageDecoder(nn.Module):
  """features → Linear(·, 512) as a 1×1 map → ConvTranspose(seed, 1, 0) → (4, 2, 1)
  transposed convs doubling to the image size; BN + ReLU after each, BN + sigmoid last."""

  def __init__(self, dim, image_size, embed_dim=512, base_channels=256):
    super().__init__()
    seed, doublings = image_size, 0
    while seed % 2 == 0 and seed // 2 >= 4:
      seed, doublings = seed // 2, doublings + 1
    channels = [max(base_channels >> i, 1) for i in range(doublings)] + [3]
    self.encoder = nn.Linear(dim, embed_dim)
    previous = embed_dim
    for i, out in enumerate(channels):
      kernel, stride, padding = (seed, 1, 0) if i == 0 else (4, 2, 1)
      setattr(self, f'deconv{i}', nn.ConvTranspose2d(previous, out, kernel, stride, padding,
                                                     bias=False))
      setattr(self, f'bn{i}', nn.BatchNorm2d(out))
      previous = out
    self.num_layers = len(channels)

  def forward(self, features):
    x = self.encoder(features)[:, :, None, None]
    for i in range(self.num_layers):
      x = getattr(self, f'bn{i}')(getattr(self, f'deconv{i}')(x))
      x = torch.sigmoid(x) if i == self.num_layers - 1 else torch.relu(x)
    return x


class A2NetPlusPlus(nn.Module):
  """images (n, 3, S, S) → dict of u, v, v_hat, image_from_v, image_from_v_hat, attention
  (NCHW; the images and attention None where their path is off)."""

  def __init__(self, arch, bits, image_size, num_maps=None, use_attention=True,
               use_image_decoder=True, embed_dim=512, base_channels=256):
    super().__init__()
    self.trunk = ResNetTrunk(*ARCHS[arch])
    self.global_stage, channels = self.trunk.last_stage()
    self.num_maps = bits if num_maps is None else num_maps
    self.use_attention = use_attention
    parts = 1
    if use_attention:
      self.attention = AttentionBranch(self.trunk.channels, self.num_maps)
      self.local_stage, _ = self.trunk.last_stage()
      parts += self.num_maps
    dim = parts * channels
    self.attribute_codec = AttributeCodec(bits, dim)
    self.use_image_decoder = use_image_decoder
    if use_image_decoder:
      self.decoder_v = ImageDecoder(dim, image_size, embed_dim, base_channels)
      self.decoder_v_hat = ImageDecoder(dim, image_size, embed_dim, base_channels)

  def forward(self, images):
    t = self.trunk(images)
    g = self.global_stage(t).mean(dim=(2, 3))
    a = None
    if self.use_attention:
      a = self.attention(t)
      n, m = a.shape[:2]
      parts = (t[:, None] * a[:, :, None]).reshape(n * m, *t.shape[1:])  # image-major
      x = self.local_stage(parts).mean(dim=(2, 3)).reshape(n, -1)  # x_1 … x_M
      v = torch.cat([x, g], dim=1)
    else:
      v = g
    u, v_hat = self.attribute_codec(v)
    out = {'u': u, 'v': v, 'v_hat': v_hat, 'attention': a,
           'image_from_v': None, 'image_from_v_hat': None}
    if self.use_image_decoder and self.training:
      out['image_from_v'] = self.decoder_v(v)
      out['image_from_v_hat'] = self.decoder_v_hat(v_hat)
    return out


def loss_terms(out, B, S_batch, omega, images_unit, *, gamma, bits):
  """The terms of §3 from the network's outputs: F = u, B (N × k), S_batch (n × N), ω, and the
  input images in [0, 1] (NCHW) for the image term."""
  F = out['u']
  n, num_database = S_batch.shape
  scale = 12.0 / bits / (n * num_database)
  gram = F.t() @ F - n * torch.eye(bits, dtype=F.dtype)
  terms = {
      'hash': ((bits * S_batch - F @ B.t()) ** 2).sum() * scale,
      'quant': gamma * ((F - B[omega]) ** 2).sum() * scale,
      'dec': (gram ** 2).mean() / n / bits,
      'rec': ((out['v_hat'] - out['v']) ** 2).mean(),
  }
  if out['image_from_v'] is not None:
    terms['img'] = sum(((out[name] - images_unit) ** 2).mean()
                       for name in ('image_from_v', 'image_from_v_hat'))
  return terms


# Flax parameter and batch-statistic names → PyTorch state-dict names.
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
               'var': 'running_var', 'W': 'W'}


def flax_to_torch_key(path: tuple) -> str:
  """('trunk', 'layer1', 'block0', 'conv1', 'kernel') → 'trunk.layer1.0.conv1.weight'.

  Blocks of a ResNet stage are a Sequential's indices; the shortcut's conv and BN are
  downsample.0 and .1; the attention branch keeps its own block names.
  """
  parts = list(path[:-1]) + [_LEAF_NAMES[path[-1]]]
  key = '.'.join(parts)
  key = re.sub(r'(layer\d|global_stage|local_stage)\.block(\d+)', r'\1.\2', key)
  return key.replace('downsample_conv', 'downsample.0').replace('downsample_bn', 'downsample.1')


def flax_to_torch_array(path: tuple, value) -> np.ndarray:
  """A Flax leaf in PyTorch's layout: conv (kh, kw, in, out) → (out, in, kh, kw); transposed
  conv (kh, kw, out, in) → (in, out, kh, kw), PyTorch's, without a spatial flip (Flax's
  transpose_kernel=True is the gradient of a conv, as PyTorch's is); dense (in, out) →
  (out, in)."""
  value = np.asarray(value)
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if value.ndim == 2 and path[-1] == 'kernel':
    return value.T
  return value


def _flat(tree, prefix=()):
  for name, value in tree.items():
    if isinstance(value, dict) or hasattr(value, 'items'):
      yield from _flat(value, prefix + (name,))
    else:
      yield prefix + (name,), value


def flax_variables_as_state_dict(variables) -> dict:
  """{'params': …, 'batch_stats': …} → a PyTorch state dict (without num_batches_tracked)."""
  return {flax_to_torch_key(path): torch.from_numpy(np.array(flax_to_torch_array(path, value)))
          for collection in ('params', 'batch_stats')
          for path, value in _flat(variables.get(collection, {}))}


def load_flax_variables(net: nn.Module, variables):
  """Copies every Flax variable into net; every tensor of net gets one (strict), bar
  BatchNorm's num_batches_tracked counters."""
  state = flax_variables_as_state_dict(variables)
  missing, unexpected = net.load_state_dict(state, strict=False)
  missing = [k for k in missing if not k.endswith('num_batches_tracked')]
  if missing or unexpected:
    raise KeyError(f'Flax → PyTorch: unmapped torch tensors {missing}, unknown keys {unexpected}')
  return net


def torch_grads_by_flax_path(net: nn.Module, params) -> dict:
  """The .grad of every torch parameter, keyed by the Flax path of the parameter it mirrors and
  in Flax's layout (the inverse of ``flax_to_torch_array``)."""
  named = dict(net.named_parameters())
  grads = {}
  for path, value in _flat(params):
    grad = named[flax_to_torch_key(path)].grad.detach().numpy()
    if grad.ndim == 4:
      grad = grad.transpose(2, 3, 1, 0)
    elif grad.ndim == 2 and path[-1] == 'kernel':
      grad = grad.T
    assert grad.shape == np.shape(value), (path, grad.shape, np.shape(value))
    grads[path] = grad
  return grads
