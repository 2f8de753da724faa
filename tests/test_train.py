"""The sharded train step and the DCC update on the mesh (the whole run: test_run.py)."""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from aah_jax.common import init_compile
from aah_jax.data import input_pipeline
from aah_jax.data.datasets import bird_renderer
from aah_jax.models import create_model, init_variables, precision
from aah_jax.training import adsh, chunked, grouped, losses, train
from configs import tiny
from tolerances import EPS32

NUM_DB = 160
BATCH = 64  # 8 images per device: per-device BatchNorm statistics stay well conditioned


def _step_kwargs(bn_groups=1, **model_fields) -> dict:
  """The train step's static arguments for configs/tiny.py with these model fields."""
  config = precision.resolve_config(tiny.get_config(), 'cpu')
  config.model.bn_groups = bn_groups
  config.model.update(model_fields)
  schedule = train.Schedule(4, 2, 0.005, 0.9, 0.1)
  return dict(model=create_model(config.model), tx=train.make_optimizer(config.optim, schedule),
              schedule=schedule, weights=train.loss_weights(config), gamma=config.loss.gamma)


def _setup(bn_groups=1, **model_fields):
  kwargs = _step_kwargs(bn_groups, **model_fields)
  db_labels = np.arange(NUM_DB) % 8
  init = jax.jit(functools.partial(train.init_state, model=kwargs['model'], tx=kwargs['tx'],
                                   image_size=32, db_labels=db_labels, num_samples=2 * BATCH))
  state = init_compile.compile_init(init, jax.random.key(0))(jax.random.key(0))
  state = jax.device_get(state)
  rng = np.random.default_rng(0)
  classes = bird_renderer.choose_classes(8, seed=0)
  images = np.stack([input_pipeline.normalize(bird_renderer.render(classes[i % 8], [0, i], 32))
                     for i in range(2 * BATCH)])
  batches = [{
      'image': images[b * BATCH:(b + 1) * BATCH],
      'label': db_labels[idx],
      'index': idx.astype(np.int32),
      'position': np.arange(BATCH, dtype=np.int32) + BATCH * b,
  } for b, idx in enumerate(rng.choice(NUM_DB, (2, BATCH), replace=False))]
  return state, batches, kwargs


def _run_steps(devices, state, batches, kwargs, summary=None):
  """The compiled step on a mesh of devices; with B's summary, in the label-grouped form."""
  mesh = Mesh(np.array(devices), ('data',))
  step = train.compile_train_step(mesh, summary is not None, **kwargs)
  state = jax.device_put(state, train.state_sharding(mesh, summary is not None))
  extra = () if summary is None else (jax.device_put(summary, NamedSharding(mesh, P())),)
  history = []
  for batch in batches:
    batch = jax.device_put(batch, NamedSharding(mesh, P('data')))
    with jax.transfer_guard('disallow'):  # the step itself moves nothing between host and device
      state, metrics = step(state, batch, *extra)
    history.append(metrics)
  return jax.device_get(state), jax.device_get(history)


# Layout equivalences run in float64 (model.dtype='float64', JAX_ENABLE_X64 inside the test):
# the layouts differ only in float summation order, and in float64 that difference is far below
# any tolerance. The reductions of these steps have at most 64·16·16 = 16,384 terms (BatchNorm
# over the batch at 32 px), a worst-case relative error of 16,384 · 1.1e-16 ≈ 1.8e-12; the
# second step amplifies the first step's error (in float32 it came out at ~200 ulps). 1e-9 leaves
# a factor of 500 over that bound for the amplification (measured here: at most 1.4e-12).
FLOAT64_RTOL = 1e-9


def _assert_trees_close(a, b, rtol, atol=0.0):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _assert_updates_agree(initial, a, b, fraction):
  """Per parameter array: the two runs' results differ by at most `fraction` of the update."""
  for x0, x, y in zip(jax.tree.leaves(initial), jax.tree.leaves(a), jax.tree.leaves(b)):
    update = np.abs(np.asarray(x) - np.asarray(x0)).max()
    assert np.abs(np.asarray(x) - np.asarray(y)).max() <= fraction * update


