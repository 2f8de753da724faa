"""ImageNet-pretrained backbones as aah_jax variables: ResNets from torchvision or timm state
dicts, EfficientNet-Lite0 from lukemelas/EfficientNet-PyTorch-layout ones (the command
is ``aah-convert``, aah_jax/cli/aah_convert.py).

Reads a state dict (``.pth`` needs torch; ``.safetensors`` and ``.npz`` do not), maps
every tensor to the backbone's Flax names and layouts (conv weights OIHW → HWIO, depthwise
C1kk → kk1C; BN weight/bias → scale/bias; running mean/var → batch statistics;
``num_batches_tracked`` and the classifier ``fc``/``_fc`` dropped), and writes
``{'params': …, 'batch_stats': …}`` for the trunk and the last stage as one ``.npz`` of
``collection/module/…/name`` arrays. Unknown, missing or mis-shaped keys are an error that
lists them.

``load_pretrained(variables, path)`` puts such a file into a network's variables: the
trunk, and the last stage into both the global and the local path; everything else
(attention, W, encoders, generators) keeps its initialisation.
"""

import dataclasses
import os
import re
import zipfile
from typing import Callable, Optional

from absl import logging
import flax.traverse_util
import jax
import numpy as np

from aah_jax.models import A2NetPlusPlus, backbone_spec

_BN = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
       'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}


