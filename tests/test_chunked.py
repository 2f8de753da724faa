"""The chunked form (docs/method.md §8.1) against the explicit one: the step's sums over the
database, r and the DCC sweep, built chunk by chunk on each of 8 devices' rows (75 rows:
padded to 80, 10 a device), with chunks that do and do not divide a device's rows."""

import functools
import types

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from aah_jax import run as run_lib
from aah_jax.training import adsh, chunked, defaults, grouped, losses, train

N, K, PADDED = 75, 12, 80
# Float64 sums of at most 80 products of ±1 or −r with |B| ≤ 4: in another order they differ
# by at most ~80 · 4 · eps64 ≈ 7e-14 absolute.
SUM_ATOL = 1e-12


def _labels(rng, multi_label: bool, n: int):
  if multi_label:  # 2⁶ possible rows: G close to N
    return (rng.random((n, 6)) < 0.3).astype(np.int32)
  return rng.integers(0, 5, n).astype(np.int32)


def _rows(mesh, x):
  return jax.device_put(np.pad(x, [(0, PADDED - N)] + [(0, 0)] * (x.ndim - 1)),
                        NamedSharding(mesh, P('data')))


@pytest.fixture(scope='module')
def mesh():
  return Mesh(np.array(jax.devices()), ('data',))


@pytest.mark.parametrize('chunk_rows', [3, 10, 1000])
@pytest.mark.parametrize('multi_label', [False, True])
def test_row_sums_and_r_equal_the_explicit_similarity(mesh, chunk_rows, multi_label):
  rng = np.random.default_rng(chunk_rows)
  db_labels, B = _labels(rng, multi_label, N), rng.normal(size=(N, K))
  labels = _labels(rng, multi_label, 16)
  if not multi_label:
    labels[0] = 7  # a class no database item has
  sizes = dict(mesh=mesh, num_database=N, chunk_rows=chunk_rows)
  with jax.enable_x64(True):
    r = chunked.negative_weight(labels, _rows(mesh, db_labels), **sizes)
    assert r == adsh.negative_weight(labels, db_labels)  # counts of pairs: exact
    S = np.asarray(adsh.similarity_rows(labels, db_labels, r), np.float64)
    s_squared, s_b = chunked.row_sums(labels, r, _rows(mesh, B), _rows(mesh, db_labels),
                                      **sizes)
  np.testing.assert_allclose(s_squared, (S * S).sum(axis=1), rtol=0, atol=SUM_ATOL)
  np.testing.assert_allclose(s_b, S @ B, rtol=0, atol=SUM_ATOL)
  assert r > 0  # dissimilar pairs weigh in: S is not all +1


def test_r_is_one_when_not_soft_and_zero_without_dissimilar_pairs(mesh):
  sizes = dict(mesh=mesh, num_database=N, chunk_rows=4)
  same = np.zeros(N, np.int32)
  assert chunked.negative_weight(same[:5], _rows(mesh, same), **sizes) == 0
  assert chunked.negative_weight(same[:5], _rows(mesh, same), soft=False, **sizes) == 1


@pytest.mark.parametrize('multi_label', [False, True])
def test_the_chunked_dcc_sweep_gives_the_explicit_bits(mesh, multi_label):
  rng = np.random.default_rng(5)
  db_labels, B = _labels(rng, multi_label, N), rng.normal(size=(N, K))
  omega = rng.choice(N, 24, replace=False)
  U = np.tanh(rng.normal(size=(24, K)))
  # Exact equality in float64: a bit can differ only where its sign argument (k·SᵀU: 24 terms
  # ≤ 12; γ·Ū ≤ 200; B·G: 12 terms ≤ 24) is within ~37 · 288 · 1.1e-16 ≈ 1.2e-12 of zero.
  with jax.enable_x64(True):
    update = train.make_database_update(mesh, N, 200.0, True, grouped_form=True, chunk_rows=3)
    B_in = _rows(mesh, B)
    got = update(B_in, U, omega, db_labels[omega], _rows(mesh, db_labels))
    want = adsh.dcc_update(B, U, omega, adsh.similarity(db_labels[omega], db_labels), 200.0)
  assert got.sharding.is_equivalent_to(NamedSharding(mesh, P('data')), 2) and B_in.is_deleted()
  np.testing.assert_array_equal(np.asarray(got)[:N], np.asarray(want))
  np.testing.assert_array_equal(np.asarray(got)[N:], 0)  # padding rows stay 0


def test_the_chunked_hash_loss_and_gradient_equal_the_explicit_ones(mesh):
  rng = np.random.default_rng(9)
  db_labels, B = _labels(rng, True, N), rng.choice([-1.0, 1.0], (N, K))
  labels, omega = _labels(rng, True, 16), rng.choice(N, 16, replace=False)
  F = np.tanh(rng.normal(size=(16, K)))
  sizes = dict(mesh=mesh, num_database=N, chunk_rows=4)
  with jax.enable_x64(True):
    r = adsh.negative_weight(labels, db_labels)
    summary = chunked.summarize(_rows(mesh, B), None, omega, num_database=N)
    sums = chunked.row_sums(labels, r, _rows(mesh, B), _rows(mesh, db_labels), **sizes)
    got = jax.value_and_grad(functools.partial(
        grouped.hash_loss_of_sums, s_squared=sums[0], s_b=sums[1], gram=summary.gram,
        num_database=N, code_length=K))(F)
    S = adsh.similarity_rows(labels, db_labels, r).astype(jnp.float64)
    want = jax.value_and_grad(lambda F: losses.hash_loss(F, B, S, code_length=K))(F)
  np.testing.assert_array_equal(np.asarray(summary.omega_codes), B[omega])
  # float64, the same sums in other orders: relative 1e-12 (N = 75 terms of size ≤ 12²).
  np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('similarity, num_groups, want', [
    ('grouped', 48, 'grouped'), ('grouped', 480, 'grouped'), ('grouped', 481, 'chunked'),
    ('chunked', 48, 'chunked'), ('explicit', 960, 'explicit')])
def test_a_grouped_run_trains_chunked_when_groups_are_more_than_half_the_rows(
    similarity, num_groups, want):
  config = defaults.get_config()  # max_group_fraction 0.5: G > 480 of N = 960 is chunked
  config.train.similarity = similarity
  run = types.SimpleNamespace(config=config, num_database=960,
                              label_groups=types.SimpleNamespace(num_groups=num_groups))
  assert run_lib.Run.similarity_form.func(run) == want