@pytest.mark.equivalence
@pytest.mark.parametrize('bn_groups', [1, 8])
def test_train_step_on_1_and_8_devices_agree(bn_groups):
  assert jax.device_count() == 8
  with jax.enable_x64(True):
    state, batches, kwargs = _setup(bn_groups, dtype='float64')
    assert state.B.dtype == state.params['attribute_codec']['W'].dtype == np.float64
    one, metrics_one = _run_steps(jax.devices()[:1], state, batches, kwargs)
    eight, metrics_eight = _run_steps(jax.devices(), state, batches, kwargs)
  # Same global-batch maths, two summation orders: equal within FLOAT64_RTOL (see above).
  _assert_trees_close(metrics_one, metrics_eight, FLOAT64_RTOL)
  _assert_trees_close((one.batch_stats, one.U), (eight.batch_stats, eight.U), FLOAT64_RTOL)
  _assert_updates_agree(state.params, one.params, eight.params, FLOAT64_RTOL)
  assert int(one.step) == int(eight.step) == 2
  # The steps changed the parameters and filled U at the batch positions.
  # (np.allclose's 1e-8 + 1e-5·|W| is far above float64 rounding: what it sees is the steps)
  assert not np.allclose(one.params['attribute_codec']['W'], state.params['attribute_codec']['W'])
  assert np.all(np.abs(one.U).sum(axis=1) > 0)


@pytest.mark.equivalence
@pytest.mark.parametrize('form', ['grouped', 'chunked'])
def test_the_grouped_step_on_8_devices_equals_the_explicit_step_on_1(form):
  # docs/method.md §8: the same hash loss summed per label group (or, chunked, over each
  # device's rows 7 at a time), quant from B_Ω; B is fixed within an iteration, so one
  # summary serves both steps. In the grouped layout the state holds the group ids (chunked:
  # the labels), and B and they are split over the 8 devices by rows (20 each).
  # float64: within FLOAT64_RTOL (see above).
  with jax.enable_x64(True):
    state, batches, kwargs = _setup(1, dtype='float64')
    state = state.replace(negative_weight=np.float64(0.125))  # soft r of 8 balanced classes
    groups = grouped.LabelGroups.of(state.db_labels)
    omega = np.zeros(2 * BATCH, np.int32)  # Ω by position: the database index of each U row
    for batch in batches:
      omega[batch['position']] = batch['index']
    explicit, metrics_explicit = _run_steps(jax.devices()[:1], state, batches, kwargs)
    if form == 'grouped':
      summary = grouped.summarize(jnp.asarray(state.B), groups, omega, num_database=NUM_DB)
      state = state.replace(db_labels=groups.group_of)
    else:
      summary = chunked.summarize(jnp.asarray(state.B), None, omega, num_database=NUM_DB)
      kwargs['row_sums'] = functools.partial(
          chunked.row_sums, mesh=Mesh(np.array(jax.devices()), ('data',)),
          num_database=NUM_DB, chunk_rows=7)
    by_group, metrics_grouped = _run_steps(jax.devices(), state, batches, kwargs, summary)
  _assert_trees_close(metrics_explicit, metrics_grouped, FLOAT64_RTOL)
  _assert_trees_close((explicit.batch_stats, explicit.U), (by_group.batch_stats, by_group.U),
                      FLOAT64_RTOL)
  _assert_updates_agree(state.params, explicit.params, by_group.params, FLOAT64_RTOL)
  np.testing.assert_array_equal(by_group.B, state.B)  # the step reads no B, changes none


def test_per_group_batch_norm_changes_the_step():
  with jax.enable_x64(True):  # the executables of the equivalence test above
    state, batches, kwargs = _setup(1, dtype='float64')
    global_bn, _ = _run_steps(jax.devices(), state, batches[:1], kwargs)
    state8, _, kwargs8 = _setup(8, dtype='float64')
    per_group, _ = _run_steps(jax.devices(), state8, batches[:1], kwargs8)
  # Different batch statistics give a different step: far above np.allclose's 1e-8 + 1e-5·|W|,
  # while float64 summation-order differences (FLOAT64_RTOL) are far below it.
  assert not np.allclose(global_bn.params['attribute_codec']['W'],
                         per_group.params['attribute_codec']['W'])


