"""mAP@all against a brute-force per-query implementation."""

import numpy as np
import pytest

from aah_jax import retrieval


def _brute_force_map(q, db, ql, dbl, topk=None):
  aps = []
  for i in range(len(q)):
    dist = [int(np.sum(q[i] != db[j])) for j in range(len(db))]
    ranked = sorted(range(len(db)), key=lambda j: (dist[j], j))[:topk or len(db)]
    if np.ndim(ql) == 1:
      rel = [ql[i] == dbl[j] for j in ranked]
    else:
      rel = [bool(np.any(ql[i] & dbl[j])) for j in ranked]
    hits, total = 0, 0.0
    for rank, r in enumerate(rel, start=1):
      if r:
        hits += 1
        total += hits / rank
    aps.append(total / hits if hits else 0.0)
  return float(np.mean(aps))


@pytest.mark.parametrize('topk', [None, 1, 7, 50])
def test_map_matches_brute_force_with_heavy_ties(topk):
  rng = np.random.default_rng(0)
  q = rng.choice([-1, 1], (15, 4))  # 4 bits: many ties
  db = rng.choice([-1, 1], (60, 4))
  ql, dbl = rng.integers(0, 5, 15), rng.integers(0, 5, 60)
  assert retrieval.mean_average_precision(q, db, ql, dbl, topk=topk) == pytest.approx(
      _brute_force_map(q, db, ql, dbl, topk), rel=1e-12)


def test_map_multi_hot_and_no_relevant_items():
  rng = np.random.default_rng(1)
  q = rng.choice([-1, 1], (10, 12))
  db = rng.choice([-1, 1], (40, 12))
  ql = (rng.random((10, 5)) < 0.3).astype(int)
  ql[0] = 0  # no relevant item: AP 0
  dbl = (rng.random((40, 5)) < 0.3).astype(int)
  assert retrieval.mean_average_precision(q, db, ql, dbl, chunk=3) == pytest.approx(
      _brute_force_map(q, db, ql, dbl), rel=1e-12)


def test_hand_computed_case_counts_the_last_item():
  # Distances 0, 1, 2 to three items; only the last one is relevant: AP = 1/3.
  q = np.array([[1, 1]])
  db = np.array([[1, 1], [1, -1], [-1, -1]])
  assert retrieval.mean_average_precision(q, db, np.array([0]), np.array([1, 2, 0])) == \
      pytest.approx(1 / 3)
  # Real-valued and {0, 1} codes give the same distances as ±1.
  np.testing.assert_array_equal(retrieval.hamming_distance(np.array([[0.3, -0.0]]),
                                                           np.array([[0, 1], [1, 1]])),
                                [[1, 0]])