def read_state_dict(path: str) -> dict:
  """{key: float32 array} of a .pth (torch), .safetensors or .npz state dict."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} does not exist')
  if path.endswith(('.pth', '.pt', '.bin')):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(f'reading {path} needs torch: pip install -e ".[torch]", or convert it '
                        f'to .safetensors / .npz first') from None
    try:
      loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch's message may advise weights_only=False: never do that
      raise ValueError(f'{path} is not a PyTorch state dict of tensors (torch.load with '
                       f'weights_only=True refused it: {type(error).__name__})') from None
    if not isinstance(loaded, dict):
      raise ValueError(f'{path} holds a {type(loaded).__name__}, not a state dict')
    loaded = loaded.get('state_dict', loaded)
    return {k: v.detach().cpu().numpy() for k, v in loaded.items() if hasattr(v, 'numpy')}
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return dict(load_file(path))
    except Exception as error:  # safetensors says only e.g. "header too large"
      raise ValueError(f'{path} is not a safetensors state dict ({error})') from None
  if path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
      raise ValueError(f'{path} is not an .npz state dict ({type(error).__name__})') from None
  raise ValueError(f'{path}: unknown state-dict format (.pth, .safetensors or .npz)')


def _resnet_path(key: str, spec):
  """torchvision/timm ResNet key → (collection, path) of the trunk/last stage."""
  del spec
  *module, name = key.split('.')
  if module[0] == 'layer4':
    scope = ('last_stage', f'block{module[1]}')
    rest = module[2:]
  elif module[0].startswith('layer'):
    scope = ('trunk', module[0], f'block{module[1]}')
    rest = module[2:]
  else:
    scope, rest = ('trunk',), module
  if rest[:1] == ['downsample']:
    rest = ['downsample_conv' if rest[1] == '0' else 'downsample_bn']
  return _layer_path(key, scope, rest[0], name)


def _efficientnet_path(key: str, spec):
  """lukemelas EfficientNet(-Lite) key (``_blocks.12._depthwise_conv.weight``) → (collection,
  path) of the trunk/last stage."""
  *module, name = key.split('.')
  module = [m.lstrip('_') for m in module]
  if module[0] == 'blocks':
    block = int(module[1])
    trunk_blocks = sum(stage.repeats for stage in spec.stages[:spec.trunk_stages])
    scope = ('trunk' if block < trunk_blocks else 'last_stage', f'block{block}')
    rest = module[2:]
  elif module[0] in ('conv_stem', 'bn0'):
    scope, rest = ('trunk',), module
  else:
    scope, rest = ('last_stage',), module
  return _layer_path(key, scope, rest[0], name)


def _layer_path(key: str, scope: tuple, layer: str, name: str):
  if 'conv' in layer:
    if name != 'weight':
      raise KeyError(key)
    return 'params', scope + (layer, 'kernel')
  if layer.startswith('bn') or layer == 'downsample_bn':
    collection, leaf = _BN[name]
    return collection, scope + (layer, leaf)
  raise KeyError(key)


_BN_KEY = {leaf: name for name, (_, leaf) in _BN.items()}


def _leaf_key(layer: str, leaf: str) -> str:
  return f'{layer}.{"weight" if leaf == "kernel" else _BN_KEY[leaf]}'


def _resnet_key(path: tuple) -> str:
  """(inverse of _resnet_path) a trunk/last-stage path → its torchvision key."""
  *scope, layer, leaf = path
  layer = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(layer, layer)
  if scope[0] == 'last_stage':
    prefix = f'layer4.{scope[1][len("block"):]}.'
  elif len(scope) == 3:
    prefix = f'{scope[1]}.{scope[2][len("block"):]}.'
  else:
    prefix = ''
  return prefix + _leaf_key(layer, leaf)


def _efficientnet_key(path: tuple) -> str:
  """(inverse of _efficientnet_path) a trunk/last-stage path → its lukemelas key."""
  *scope, layer, leaf = path
  prefix = f'_blocks.{scope[1][len("block"):]}.' if len(scope) == 2 else ''
  return prefix + _leaf_key(f'_{layer}', leaf)


@dataclasses.dataclass(frozen=True)
class Layout:
  """A family of state dicts: where its keys go (and back), its classifier's key prefix,
  whose it is."""

  to_path: Callable
  to_key: Callable
  classifier: str
  source: str


_TORCHVISION = Layout(_resnet_path, _resnet_key, 'fc.', 'torchvision/timm')
_LUKEMELAS = Layout(_efficientnet_path, _efficientnet_key, '_fc.',
                    'lukemelas/EfficientNet-PyTorch layout')
ARCHS = {'resnet18': _TORCHVISION, 'resnet34': _TORCHVISION, 'resnet50': _TORCHVISION,
         'efficientnet_lite0': _LUKEMELAS}


def _strip_prefix(key: str) -> str:
  return re.sub(r'^(module|model)\.', '', key)


def _flax_path(key: str, arch: str, classifier: bool):
  """A state-dict key → (collection, path tuple), or None for what is dropped."""
  key, layout = _strip_prefix(key), ARCHS[arch]
  if key.endswith('num_batches_tracked'):
    return None
  if key.startswith(layout.classifier):
    leaf = key[len(layout.classifier):]
    return ('params', ('classifier', 'kernel' if leaf == 'weight' else leaf)) if classifier else None
  return layout.to_path(key, backbone_spec(arch))


def source_key(arch: str, collection: str, path: tuple) -> str:
  """The state-dict key that converts to (collection, path): what a file lacking it lacks."""
  if path[0] == 'classifier':
    return ARCHS[arch].classifier + ('weight' if path[1] == 'kernel' else path[1])
  return ARCHS[arch].to_key(path)


def expected_shapes(arch: str, num_classes: Optional[int] = None) -> dict:
  """{(collection, path): shape} of the trunk and last stage of backbone arch [and of an
  ImageNet classifier]."""
  model = A2NetPlusPlus(backbone=arch, bits=12, use_image_decoder=False)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=True),
                          jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32))
  expected = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in flax.traverse_util.flatten_dict(shapes[collection]).items():
      if path[0] == 'trunk':
        expected[(collection, path)] = leaf.shape
      elif path[0] == 'global_stage':
        expected[(collection, ('last_stage',) + path[1:])] = leaf.shape
  if num_classes:
    features = backbone_spec(arch).feature_channels
    expected[('params', ('classifier', 'kernel'))] = (features, num_classes)
    expected[('params', ('classifier', 'bias'))] = (num_classes,)
  return expected


def convert(state_dict: dict, arch: str, classifier: bool = False) -> dict:
  """{'params': …, 'batch_stats': …} (trunk + last_stage) from a torchvision/timm ResNet or a
  lukemelas EfficientNet-Lite state dict; ``classifier=True`` keeps the ImageNet
  classifier too (as ``classifier``; the network itself has none)."""
  if arch not in ARCHS:
    raise ValueError(f'arch {arch!r}: choose one of {", ".join(ARCHS)}')
  bias = ARCHS[arch].classifier + 'bias'
  num_classes = next((np.shape(v)[0] for k, v in state_dict.items()
                      if _strip_prefix(k) == bias), None)
  expected = expected_shapes(arch, num_classes if classifier else None)
  converted, unknown, misshaped = {}, [], []
  for key, value in state_dict.items():
    try:
      target = _flax_path(key, arch, classifier)
    except (KeyError, IndexError, ValueError):
      unknown.append(key)
      continue
    if target is None:
      continue
    if target not in expected:
      unknown.append(key)
      continue
    value = np.asarray(value, np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW → HWIO (depthwise: C1kk → kk1C)
    elif value.ndim == 2:
      value = value.T  # Linear (out, in) → Dense (in, out)
    if value.shape != expected[target]:
      misshaped.append(f'{key} {tuple(value.shape)} (expected {expected[target]})')
      continue
    converted[target] = value
  missing = sorted(f'{source_key(arch, c, p)} (for {c}:{"/".join(p)})'
                   for c, p in set(expected) - set(converted))
  problems = []
  if unknown:
    problems.append(f'{len(unknown)} unknown key(s): {", ".join(sorted(unknown)[:20])}')
  if misshaped:
    problems.append(f'{len(misshaped)} mis-shaped: {", ".join(misshaped[:20])}')
  if missing:
    problems.append(f'{len(missing)} missing: {", ".join(missing[:20])}')
  if problems:
    raise ValueError(f'not a {ARCHS[arch].source} {arch} state dict: ' + '; '.join(problems))
  tree = {'params': {}, 'batch_stats': {}}
  for (collection, path), value in converted.items():
    tree[collection][path] = value
  return {c: flax.traverse_util.unflatten_dict(t) for c, t in tree.items()}


def save_variables(path: str, variables: dict):
  flat = {'/'.join((c,) + p): v for c in variables
          for p, v in flax.traverse_util.flatten_dict(variables[c]).items()}
  tmp = f'{path}.{os.getpid()}.tmp.npz'  # renamed when whole; concurrent writers don't mix
  np.savez(tmp, **flat)
  os.replace(tmp, path)


def load_variables(path: str) -> dict:
  with np.load(path, allow_pickle=False) as archive:
    flat = {tuple(k.split('/')): archive[k] for k in archive.files}
  return {c: flax.traverse_util.unflatten_dict({p[1:]: v for p, v in flat.items() if p[0] == c})
          for c in {p[0] for p in flat}}


def load_pretrained(variables: dict, path: str) -> dict:
  """variables with the trunk and both last-stage copies replaced from a converted file."""
  pretrained = load_variables(path)
  out = jax.tree.map(lambda x: x, variables)
  loaded = []
  for collection in ('params', 'batch_stats'):
    source = pretrained.get(collection, {})
    for name, target in (('trunk', 'trunk'), ('last_stage', 'global_stage'),
                         ('last_stage', 'local_stage')):
      if name in source and target in out[collection]:
        want = jax.tree.map(np.shape, out[collection][target])
        have = jax.tree.map(np.shape, source[name])
        if want != have:
          raise ValueError(f'{path}: {name} does not fit the network\'s {target} '
                           f'(another backbone?)')
        out[collection][target] = jax.tree.map(np.asarray, source[name])
        loaded.append(f'{collection}/{target}')
  kept = sorted(set(out['params']) - {'trunk', 'global_stage', 'local_stage'})
  logging.info('pretrained %s: loaded %s; initialised as usual: %s', path,
               ', '.join(sorted(set(loaded))), ', '.join(kept))
  return out