@pytest.mark.equivalence
def test_sharded_dcc_update_equals_the_unsharded_sweep():
  rng = np.random.default_rng(0)
  N, n_omega, k = 80, 24, 12
  labels = rng.integers(0, 5, N)
  omega = rng.choice(N, n_omega, replace=False)
  U = np.tanh(rng.normal(size=(n_omega, k)))
  B = rng.normal(size=(N, k))
  # Exact equality in float64: a bit can differ only where its sign argument (k·SᵀU: 24 terms
  # ≤ 12; γ·Ū ≤ 200; B·G: 12 terms ≤ 24) is within ~37 · 288 · 1.1e-16 ≈ 1.2e-12 of zero.
  with jax.enable_x64(True):
    mesh = Mesh(np.array(jax.devices()), ('data',))
    update = train.make_database_update(mesh, N, 200.0, True)
    B_in = jax.device_put(B, NamedSharding(mesh, P()))  # the state's layout: replicated
    got = update(B_in, U, omega, labels[omega], labels)
    want = adsh.dcc_update(B, U, omega, adsh.similarity(labels[omega], labels), 200.0)
  assert got.dtype == np.float64 and B_in.is_deleted()  # B donated
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.equivalence
def test_sharded_grouped_dcc_update_gives_the_explicit_bits():
  rng = np.random.default_rng(1)
  N, n_omega, k = 75, 24, 12  # 75 rows: padded to 80 over the 8 devices, 10 rows each
  labels = (rng.random((N, 6)) < 0.3).astype(np.int32)  # multi-label: 2⁶ possible rows
  omega = rng.choice(N, n_omega, replace=False)
  U, B = np.tanh(rng.normal(size=(n_omega, k))), rng.normal(size=(N, k))
  groups = grouped.LabelGroups.of(labels)
  # Exact equality in float64, as above: the two forms add the same terms in other orders.
  with jax.enable_x64(True):
    mesh = Mesh(np.array(jax.devices()), ('data',))
    rows = NamedSharding(mesh, P('data'))
    pad = lambda x: jax.device_put(np.pad(x, [(0, 5)] + [(0, 0)] * (x.ndim - 1)), rows)
    update = train.make_database_update(mesh, N, 200.0, True, grouped_form=True)
    B_in = pad(B)
    got = update(B_in, U, omega, labels[omega], groups.replace(group_of=pad(groups.group_of)))
    want = adsh.dcc_update(B, U, omega, adsh.similarity(labels[omega], labels), 200.0)
  assert got.sharding.is_equivalent_to(rows, 2)  # B stays split by rows
  assert B_in.is_deleted()  # donated: the new B took its memory
  np.testing.assert_array_equal(np.asarray(got)[:N], np.asarray(want))
  np.testing.assert_array_equal(np.asarray(got)[N:], 0)  # padding rows stay 0


def test_schedule_phases_and_learning_rate():
  schedule = train.Schedule(num_iterations=10, steps_per_iteration=3, learning_rate=0.1,
                            lr_decay_fraction=0.9, lr_decay_factor=0.1)
  steps = jnp.arange(30)
  phases = np.asarray(schedule.phase(schedule.iteration(steps)))
  np.testing.assert_array_equal(phases, [1] * 15 + [2] * 15)
  lrs = np.asarray(schedule.learning_rate_at(steps))
  # float32(0.1) is within eps/2 of 0.1, and 0.1·0.1 adds one more rounding: ≤ 2·eps relative.
  np.testing.assert_allclose(lrs, [0.1] * 27 + [0.01] * 3, rtol=2 * EPS32)


def test_phase_boundaries_make_any_number_of_phases():
  schedule = train.Schedule(num_iterations=8, steps_per_iteration=1, learning_rate=0.1,
                            lr_decay_fraction=0.9, lr_decay_factor=0.1,
                            phase_boundaries=(0.25, 0.75))
  assert schedule.num_phases == 3
  np.testing.assert_array_equal(schedule.phase(jnp.arange(8)), [1, 1, 2, 2, 2, 2, 3, 3])
  single = train.Schedule(8, 1, 0.1, 0.9, 0.1, phase_boundaries=())
  np.testing.assert_array_equal(single.phase(jnp.arange(8)), [1] * 8)


