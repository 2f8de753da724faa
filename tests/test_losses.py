"""Each loss term against an independent NumPy computation, and the phase schedule."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aah_jax.training import losses
from tolerances import summation_bound


def _np_terms(F, B, S, omega, v, v_hat, gamma, k):
  """The spec's formulas, written out with explicit loops in float64."""
  F, B, S, v, v_hat = (np.asarray(a, np.float64) for a in (F, B, S, v, v_hat))
  n, N = S.shape
  hash_sum = 0.0
  for i in range(n):
    for j in range(N):
      hash_sum += (k * S[i, j] - F[i] @ B[j]) ** 2
  quant_sum = sum(np.sum((F[i] - B[omega[i]]) ** 2) for i in range(n))
  gram = np.zeros((k, k))
  for i in range(n):
    gram += np.outer(F[i], F[i])
  dec = np.mean((gram - n * np.eye(k)) ** 2) / n / k
  return {
      'hash': 12.0 / k * hash_sum / (n * N),
      'quant': 12.0 / k * gamma * quant_sum / (n * N),
      'dec': dec,
      'rec': np.mean((v_hat - v) ** 2),
  }


# The terms are checked in float64 (x64 in this test only), so that the comparison is of the
# formulas, not of float32 summation order. Each term is a mean of non-negative squares whose
# largest reduction has n·N + k ≤ 8·37 + 48 = 344 terms; Higham's bound (tests/tolerances.py)
# gives a relative error ≤ 344·eps64·(1 + cancellation inside a squared residual) ≪ 1e-11.
FLOAT64_RTOL = 1e-11


@pytest.mark.equivalence
@pytest.mark.parametrize('n,k', [(1, 12), (5, 12), (8, 48), (1, 48)])
def test_loss_terms_match_numpy(n, k):
  rng = np.random.default_rng(n * 100 + k)
  N, D, gamma = 37, 20, 200.0
  F = np.tanh(rng.normal(size=(n, k)))
  B = rng.normal(size=(N, k))  # B starts real-valued in the reference
  S = np.where(rng.random((n, N)) < 0.2, 1.0, -0.25)
  omega = rng.choice(N, size=n, replace=False)
  v = rng.normal(size=(n, D))
  v_hat = rng.normal(size=(n, D))

  with jax.enable_x64(True):
    got = jax.jit(lambda *a: losses.loss_terms(*a, gamma=gamma, code_length=k))(
        F, B, S, omega, v, v_hat)
    assert all(value.dtype == jnp.float64 for value in got.values())
  want = _np_terms(F, B, S, omega, v, v_hat, gamma, k)
  assert set(got) == {'hash', 'quant', 'dec', 'rec'}
  for name, value in want.items():
    np.testing.assert_allclose(float(got[name]), value, rtol=FLOAT64_RTOL, err_msg=name)


def test_hash_loss_keeps_float64_with_the_runs_float32_similarity():
  # The run's S_batch is float32 (adsh.similarity_rows) with −r = −P/Q; under float64 the
  # hash term must use its values as they are, not k·S rounded to float32 (that rounding
  # moved the explicit form's float64 runs off the grouped form's by ~1e-9 per step).
  rng = np.random.default_rng(3)
  n, N, k = 6, 41, 12
  F = np.tanh(rng.normal(size=(n, k)))
  B = rng.normal(size=(N, k))
  S = np.where(rng.random((n, N)) < 0.2, 1.0, -np.float32(7 / 34)).astype(np.float32)
  assert np.float32(k) * S.min() != k * np.float64(S.min())  # k·r is not a float32
  with jax.enable_x64(True):
    got = float(jax.jit(lambda F, B, S: losses.hash_loss(F, B, S, code_length=k))(F, B, S))
  want = _np_terms(F, B, S, np.arange(n), np.zeros((n, 1)), np.zeros((n, 1)), 1.0, k)['hash']
  np.testing.assert_allclose(got, want, rtol=FLOAT64_RTOL)  # the bound above (n·N = 246)


