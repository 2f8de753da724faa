"""torchvision-layout ResNets (defined here, random weights) converted to aah_jax: the same
stage-3, stage-4 and pooled features in eval mode, through every file format."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from aah_jax.models import A2NetPlusPlus, convert, init_variables
from torch_reference import ARCHS, TorchvisionResNet




def _randomised(arch):
  torch.manual_seed(0)
  net = TorchvisionResNet(*ARCHS[arch])
  with torch.no_grad():  # non-trivial BN statistics and affine parameters
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  return net.eval()


def _save(state_dict, path, fmt):
  arrays = {k: v.numpy() for k, v in state_dict.items()}
  if fmt == 'pth':
    torch.save(state_dict, path)
  elif fmt == 'safetensors':
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
  else:
    np.savez(path, **arrays)


@pytest.mark.equivalence
@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_converted_weights_give_torchvision_features(tmp_path, arch):
  net = _randomised(arch)
  images = torch.randn(2, 3, 96, 96, dtype=torch.float64)
  with torch.no_grad():
    t_ref, s_ref, pooled_ref = (x.numpy() for x in net.double().features(images))
  t_ref, s_ref = t_ref.transpose(0, 2, 3, 1), s_ref.transpose(0, 2, 3, 1)  # NCHW → NHWC
  with jax.enable_x64(True):
    model = A2NetPlusPlus(backbone=arch, bits=12, use_image_decoder=False, dtype=jnp.float64)
    base = jax.device_get(init_variables(model, jax.random.key(0), 96))
  for fmt in ('pth', 'safetensors', 'npz'):
    source = tmp_path / f'{arch}.{fmt}'
    _save(net.float().state_dict(), source, fmt)  # the float32 weights a user converts
    out = tmp_path / f'{arch}_{fmt}_flax.npz'
    convert.save_variables(str(out), convert.convert(convert.read_state_dict(str(source)), arch))
    variables = convert.load_pretrained(base, str(out))
    with jax.enable_x64(True):
      _, state = model.apply(variables, images.numpy().transpose(0, 2, 3, 1), train=False,
                             mutable=['intermediates'])
      inter = {k: np.asarray(v[0]) for k, v in state['intermediates'].items()}
    # Both frameworks in float64 (the converted float32 weights are exact in it): they sum in
    # different orders, which over ≤ 50 layers of ≤ 4,608-term dot products is a worst-case
    # 50 · 4,608 · 1.1e-16 ≈ 2.5e-11 of the values' scale; 1e-9 of the largest |value| leaves
    # a factor of 40 for BatchNorm's rescaling, and a wrong weight moves features by O(1).
    for name, got, want in (('stage 3', inter['trunk_features'], t_ref),
                            ('stage 4', inter['global_stage_features'], s_ref),
                            ('pooled', inter['global_feature'], pooled_ref)):
      assert got.dtype == np.float64
      scale = np.abs(want).max()
      assert np.abs(got - want).max() <= 1e-9 * max(scale, 1.0), (fmt, name)
    for path in ('global_stage', 'local_stage'):  # the last stage initialises both paths
      np.testing.assert_array_equal(variables['params'][path]['block0']['conv1']['kernel'],
                                    net.layer4[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables['params']['attribute_codec']['W'],
                                  base['params']['attribute_codec']['W'])  # untouched


def test_bad_state_dicts_are_listed():
  state = {k: v.numpy() for k, v in _randomised('resnet18').state_dict().items()}
  state['layer9.0.conv1.weight'] = state.pop('layer1.0.conv1.weight')
  state['bn1.weight'] = np.ones(3, np.float32)
  with pytest.raises(ValueError) as error:
    convert.convert(state, 'resnet18')
  message = str(error.value)
  assert 'unknown key(s): layer9.0.conv1.weight' in message
  assert 'mis-shaped: bn1.weight (3,)' in message
  # Missing ones are named by the key the file lacks, with where it would go.
  assert ('missing: bn1.weight (for params:trunk/bn1/scale), layer1.0.conv1.weight (for '
          'params:trunk/layer1/block0/conv1/kernel)') in message


@pytest.mark.parametrize('arch', list(convert.ARCHS))
def test_source_key_inverts_the_mapping(arch):
  """The key named for a missing parameter is the one that converts to it: every trunk and
  last-stage parameter and statistic of the arch (and the classifier) round-trips."""
  expected = convert.expected_shapes(arch, num_classes=1000)
  for collection, path in expected:
    key = convert.source_key(arch, collection, path)
    assert convert._flax_path(key, arch, classifier=True) == (collection, path), key


def test_config_model_pretrained_starts_the_run_from_the_file(tmp_path, tiny_data_dir):
  from aah_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  net = _randomised('resnet18')
  converted = tmp_path / 'resnet18.npz'
  convert.save_variables(str(converted), convert.convert(
      {k: v.numpy() for k, v in net.state_dict().items()}, 'resnet18'))
  config = tiny.get_config()
  config.model.backbone = 'resnet18'
  config.model.num_attention_maps = 2
  config.model.use_image_decoder = False
  config.model.pretrained = str(converted)
  config.data.data_dir = str(tiny_data_dir)
  state = run_lib.prepare(config).init_state()
  want = net.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0)
  for path in ('global_stage', 'local_stage'):
    np.testing.assert_array_equal(np.asarray(state.params[path]['block1']['conv2']['kernel']), want)
  np.testing.assert_array_equal(np.asarray(state.batch_stats['trunk']['bn1']['var']),
                                net.bn1.running_var.numpy())