def test_the_step_takes_another_objective():
  """loss_fn replaces the objective: here quant alone, twice over, as the term 'twice_quant'.
  The step's metrics are that objective's terms and its gradient is the one that moves W."""
  state, batches, kwargs = _setup()

  def twice_quant(inputs, phase, weights):
    del phase, weights
    quant = losses.TERMS['quant'].fn(inputs)
    return 2.0 * quant, {'twice_quant': 2.0 * quant}

  devices = jax.devices()[:1]
  swapped, history = _run_steps(devices, state, batches[:1], dict(kwargs, loss_fn=twice_quant))
  assert set(history[0]) == {'twice_quant', 'loss', 'lr', 'phase'}
  assert float(history[0]['loss']) == float(history[0]['twice_quant']) > 0
  default, _ = _run_steps(devices, state, batches[:1], kwargs)
  w0 = state.params['attribute_codec']['W']
  w_swapped = swapped.params['attribute_codec']['W']
  w_default = default.params['attribute_codec']['W']
  assert not np.array_equal(w_swapped, w0) and not np.array_equal(w_swapped, w_default)
  # The objective changes nothing outside the step: U still gets the batch's u.
  np.testing.assert_array_equal(swapped.U[:BATCH] != 0, default.U[:BATCH] != 0)


def test_bad_batch_sizes_fail_before_compute():
  config = tiny.get_config()
  config.train.batch_size = 12
  with pytest.raises(ValueError, match='batch_size=12 does not divide over 8 devices'):
    train.validate_config(config, 8)
  config = tiny.get_config()
  config.train.num_samples = 250
  with pytest.raises(ValueError, match='num_samples=250 is not a multiple'):
    train.validate_config(config, 8)
  config = tiny.get_config()
  config.train.num_samples = 992
  with pytest.raises(ValueError, match=r'N=960'):
    train.validate_num_samples(config, 960)


@pytest.mark.equivalence
def test_remat_of_the_local_stage_changes_memory_not_results():
  with jax.enable_x64(True):
    state, batches, kwargs = _setup(dtype='float64')
    remat_kwargs = _step_kwargs(remat_local_stage=True, dtype='float64')
    remat_params = jax.eval_shape(lambda rng: init_variables(remat_kwargs['model'], rng, 32),
                                  jax.random.key(0))
    assert jax.tree.structure(remat_params['params']) == jax.tree.structure(state.params)
    plain, plain_metrics = _run_steps(jax.devices()[:1], state, batches, kwargs)
    remat, remat_metrics = _run_steps(jax.devices()[:1], state, batches, remat_kwargs)
  # The same maths, fused differently: float64 summation orders (FLOAT64_RTOL, see above).
  _assert_trees_close(plain_metrics, remat_metrics, FLOAT64_RTOL)
  _assert_updates_agree(state.params, plain.params, remat.params, FLOAT64_RTOL)


def test_bfloat16_training_stays_finite_and_tracks_full_precision():
  """bf16 convolutions and matmuls, float32 parameters, BN statistics, head and losses:
  over three steps on the same batches the loss stays within 2% of full precision (the
  float64 steps of the equivalence tests, whose executables are compiled already)."""
  # 2% ≈ 5·2⁻⁸: bf16 keeps 8 significant bits, a rounding of up to 2⁻⁸ ≈ 0.4% relative per
  # stored activation. The ~10 bf16 layers between image and u would compound that to 4% only
  # if every rounding aligned; the loss terms are batch means, in which roundings of either
  # sign average out, so the gap stays within a few 2⁻⁸ (0.13% at most, measured).
  with jax.enable_x64(True):
    state, batches, kwargs = _setup(dtype='float64')
    bf16_kwargs = _step_kwargs(dtype='bfloat16')
    batches = batches + batches[:1]
    full, full_metrics = _run_steps(jax.devices()[:1], state, batches, kwargs)
    state32 = jax.tree.map(lambda x: x.astype(np.float32) if x.dtype == np.float64 else x, state)
    half, half_metrics = _run_steps(jax.devices()[:1], state32, batches, bf16_kwargs)
  assert jax.tree.leaves(half.params)[0].dtype == jnp.float32
  for a, b in zip(full_metrics, half_metrics):
    assert np.isfinite(b['loss'])
    assert b['loss'] == pytest.approx(a['loss'], rel=0.02)
    assert b['hash'] == pytest.approx(a['hash'], rel=0.02)
