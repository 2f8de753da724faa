"""Attribute alignment measures against brute force, and on hand-built codes."""

import numpy as np
import pytest

from aah_jax.analysis import explain


def _brute_force_auc(scores, positive):
  """P(score of a positive > score of a negative) + ½ P(tie), over all pairs."""
  pos, neg = scores[positive], scores[~positive]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_counting_with_ties():
  rng = np.random.default_rng(0)
  u = rng.integers(-2, 3, (40, 3)).astype(float)  # many ties
  indicators = rng.random((40, 4)) < 0.4
  auc = explain.auc_matrix(u, indicators)
  for j in range(3):
    for a in range(4):
      # float64 counts below 2⁵³ and one division each side: equal to a few eps64.
      assert auc[j, a] == pytest.approx(_brute_force_auc(u[:, j], indicators[:, a]), rel=1e-12)
  constant = np.zeros((40, 1), bool)
  assert np.isnan(explain.auc_matrix(u, constant)).all()


def test_mutual_information_matches_the_definition():
  rng = np.random.default_rng(1)
  bits, attrs = rng.random((200, 2)) < 0.5, rng.random((200, 3)) < 0.3
  mi = explain.mutual_information(bits, attrs)
  for j in range(2):
    for a in range(3):
      expected = 0.0
      for x in (0, 1):
        for y in (0, 1):
          p = np.mean((bits[:, j] == x) & (attrs[:, a] == y))
          if p > 0:
            expected += p * np.log2(p / (np.mean(bits[:, j] == x) * np.mean(attrs[:, a] == y)))
      # Four float64 terms of at most 1 bit each, a few roundings apiece: error ≪ 1e-12 bit.
      assert mi[j, a] == pytest.approx(expected, abs=1e-12)


def test_a_bit_that_is_an_attribute_is_perfectly_aligned():
  rng = np.random.default_rng(2)
  attributes = rng.integers(0, 2, (500, 3))  # 3 binary attributes, as annotations
  indicators, names = explain.indicators_from_attributes(attributes, ['a', 'b', 'c'])
  u = np.where(indicators, 0.7, -0.7) + rng.normal(0, 0.01, indicators.shape)
  u[:, 1] *= -1  # a bit may encode its attribute with the opposite sign
  aligned = explain.aligned_auc(u, indicators)
  np.testing.assert_array_equal(np.diag(aligned), 1.0)  # integer counts in float64: exact
  summary = explain.summary(u, indicators)
  assert summary['mean_best_auc'] == 1.0
  assert summary['attributes_covered'] == 1.0 and names == ['a', 'b', 'c']
  mi = explain.mutual_information(u >= 0, indicators)
  entropy = [-(p * np.log2(p) + (1 - p) * np.log2(1 - p)) for p in indicators.mean(axis=0)]
  # The same quantity by two float64 routes of a few terms ≤ 1 bit each: error ≪ 1e-12 bit.
  np.testing.assert_allclose(np.diag(mi), entropy, rtol=0, atol=1e-12)


def test_random_codes_are_not_aligned():
  # Tolerance: with n = 4,000 images, the folded AUC of an unrelated score is 0.5 plus
  # |N(0, σ)| with σ = sqrt((n+1)/(12 P (n−P))) ≈ 0.009 at P ≈ n/2.
  rng = np.random.default_rng(3)
  categorical = rng.integers(0, 3, (4000, 2))
  indicators, names = explain.indicators_from_attributes(
      categorical, ['colour', 'shape'], [['red', 'green', 'blue'], ['round', 'long', 'flat']])
  assert names[4] == 'shape=long' and indicators.shape == (4000, 6)
  u = rng.normal(size=(4000, 12))
  aligned = explain.aligned_auc(u, indicators)
  assert abs(aligned.mean() - 0.5) < 0.015
  summary = explain.summary(u, indicators)
  # The best of 12 unrelated bits per attribute: 0.5 + max of 12 |N(0, 0.009)| ≈ 0.5 + 2.2σ.
  assert summary['mean_best_auc'] < 0.53 and summary['attributes_covered'] == 0.0


def test_strongest_part_reads_the_blocks_of_w():
  W = np.zeros((2, 4 * 5))  # M = 3 parts + the global block, 5 channels each
  W[0, 5:10] = 1.0  # bit 0: part 2
  W[1, 15:20] = 9.0  # bit 1: the global block is not a part …
  W[1, 0:5] = 0.5  # … so part 1
  assert explain.strongest_part(W, 3, 0) == 1 and explain.strongest_part(W, 3, 1) == 0
