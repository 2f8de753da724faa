"""The whole A²-Net++ against an independent PyTorch build (tests/torch_reference.py, written
from docs/method.md), weights copied from the Flax variables by a mapping written there:
outputs in train and eval mode, the loss terms, the gradient of the step's objective with
respect to every parameter, and BatchNorm's running statistics after one train-mode call.
Also the ADSH ablation (no attention, no image decoders).

Both frameworks run in float64, so that what is compared is the function, not two float32
summation orders (docs: tests/tolerances.py). ResNet-18, 64 px, 12 bits (M = 12 parts), a batch
of 4, BatchNorm parameters and statistics randomised so that eval mode differs from train mode.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aah_jax.common.normalization import IMAGENET_MEAN, IMAGENET_STD
from aah_jax.models import A2NetPlusPlus, init_variables
from aah_jax.training import losses, train
import torch_reference

IMAGE_SIZE, BITS, BATCH, NUM_DATABASE, GAMMA, R = 64, 12, 4, 20, 200.0, 0.3

# docs/method.md §3.3: the weights of phase 2 (all five terms on). The test checks that the
# library's defaults are these, then gives both frameworks the same numbers.
PHASE_2_WEIGHTS = {'hash': 1.0, 'quant': 1.0, 'dec': 1.0, 'rec': 1.0, 'img': 0.1}

# float64 on both sides, summing in different orders: over the ~40 layers of forward and
# backward passes, each a dot product of ≤ 4,608 terms, a worst-case relative error of
# 40 · 4,608 · 1.1e-16 ≈ 2e-11 of the values' scale; 1e-9 leaves a factor of 50 for BatchNorm's
# division by small-batch standard deviations. A wrong weight, layout or term moves values by
# O(1) of their scale (the float32 bounds are 1e-4 for values and 1e-3 for gradients).
RTOL64 = 1e-9


def _close(name, got, want, rtol=RTOL64):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  scale = np.abs(want).max()
  error = np.abs(got - want).max()
  assert scale > 0, f'{name}: all zero, nothing compared'
  assert error <= rtol * scale, f'{name}: max error {error:.3g}, scale {scale:.3g}'


def _randomised_variables(model, seed):
  """Initial Flax variables with BatchNorm's scale, bias and running statistics, and the image
  decoders' linear biases, drawn at random (all in float64)."""
  variables = jax.device_get(init_variables(model, jax.random.key(seed), IMAGE_SIZE))
  rng = np.random.default_rng(seed)

  def draw(path, value):
    leaf = path[-1].key
    value = np.asarray(value)
    low_high = {'scale': (0.5, 1.5), 'bias': (-0.2, 0.2), 'mean': (-0.2, 0.2), 'var': (0.5, 1.5)}
    is_bn = leaf in ('mean', 'var') or (leaf in ('scale', 'bias') and value.ndim == 1)
    if not is_bn:
      return value
    return rng.uniform(*low_high[leaf], size=value.shape)

  return jax.tree_util.tree_map_with_path(draw, variables)