@pytest.mark.equivalence
def test_image_loss_matches_numpy():
  rng = np.random.default_rng(0)
  target = rng.random((3, 8, 8, 3)).astype(np.float32)
  pred1, pred2 = rng.random((2, 3, 8, 8, 3)).astype(np.float32)
  want = np.mean((pred1.astype(np.float64) - target) ** 2) + np.mean((pred2.astype(np.float64) - target) ** 2)
  # Two float32 means of 3·8·8·3 = 576 non-negative squares: relative error ≤ (576 + 3)·eps
  # (Higham §4.2, tests/tolerances.py).
  np.testing.assert_allclose(float(losses.image_loss((pred1, pred2), target)), want,
                             rtol=summation_bound(576 + 3, 1.0))


def test_total_loss_applies_phase_schedule():
  terms = {'hash': 2.0, 'quant': 3.0, 'dec': 5.0, 'rec': 7.0, 'img': 11.0}
  phase1 = 2.0 + 3.0 + 5.0 + 0.01 * 11.0
  phase2 = 2.0 + 3.0 + 5.0 + 7.0 + 0.1 * 11.0
  # A float32 weighted sum of 5 positive terms: relative error ≤ (5 + 1)·eps (Higham §4.2).
  rtol = summation_bound(5 + 1, 1.0)
  np.testing.assert_allclose(float(losses.total_loss(terms, 1)), phase1, rtol=rtol)
  np.testing.assert_allclose(float(losses.total_loss(terms, 2)), phase2, rtol=rtol)
  # A traced phase gives the same values from one compiled function.
  traced = jax.jit(lambda p: losses.total_loss(terms, p))
  np.testing.assert_allclose(float(traced(jnp.int32(1))), phase1, rtol=rtol)
  np.testing.assert_allclose(float(traced(jnp.int32(2))), phase2, rtol=rtol)


def test_total_loss_rejects_missing_and_unknown_terms():
  with pytest.raises(ValueError, match="'img'"):
    losses.total_loss({'hash': 1.0, 'quant': 1.0, 'dec': 1.0, 'rec': 1.0}, 1)
  weights = dict(losses.DEFAULT_WEIGHTS, img=(0.0, 0.0))
  assert float(losses.total_loss({'hash': 1.0, 'quant': 1.0, 'dec': 1.0, 'rec': 1.0}, 1,
                                  weights)) == 3.0
  with pytest.raises(ValueError, match='extra'):
    losses.total_loss({'hash': 1.0, 'extra': 1.0}, 1)


def test_phase_weight_picks_each_phase_from_one_compiled_function():
  pick = jax.jit(lambda p: losses.phase_weight((0.0, 0.5, 2.0), p))
  assert [float(pick(jnp.int32(p))) for p in (1, 2, 3)] == [0.0, 0.5, 2.0]  # exact: a select
  assert losses.phase_weight((0.7,), jnp.int32(1)) == 0.7


def _inputs(n=4, k=6, num_db=10):
  rng = np.random.default_rng(0)
  output = types.SimpleNamespace(
      u=np.tanh(rng.normal(size=(n, k))).astype(np.float32),
      v=rng.normal(size=(n, 8)).astype(np.float32),
      v_hat=rng.normal(size=(n, 8)).astype(np.float32),
      image_from_v=None, image_from_v_hat=None)
  return losses.LossInputs(
      output=output, B=np.sign(rng.normal(size=(num_db, k))).astype(np.float32),
      S_batch=np.where(rng.random((n, num_db)) < 0.3, 1.0, -0.5).astype(np.float32),
      omega=np.arange(n), images=None, gamma=200.0, code_length=k)


def test_weighted_total_computes_only_the_weighted_registered_terms(monkeypatch):
  def never(inputs):
    raise AssertionError('a term with all weights 0 was computed')

  monkeypatch.setitem(losses.TERMS, 'never', losses.Term(never, (0.0, 0.0)))
  inputs = _inputs()
  weights = {'hash': (1.0, 1.0), 'rec': (0.0, 1.0), 'never': (0.0, 0.0), 'img': (0.0, 0.0)}
  total, terms = losses.weighted_total(inputs, 1, weights)
  assert set(terms) == {'hash', 'rec'}  # img would fail here: these inputs have no images
  want = losses.loss_terms(inputs.output.u, inputs.B, inputs.S_batch, inputs.omega,
                           inputs.output.v, inputs.output.v_hat, gamma=200.0, code_length=6)
  assert float(terms['hash']) == float(want['hash']) and float(total) == float(want['hash'])
  with pytest.raises(ValueError, match=r"no loss terms named \['hahs'\]"):
    losses.weighted_total(inputs, 1, {'hahs': (1.0, 1.0)})
