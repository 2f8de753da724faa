"""Shapes, parameter counts and numerics of the A²-Net++ network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aah_jax.common import init_compile
from aah_jax.models import A2NetPlusPlus, ResNet, backbone_spec, init_variables
from aah_jax.models.a2net import local_features
from aah_jax.models.image_decoder import _transposed_conv, generator_geometry
from aah_jax.models.norm import BatchNorm
from aah_jax.retrieval.codes import hash_codes
from aah_jax.training import losses
from tolerances import EPS32, summation_bound


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _abstract_init(model, image_size, batch=2):
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=True,
                                       mutable=['params', 'batch_stats', 'intermediates']),
      images)


@pytest.mark.parametrize('bits', [12, 48])
def test_resnet50_shapes_at_224(bits):
  model = A2NetPlusPlus(backbone='resnet50', bits=bits)
  out, variables = _abstract_init(model, 224)
  n, m, d = 2, bits, (bits + 1) * 2048
  assert model.feature_dim == d
  inter = {k: v[0].shape for k, v in variables['intermediates'].items()}
  assert inter == {'trunk_features': (n, 14, 14, 1024), 'global_feature': (n, 2048),
                   'global_stage_features': (n, 7, 7, 2048),
                   'attention_maps': (n, 14, 14, m), 'local_features': (n, m * 2048)}
  assert out.attention.shape == (n, 14, 14, m)
  assert out.u.shape == (n, bits)
  assert out.v.shape == out.v_hat.shape == (n, d)
  assert out.image_from_v.shape == out.image_from_v_hat.shape == (n, 224, 224, 3)
  assert variables['params']['attribute_codec']['W'].shape == (bits, d)
  # The generator: 512 (1×1) → 7×7 → doublings to 224 with channels 256 … 16, 3
  # (transpose_kernel=True kernels are (kh, kw, out, in)).
  decoder = variables['params']['decoder_v']
  assert decoder['encoder']['kernel'].shape == (d, 512)
  assert [decoder[f'deconv{i}']['kernel'].shape[-2] for i in range(6)] == [256, 128, 64, 32, 16, 3]
  assert decoder['deconv0']['kernel'].shape[:2] == (7, 7)


def test_resnet50_ablations_change_d():
  out, variables = _abstract_init(A2NetPlusPlus(backbone='resnet50', bits=12, use_attention=False,
                                                use_image_decoder=False), 224)
  assert out.v.shape == (2, 2048) and out.attention is None and out.image_from_v is None
  assert set(variables['params']) == {'trunk', 'global_stage', 'attribute_codec'}
  out, _ = _abstract_init(A2NetPlusPlus(backbone='resnet50', bits=48, num_attention_maps=4), 224)
  assert out.v.shape == (2, 5 * 2048) and out.attention.shape[-1] == 4


# torchvision's parameter counts without the fc layer (weight + bias = 512·1000 + 1000 or
# 2048·1000 + 1000 removed from the published totals).
TORCHVISION_NO_FC = {'resnet18': 11_176_512, 'resnet34': 21_284_672, 'resnet50': 23_508_032}


@pytest.mark.parametrize('name', sorted(TORCHVISION_NO_FC))
def test_trunk_plus_last_stage_matches_torchvision(name):
  model = A2NetPlusPlus(backbone=name, bits=12)
  _, variables = _abstract_init(model, 224)
  counts = {part: _count(tree) for part, tree in variables['params'].items()}
  print(f'\n{name} parameters per part:', counts)
  assert counts['trunk'] + counts['global_stage'] == TORCHVISION_NO_FC[name]
  assert counts['local_stage'] == counts['global_stage']
  plain = jax.eval_shape(lambda x: ResNet(backbone_spec(name)).init(jax.random.key(0), x),
                         jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert _count(plain['params']) == TORCHVISION_NO_FC[name]


def test_resnet50_batch_stats_are_torchvision_buffers():
  _, variables = _abstract_init(A2NetPlusPlus(backbone='resnet50', bits=12), 224)
  trunk_stats = variables['batch_stats']['trunk']
  # 53 BN layers in trunk + layer4 of torchvision; trunk alone has 1 + 3·3+1 + 4·3+1 + 6·3+1.
  assert len(jax.tree.leaves(trunk_stats)) == 2 * (1 + 10 + 13 + 19)


@pytest.fixture(scope='module')
def small():
  model = A2NetPlusPlus(backbone='small_cnn', bits=12, num_attention_maps=3, embed_dim=64,
                        generator_base_channels=32)
  variables = init_variables(model, jax.random.key(0), 32)
  images = jax.random.normal(jax.random.key(1), (6, 32, 32, 3))
  return model, variables, images


def test_initialisation_compiled_for_speed_gives_the_variables_of_xla_defaults(small):
  # init_variables compiles at XLA:CPU's backend optimisation level 1 (aah_jax/common/
  # init_compile.py: a third to a half of the compile time). Exact: the same variables to the
  # bit as the program compiled with XLA's defaults (level 0 would not give them: it rounds some
  # initial weights differently in the last bit).
  model, variables, _ = small
  assert init_compile.compiler_options() == {'xla_backend_optimization_level': 1}  # on CPU
  images = jnp.zeros((model.bn_groups, 32, 32, 3), jnp.float32)
  default = jax.jit(functools.partial(model.init, train=True))(jax.random.key(0), images)
  got = jax.tree_util.tree_leaves_with_path(variables)
  assert len(got) == len(jax.tree.leaves(default)) > 100
  for (path, value), want in zip(got, jax.tree.leaves(default)):
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want),
                                  err_msg=jax.tree_util.keystr(path))


def _forward_losses(model, params, batch_stats, images, phase, weights, key=jax.random.key(2)):
  out, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, images, train=True,
                             mutable=['batch_stats'])
  num_db, n = 20, images.shape[0]
  k1, k2 = jax.random.split(key)
  B = jnp.sign(jax.random.normal(k1, (num_db, model.bits)))
  S = jnp.where(jax.random.uniform(k2, (n, num_db)) < 0.3, 1.0, -0.3)
  omega = jnp.arange(n)
  inputs = losses.LossInputs(output=out, B=B, S_batch=S, omega=omega,
                             images=jax.nn.sigmoid(images), gamma=200.0, code_length=model.bits)
  loss, terms = losses.weighted_total(inputs, phase, weights)
  return loss, (terms, mutated)


def test_small_forward_backward_is_finite(small):
  model, variables, images = small
  grad_fn = jax.jit(jax.value_and_grad(
      functools.partial(_forward_losses, model, phase=1, weights=losses.DEFAULT_WEIGHTS),
      has_aux=True))
  (loss, (terms, mutated)), grads = grad_fn(variables['params'], variables['batch_stats'], images)
  assert np.isfinite(float(loss)) and set(terms) == set(losses.TERMS)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # Train mode moved the running statistics.
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(mutated['batch_stats'])
  # (any change at all: the update is momentum 0.1 times a batch statistic of unit scale, far
  # above np.allclose's 1e-8 + 1e-5·|x|)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_global_codec_init_starts_w_as_the_global_only_network(small):
  # model.codec_init='global': the parts' blocks of W are 0 and g's block is the default
  # draw U(±1/√D) scaled to U(±1/√C4), the global-only network's W; nothing else changes.
  model, variables, _ = small
  fresh = init_variables(model.clone(codec_init='global'), jax.random.key(0), 32)
  w, w_global = (np.asarray(v['params']['attribute_codec']['W']) for v in (variables, fresh))
  c4 = backbone_spec('small_cnn').feature_channels
  assert w.shape == w_global.shape == (12, 4 * c4)
  assert np.all(w_global[:, :-c4] == 0)
  # one float32 multiplication of the same draw: within one rounding (EPS32)
  np.testing.assert_allclose(w_global[:, -c4:], w[:, -c4:] * 2.0, rtol=EPS32)  # √(4·C4 / C4)
  assert np.abs(w_global).max() <= 1 / np.sqrt(c4)
  rest = lambda v: jax.tree.leaves({k: x for k, x in v['params'].items() if k != 'attribute_codec'})
  assert all(np.array_equal(a, b) for a, b in zip(rest(variables), rest(fresh)))
  with pytest.raises(ValueError, match="model.codec_init='zeros'"):
    init_variables(model.clone(codec_init='zeros'), jax.random.key(0), 32)


def _grad_norms(small, phase, weights):
  model, variables, images = small
  grads = jax.jit(jax.grad(
      lambda p: _forward_losses(model, p, variables['batch_stats'], images, phase, weights)[0]))(
          variables['params'])
  return {part: float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree))))
          for part, tree in grads.items()}


ALL_PARTS = {'trunk', 'global_stage', 'local_stage', 'attention', 'attribute_codec', 'decoder_v',
             'decoder_v_hat'}


@pytest.mark.parametrize('phase', [1, 2])
def test_gradients_reach_every_trained_group(small, phase):
  norms = _grad_norms(small, phase, losses.DEFAULT_WEIGHTS)
  assert set(norms) == ALL_PARTS
  assert all(norm > 0 for norm in norms.values()), norms


def test_gradients_skip_the_image_path_when_its_weight_is_zero(small):
  norms = _grad_norms(small, 1, dict(losses.DEFAULT_WEIGHTS, img=(0.0, 0.0)))
  assert norms['decoder_v'] == 0.0 and norms['decoder_v_hat'] == 0.0
  assert all(norms[p] > 0 for p in ALL_PARTS - {'decoder_v', 'decoder_v_hat'}), norms


def test_rec_trains_encoder_and_backbone_but_not_generators(small):
  only_rec = {name: (0.0, 0.0) for name in losses.TERMS}
  only_rec['rec'] = (0.0, 1.0)
  assert all(norm == 0.0 for norm in _grad_norms(small, 1, only_rec).values())
  norms = _grad_norms(small, 2, only_rec)
  assert norms['decoder_v'] == 0.0 and norms['decoder_v_hat'] == 0.0
  assert all(norms[p] > 0 for p in ALL_PARTS - {'decoder_v', 'decoder_v_hat'}), norms


def test_eval_mode_returns_u_and_codes_are_its_sign(small):
  model, variables, images = small
  u = model.apply(variables, images, train=False)
  assert u.shape == (6, 12) and np.all(np.abs(u) < 1)
  codes = np.asarray(hash_codes(u))
  np.testing.assert_array_equal(codes, np.where(np.asarray(u) >= 0, 1, -1))
  out, _ = model.apply(variables, images, train=True, mutable=['batch_stats'])
  assert np.all(np.asarray(out.attention) >= 0)
  assert np.all((np.asarray(out.image_from_v) >= 0) & (np.asarray(out.image_from_v) <= 1))


def test_sign_of_zero_is_plus_one():
  codes = hash_codes(jnp.array([[-0.5, 0.0, -0.0, 1e-30, -1e-30]]))
  np.testing.assert_array_equal(np.asarray(codes), [[-1, 1, 1, 1, -1]])
  assert codes.dtype == jnp.int8


@pytest.mark.equivalence
def test_bfloat16_codes_agree_with_float32(small):
  model, variables, _ = small
  images = jax.random.normal(jax.random.key(7), (64, 32, 32, 3))
  u32 = np.asarray(model.apply(variables, images, train=False), np.float64)
  u16 = np.asarray(model.clone(dtype=jnp.bfloat16).apply(variables, images, train=False),
                   np.float64)
  # bf16 keeps 8 significant bits: each rounding is ≤ 2⁻⁸ relative. About 16 roundings lie on the
  # path from image to u (convolution, BatchNorm and activation outputs, kept O(1) by BatchNorm),
  # and tanh is 1-Lipschitz, so |u16 − u32| ≤ 16·2⁻⁸ per unit of layer gain; 32·2⁻⁸ = 0.125
  # allows a gain of 2 (the float32 side's own error, ~1e-6, is negligible beside it).
  bound = 32 * 2.0 ** -8
  assert np.abs(u16 - u32).max() <= bound
  # So a code bit can differ only where |u32| < bound; everywhere else it must be the same.
  sure = np.abs(u32) >= bound
  np.testing.assert_array_equal(np.asarray(hash_codes(u16))[sure],
                                np.asarray(hash_codes(u32))[sure])
  assert sure.mean() > 0.9  # and that is most bits, so the assertion above is not vacuous
  # bf16 compute keeps float32 parameters.
  assert {x.dtype for x in jax.tree.leaves(variables['params'])} == {jnp.dtype('float32')}


@pytest.mark.equivalence
def test_local_features_are_pooled_masked_trunk_per_part():
  rng = np.random.default_rng(0)
  t = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  a = rng.random((2, 3, 4, 6)).astype(np.float32)
  got = np.asarray(local_features(lambda x: x, t, a))
  t64, a64 = t.astype(np.float64), a.astype(np.float64)
  want = np.concatenate([(t64 * a64[..., m:m + 1]).mean(axis=(1, 2)) for m in range(6)], axis=-1)
  # Means of 3 × 4 float32 products: summation_bound(12, Σ|t·a|) / 12 = 12·eps·mean|t·a|.
  abs_mean = np.concatenate([np.abs(t64 * a64[..., m:m + 1]).mean(axis=(1, 2))
                             for m in range(6)], axis=-1)
  assert np.all(np.abs(got - want) <= summation_bound(12, abs_mean))


def _batchnorm_bound(x64, y64):
  """Rounding bound of float32 BatchNorm of x over all axes but the last, per element: the mean
  of n terms is off by |Δmean| ≤ summation_bound(n, mean|x|); the variance of the centred
  values (Δmean cancels to first order) and its rsqrt by (n + 3)·eps relative. So
  |Δy| ≤ |Δmean|/σ + |y|·(n + 3)·eps."""
  axes = tuple(range(x64.ndim - 1))
  n = x64.size // x64.shape[-1]
  mean_error = summation_bound(n, np.abs(x64).mean(axis=axes))
  return mean_error / np.sqrt(x64.var(axis=axes)) + np.abs(y64) * (n + 3) * EPS32


@pytest.mark.equivalence
def test_batchnorm_matches_pytorch_semantics():
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, size=(8, 3, 3, 4)).astype(np.float32)
  bn = BatchNorm(use_running_average=False)
  variables = bn.init(jax.random.key(0), x)
  np.testing.assert_array_equal(variables['batch_stats']['mean'], 0.0)  # init leaves stats alone
  y, mutated = bn.apply(variables, x, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  count = 8 * 3 * 3
  mean, var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))
  want = (x64 - mean) / np.sqrt(var + 1e-5)
  assert np.all(np.abs(np.asarray(y, np.float64) - want) <= _batchnorm_bound(x64, want))
  # The running statistics: the same bounds, scaled by momentum (and the unbiased factor).
  mean_error = summation_bound(count, np.abs(x64).mean(axis=(0, 1, 2)))
  assert np.all(np.abs(mutated['batch_stats']['mean'] - 0.1 * mean)
                <= 0.1 * mean_error + EPS32 * np.abs(0.1 * mean))
  np.testing.assert_allclose(mutated['batch_stats']['var'], 0.9 + 0.1 * var * count / (count - 1),
                             rtol=(count + 4) * EPS32)
  y_eval = BatchNorm(use_running_average=True).apply({**variables, **mutated}, x)
  stats = {k: np.asarray(v, np.float64) for k, v in mutated['batch_stats'].items()}
  want_eval = (x64 - stats['mean']) / np.sqrt(stats['var'] + 1e-5)
  # Elementwise only: the subtraction (eps·(|x| + |mean|)/σ) and rsqrt, product, affine (3 eps).
  eval_bound = EPS32 * ((np.abs(x64) + np.abs(stats['mean'])) / np.sqrt(stats['var'] + 1e-5)
                        + 4 * np.abs(want_eval))
  assert np.all(np.abs(np.asarray(y_eval, np.float64) - want_eval) <= eval_bound)


@pytest.mark.equivalence
def test_batchnorm_groups_normalise_each_slice_alone():
  x = np.random.default_rng(1).normal(size=(8, 2, 2, 3)).astype(np.float32)
  grouped = BatchNorm(use_running_average=False, num_groups=2)
  variables = grouped.init(jax.random.key(0), x)
  y, _ = grouped.apply(variables, x, mutable=['batch_stats'])
  single = BatchNorm(use_running_average=False)
  halves = [single.apply(variables, x[i:i + 4], mutable=['batch_stats'])[0] for i in (0, 4)]
  # The same float32 maths on the same 16 values per group and channel; XLA may order the
  # reductions differently, so each side is within _batchnorm_bound of the exact value.
  x64 = x.astype(np.float64)
  for i in (0, 4):
    exact = (x64[i:i + 4] - x64[i:i + 4].mean((0, 1, 2))) / np.sqrt(
        x64[i:i + 4].var((0, 1, 2)) + 1e-5)
    bound = 2 * _batchnorm_bound(x64[i:i + 4], exact)
    assert np.all(np.abs(np.asarray(y[i:i + 4]) - np.asarray(halves[i // 4])) <= bound)
  with pytest.raises(ValueError, match='num_groups=3'):
    BatchNorm(use_running_average=False, num_groups=3).init(jax.random.key(0), x)


@pytest.mark.parametrize('size,geometry', [(224, (7, 5)), (112, (7, 4)), (32, (4, 3)),
                                           (96, (6, 4)), (64, (4, 4))])
def test_generator_geometry(size, geometry):
  assert generator_geometry(size) == geometry


def test_generator_geometry_rejects_sizes_it_cannot_reach():
  with pytest.raises(ValueError, match='image size 100'):
    generator_geometry(100)


@pytest.mark.equivalence
def test_transposed_conv_matches_pytorch_definition():
  """out[y·s + i − p, x·s + j − p, o] += in[y, x, c] · w[c, o, i, j] (ConvTranspose2d)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
  layer = _transposed_conv(4, 4, 2, 1, dtype=jnp.float32, name=None)
  variables = layer.init(jax.random.key(0), x)
  kernel = np.asarray(variables['params']['kernel'])  # (kh, kw, out, in) with transpose_kernel
  torch_w = kernel.transpose(3, 2, 0, 1)  # PyTorch's (in, out, kh, kw), no spatial flip
  s, p, k = 2, 1, 4
  full = np.zeros((1, 3 * s + k - s, 3 * s + k - s, 4))
  for y in range(3):
    for xx in range(3):
      for i in range(k):
        for j in range(k):
          full[0, y * s + i, xx * s + j] += x[0, y, xx] @ torch_w[:, :, i, j]
  want = full[:, p:p + 6, p:p + 6]  # float64
  # Each output sums at most 2 channels × 2 × 2 overlapping taps = 8 float32 products.
  bound = summation_bound(8, 8 * np.abs(x).max() * np.abs(kernel).max())
  np.testing.assert_allclose(layer.apply(variables, x), want, rtol=0, atol=bound)


def test_auto_dtypes_are_decided_for_the_platform():
  from aah_jax.models import precision  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  assert (config.model.dtype, config.data.image_dtype) == ('auto', 'auto')
  decided = {platform: precision.resolve_config(config, platform)
             for platform in ('cpu', 'gpu', 'tpu')}
  assert (decided['tpu'].model.dtype, decided['tpu'].data.image_dtype) == ('bfloat16',) * 2
  for platform in ('cpu', 'gpu'):
    assert (decided[platform].model.dtype, decided[platform].data.image_dtype) == ('float32',) * 2
  assert config.model.dtype == 'auto'  # the caller's config is left as it was
  config.model.dtype, config.data.image_dtype = 'float32', 'bfloat16'  # explicit: kept
  assert precision.resolve_config(config, 'tpu') is config
  with pytest.raises(ValueError, match='resolve_config'):
    precision.compute_dtype('auto')
