"""The label-grouped hash loss, r and DCC sweep equal the explicit forms (adsh, losses) on
random single- and multi-label data, a query label absent from the database included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aah_jax.training import adsh, grouped, losses
from tolerances import EPS32

N, K, NUM_CLASSES, BATCH, OMEGA = 200, 12, 9, 16, 40
EPS64 = float(np.finfo(np.float64).eps)
# float64: each form sums at most n·N = 3,200 products per value, so rounding stays below
# 3,200·eps64 ≈ 7e-13 of the absolute sums, which are within 10× of the values here (k·S
# dominates F·B: no cancellation to speak of).
RTOL64 = 1e-11


def _labels(rng, multi: bool, n: int, absent: bool = False):
  """Class ids in 0..8 (multi-hot rows over 9 classes); absent: class 9 (a label no
  database item has) in row 0."""
  classes = NUM_CLASSES + 1
  if multi:
    rows = (rng.random((n, classes)) < 0.25).astype(np.int32)
    rows[:, NUM_CLASSES] = 0
    if absent:
      rows[0] = 0
      rows[0, NUM_CLASSES] = 1
    return rows
  ids = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  if absent:
    ids[0] = NUM_CLASSES
  return ids


def _case(seed: int, multi: bool):
  rng = np.random.default_rng(seed)
  db_labels = _labels(rng, multi, N)
  batch_labels = _labels(rng, multi, BATCH, absent=True)
  B = rng.choice([-1.0, 1.0], (N, K))
  F = rng.uniform(-1, 1, (BATCH, K))
  return rng, db_labels, batch_labels, B, F


@pytest.mark.parametrize('multi', [False, True])
def test_label_groups_rebuild_the_labels(multi):
  _, db_labels, _, _, _ = _case(0, multi)
  groups = grouped.LabelGroups.of(db_labels)
  np.testing.assert_array_equal(groups.rows[groups.group_of], db_labels)
  assert groups.counts.sum() == N and groups.num_groups == len(np.unique(db_labels, axis=0))


@pytest.mark.parametrize('multi', [False, True])
@pytest.mark.parametrize('soft', [True, False])
def test_r_equals_the_explicit_block_count(multi, soft):
  # Both count the same integer pairs exactly in float32 (≤ 3,200 < 2²⁴); r is one division.
  _, db_labels, batch_labels, _, _ = _case(1, multi)
  groups = grouped.LabelGroups.of(db_labels)
  h = grouped.membership(batch_labels, groups.rows)
  assert float(grouped.negative_weight(h, groups.counts, soft)) == pytest.approx(
      float(adsh.negative_weight(batch_labels, db_labels, soft)), rel=EPS32)


def _both_losses(F, B, db_labels, batch_labels, r):
  groups = grouped.LabelGroups.of(db_labels)
  h = grouped.membership(batch_labels, groups.rows)
  S = adsh.similarity_rows(batch_labels, db_labels, r).astype(F.dtype)
  summary = grouped.summarize(B, groups, jnp.arange(2), num_database=len(db_labels))
  explicit = lambda F: losses.hash_loss(F, B, S, code_length=K)
  grouped_form = lambda F: grouped.hash_loss(F, h.astype(F.dtype), r, summary, code_length=K)
  return explicit, grouped_form


@pytest.mark.parametrize('multi', [False, True])
@pytest.mark.parametrize('r', [0.0, 0.375, 1.0])  # exact in float32, as S holds it
def test_hash_loss_and_its_gradient_equal_the_explicit_form(multi, r):
  _, db_labels, batch_labels, B, F = _case(2, multi)
  with jax.enable_x64(True):
    F64, B64 = jnp.asarray(F, jnp.float64), jnp.asarray(B, jnp.float64)
    explicit, grouped_form = _both_losses(F64, B64, db_labels, batch_labels, r)
    np.testing.assert_allclose(grouped_form(F64), explicit(F64), rtol=RTOL64)
    want = jax.grad(explicit)(F64)  # entries near 0 are checked against the largest one
    np.testing.assert_allclose(jax.grad(grouped_form)(F64), want, rtol=RTOL64,
                               atol=RTOL64 * float(jnp.abs(want).max()))
    reference = float(explicit(F64))
  # float32: the grouped form sums ≤ G·k = 6,000 products per row (group sums of ±1 are exact
  # integers), ≤ 6,000·eps32 ≈ 7e-4 of its parts' absolute sum in the worst case; the parts
  # are within 3× of the loss here. Measured errors sit near 1e-7: 1e-5 is the spec's bound
  # with room, and the worst case would be a defect to investigate, not noise.
  explicit32, grouped32 = _both_losses(jnp.asarray(F, jnp.float32), jnp.asarray(B, jnp.float32),
                                       db_labels, batch_labels, r)
  assert float(grouped32(jnp.asarray(F, jnp.float32))) == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize('multi', [False, True])
def test_dcc_sweep_gives_the_explicit_bits(multi):
  rng, db_labels, _, B, _ = _case(3, multi)
  omega = rng.choice(N, OMEGA, replace=False)
  U = rng.uniform(-1, 1, (OMEGA, K))
  groups = grouped.LabelGroups.of(db_labels)
  with jax.enable_x64(True):
    h_omega = grouped.membership(db_labels[omega], groups.rows)
    r = grouped.negative_weight(h_omega, groups.counts)
    S = adsh.similarity_rows(db_labels[omega], db_labels, r)
    U64, B0 = jnp.asarray(U, jnp.float64), jnp.asarray(rng.normal(size=(N, K)), jnp.float64)
    explicit = adsh.dcc_update(B0, U64, omega, S, 200.0)
    got = grouped.dcc_update(B0, U64, omega, h_omega, r, groups.group_of, 200.0)
  # Identical bits: in float64 a value within rounding of 0 (an exact tie) has probability
  # about 1e-13 per entry with these continuous U; the count of differing bits is the check.
  assert int(np.sum(np.asarray(got) != np.asarray(explicit))) == 0
