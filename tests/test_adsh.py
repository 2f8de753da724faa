"""similarity and dcc_update against independent NumPy implementations."""

import numpy as np
import pytest

from aah_jax.training import adsh
from tolerances import EPS32

# A soft similarity entry is 1 or −r, r = (count of pairs sharing a label) / (count not sharing),
# computed in float32 from exact integer counts: one rounding for r, at most two more for
# (1 + r)·1 − r; with r ≤ 1 that is a relative error ≤ 3·(1 + 2r)·eps/2 ≤ 4.5·eps.
SIMILARITY_RTOL = 5 * EPS32


def _np_similarity(a, b, soft):
  if a.ndim == 1:
    hard = (a[:, None] == b[None, :]).astype(np.float64)
  else:
    hard = ((a @ b.T) > 0).astype(np.float64)
  if not soft:
    return 2 * hard - 1
  r = hard.sum() / (1 - hard).sum()
  return hard * (1 + r) - r  # the reference code's calc_sim


def _np_dcc(B, U, omega, S, gamma):
  """The ADSH reference's loop, written with explicit column deletion."""
  B = B.astype(np.float64).copy()
  U = U.astype(np.float64)
  N, k = B.shape
  u_bar = np.zeros((N, k))
  u_bar[omega] = U
  Q = k * S.astype(np.float64).T @ U + gamma * u_bar
  for j in range(k):
    rest = [l for l in range(k) if l != j]
    value = Q[:, j] - B[:, rest] @ (U[:, rest].T @ U[:, j])
    B[:, j] = np.where(value >= 0, 1.0, -1.0)
  return B


@pytest.mark.parametrize('soft', [True, False])
def test_similarity_int_labels(soft):
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, 5, 30), rng.integers(0, 5, 70)
  got, want = np.asarray(adsh.similarity(a, b, soft)), _np_similarity(a, b, soft)
  if not soft:
    np.testing.assert_array_equal(got, want)  # ±1, exact
  assert np.abs(want).max() <= 1  # r ≤ 1 here, as SIMILARITY_RTOL assumes
  np.testing.assert_allclose(got, want, rtol=SIMILARITY_RTOL)


def test_similarity_multi_hot_labels():
  rng = np.random.default_rng(1)
  a = (rng.random((25, 6)) < 0.25).astype(np.int32)
  b = (rng.random((40, 6)) < 0.25).astype(np.int32)
  got = np.asarray(adsh.similarity(a, b))
  want = _np_similarity(a, b, True)
  assert np.abs(want).max() <= 1  # r ≤ 1 here, as SIMILARITY_RTOL assumes
  np.testing.assert_allclose(got, want, rtol=SIMILARITY_RTOL)
  # Two items with no label at all are not similar.
  assert got[np.flatnonzero(a.sum(1) == 0)[:1]].max(initial=-1) < 1


def test_similarity_soft_balances_positives_and_negatives():
  a = np.array([0, 0, 1])
  S = np.asarray(adsh.similarity(a, np.array([0, 1, 2, 3])))
  # 12 float32 entries of magnitude ≤ 1: the sum's error ≤ 12·eps·Σ|S| ≤ 12·12·eps (Higham §4.2).
  assert S.sum() == pytest.approx(0.0, abs=12 * 12 * EPS32)
  np.testing.assert_allclose(S[0], [1, -1 / 3, -1 / 3, -1 / 3], rtol=SIMILARITY_RTOL)


def test_similarity_rejects_mixed_label_kinds():
  with pytest.raises(ValueError, match='multi-hot'):
    adsh.similarity(np.zeros(3, int), np.zeros((3, 2), int))


@pytest.mark.parametrize('k,real_init', [(12, True), (12, False), (48, False)])
def test_dcc_update_matches_numpy_sweep(k, real_init):
  rng = np.random.default_rng(k)
  N, n_omega = 120, 40
  labels = rng.integers(0, 6, N)
  omega = rng.choice(N, n_omega, replace=False)
  U = np.tanh(rng.normal(size=(n_omega, k))).astype(np.float32)
  B = rng.normal(size=(N, k)).astype(np.float32)
  if not real_init:
    B = np.where(B >= 0, 1.0, -1.0).astype(np.float32)
  S = _np_similarity(labels[omega], labels, True).astype(np.float32)
  got = np.asarray(adsh.dcc_update(B, U, omega, S, 200.0))
  want = _np_dcc(B, U, omega, S, 200.0)
  assert set(np.unique(got)) <= {-1.0, 1.0}
  np.testing.assert_array_equal(got, want)


def test_dcc_update_is_sequential_not_parallel():
  """The sweep uses bits already updated in this sweep: a Jacobi update differs."""
  rng = np.random.default_rng(3)
  N, n_omega, k = 200, 50, 12
  labels = rng.integers(0, 4, N)
  omega = rng.choice(N, n_omega, replace=False)
  U = np.tanh(rng.normal(size=(n_omega, k)) * 3).astype(np.float32)
  B = np.where(rng.normal(size=(N, k)) >= 0, 1.0, -1.0).astype(np.float32)
  S = _np_similarity(labels[omega], labels, True).astype(np.float32)
  got = np.asarray(adsh.dcc_update(B, U, omega, S, 0.0))
  Q = k * S.T @ U
  gram = U.T @ U
  np.fill_diagonal(gram, 0)
  jacobi = np.where(Q - B @ gram >= 0, 1.0, -1.0)
  assert not np.array_equal(got, jacobi)
  np.testing.assert_array_equal(got, _np_dcc(B, U, omega, S, 0.0))