def _batch(seed):
  rng = np.random.default_rng(seed + 1)
  images = rng.standard_normal((BATCH, IMAGE_SIZE, IMAGE_SIZE, 3))
  db_labels = rng.integers(0, 5, NUM_DATABASE)
  omega = rng.choice(NUM_DATABASE, BATCH, replace=False)
  S = np.where(db_labels[omega][:, None] == db_labels[None, :], 1.0, -R)
  B = rng.choice([-1.0, 1.0], (NUM_DATABASE, BITS))
  return images, omega, S, B


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _flax_outputs(model, variables, images, omega, S, B, weights):
  """(train-mode outputs, terms, gradient by path, new batch_stats, eval u, eval v, eval A)."""
  batch = {'image': jnp.asarray(images), 'index': jnp.asarray(omega)}
  similarity = {'B': jnp.asarray(B), 'S_batch': jnp.asarray(S)}

  def with_output(inputs, phase, weights):  # the default objective, keeping the outputs
    loss, terms = losses.weighted_total(inputs, phase, weights)
    return loss, (terms, inputs.output)

  objective = jax.jit(jax.value_and_grad(
      lambda params: train.batch_objective(
          params, batch_stats=variables['batch_stats'], batch=batch, similarity=similarity,
          phase=2, model=model, gamma=GAMMA, loss_fn=with_output,
          weights={name: (0.0, w) for name, w in weights.items()}),
      has_aux=True))
  (_, ((terms, output), _, batch_stats)), grads = objective(variables['params'])
  u_eval, inter = jax.jit(lambda v: model.apply(v, batch['image'], train=False,
                                                mutable=['intermediates']))(variables)
  inter = {name: value[0] for name, value in inter['intermediates'].items()}
  grads = {tuple(p.key for p in path): g
           for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
  return output, terms, grads, batch_stats, u_eval, inter


def _check_network(arch_kwargs, weights, seed):
  with jax.enable_x64(True):
    model = A2NetPlusPlus(backbone='resnet18', bits=BITS, dtype=jnp.float64, **arch_kwargs)
    variables = _randomised_variables(model, seed)
    images, omega, S, B = _batch(seed)
    output, terms, grads, batch_stats, u_eval, inter = jax.device_get(
        _flax_outputs(model, variables, images, omega, S, B, weights))

  net = torch_reference.A2NetPlusPlus(
      'resnet18', BITS, IMAGE_SIZE, use_attention=model.use_attention,
      use_image_decoder=model.use_image_decoder, base_channels=model.generator_base_channels,
      embed_dim=model.embed_dim).double()
  torch_reference.load_flax_variables(net, variables)
  x = _nchw(images)

  # Eval mode: running statistics, no image path.
  net.eval()
  with torch.no_grad():
    want = net(x)
  _close('eval u', u_eval, want['u'])
  v_eval = inter['global_feature']
  if model.use_attention:
    v_eval = np.concatenate([inter['local_features'], v_eval], axis=-1)
    _close('eval attention', inter['attention_maps'],
           want['attention'].numpy().transpose(0, 2, 3, 1))
  _close('eval v', v_eval, want['v'])

  # Train mode: batch statistics, every output, the terms and the gradient of their sum.
  net.train()
  want = net(x)
  for name in ('u', 'v', 'v_hat'):
    _close(f'train {name}', getattr(output, name), want[name].detach())
  for name in ('attention', 'image_from_v', 'image_from_v_hat'):
    if want[name] is None:
      assert getattr(output, name) is None, name
    else:
      _close(f'train {name}', getattr(output, name),
             want[name].detach().numpy().transpose(0, 2, 3, 1))
  images_unit = x * torch.from_numpy(IMAGENET_STD.astype(np.float64))[:, None, None] + \
      torch.from_numpy(IMAGENET_MEAN.astype(np.float64))[:, None, None]
  want_terms = torch_reference.loss_terms(want, torch.from_numpy(B), torch.from_numpy(S),
                                          torch.from_numpy(omega), images_unit, gamma=GAMMA,
                                          bits=BITS)
  assert set(terms) == set(want_terms) == set(weights)
  for name in weights:
    _close(f'term {name}', terms[name], want_terms[name].detach())
  sum(weights[name] * want_terms[name] for name in weights).backward()
  want_grads = torch_reference.torch_grads_by_flax_path(net, variables['params'])
  assert set(grads) == set(want_grads)
  for path, grad in grads.items():
    _close(f'gradient {"/".join(path)}', grad, want_grads[path])

  # BatchNorm's running statistics after the one train-mode call (momentum 0.1, unbiased var).
  state = net.state_dict()
  for path, value in jax.tree_util.tree_flatten_with_path(batch_stats)[0]:
    path = tuple(p.key for p in path)
    _close(f'running {"/".join(path)}', value,
           state[torch_reference.flax_to_torch_key(path)].numpy())


def test_default_phase_2_weights_are_the_methods():
  assert {name: w[1] for name, w in losses.DEFAULT_WEIGHTS.items()} == PHASE_2_WEIGHTS


@pytest.mark.equivalence
def test_a2net_matches_independent_pytorch_build():
  _check_network({}, PHASE_2_WEIGHTS, seed=0)


@pytest.mark.equivalence
def test_adsh_ablation_matches_independent_pytorch_build():
  weights = {name: w for name, w in PHASE_2_WEIGHTS.items() if name != 'img'}
  _check_network({'use_attention': False, 'use_image_decoder': False}, weights, seed=1)
