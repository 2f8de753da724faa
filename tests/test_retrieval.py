"""Retrieval metrics against brute-force per-query implementations."""

import itertools

import numpy as np
import pytest

from aah_jax.retrieval import ranking

# mAP, precision and recall are float64 means of at most a few hundred ratios of integer counts:
# each ratio is one rounding, the means add a few hundred eps64 ≈ 1e-14 at most.
RTOL = 1e-12


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
  assert ranking.mean_average_precision(q, db, ql, dbl, topk=topk) == pytest.approx(
      _brute_force_map(q, db, ql, dbl, topk), rel=RTOL)


def test_map_multi_hot_and_no_relevant_items():
  rng = np.random.default_rng(1)
  q = rng.choice([-1, 1], (10, 12))
  db = rng.choice([-1, 1], (40, 12))
  ql = (rng.random((10, 5)) < 0.3).astype(int)
  ql[0] = 0  # no relevant item: AP 0
  dbl = (rng.random((40, 5)) < 0.3).astype(int)
  assert ranking.mean_average_precision(q, db, ql, dbl) == pytest.approx(
      _brute_force_map(q, db, ql, dbl), rel=RTOL)


def test_hand_computed_case_counts_the_last_item():
  # Distances 0, 1, 2 to three items; only the last one is relevant: AP = 1/3.
  q = np.array([[1, 1]])
  db = np.array([[1, 1], [1, -1], [-1, -1]])
  assert ranking.mean_average_precision(q, db, np.array([0]), np.array([1, 2, 0])) == \
      pytest.approx(1 / 3, rel=RTOL)
  # Real-valued and {0, 1} codes give the same distances as ±1.
  np.testing.assert_array_equal(ranking.hamming_distance(np.array([[0.3, -0.0]]),
                                                         np.array([[0, 1], [1, 1]])),
                                [[1, 0]])


def _ap(relevant_in_order):
  hits, total = 0, 0.0
  for rank, r in enumerate(relevant_in_order, start=1):
    if r:
      hits += 1
      total += hits / rank
  return total / hits if hits else 0.0


def _brute_force_tie_aware_ap(dist, rel):
  """The mean AP over every ordering of the items within each distance bucket."""
  buckets = [[j for j in range(len(dist)) if dist[j] == d] for d in sorted(set(dist))]
  aps = [_ap([rel[j] for group in orders for j in group])
         for orders in itertools.product(*(itertools.permutations(b) for b in buckets))]
  return float(np.mean(aps))


@pytest.mark.parametrize('seed', range(4))
def test_tie_aware_map_is_the_mean_over_tie_orderings(seed):
  rng = np.random.default_rng(seed)
  q = rng.choice([-1, 1], (4, 3))
  db = rng.choice([-1, 1], (7, 3))  # 3 bits over 7 items: buckets of up to ~4 tied items
  ql, dbl = rng.integers(0, 3, 4), rng.integers(0, 3, 7)
  dist = ranking.hamming_distance(q, db)
  rel = ranking.relevance(ql, dbl)
  want = np.mean([_brute_force_tie_aware_ap(dist[i], rel[i]) for i in range(4)])
  assert ranking.tie_aware_mean_average_precision(q, db, ql, dbl) == pytest.approx(
      want, rel=RTOL)


def test_tie_aware_map_equals_map_without_ties():
  db = np.array([[1, 1, 1], [1, 1, -1], [1, -1, -1], [-1, -1, -1]])
  q = np.array([[1, 1, 1]])
  for labels in ([0, 1, 0, 1], [1, 1, 0, 0], [1, 0, 0, 0]):
    assert ranking.tie_aware_mean_average_precision(q, db, [0], labels) == pytest.approx(
        ranking.mean_average_precision(q, db, [0], labels), rel=RTOL)


def _numpy_distance(q, db):
  """Hamming distances by comparing signs (sign(0) = +1), element by element."""
  return np.sum((np.asarray(q)[:, None, :] >= 0) != (np.asarray(db)[None, :, :] >= 0), axis=-1)


def _brute_force_ranking(q, db):
  dist = _numpy_distance(q, db)
  return dist, [sorted(range(len(db)), key=lambda j: (dist[i, j], j)) for i in range(len(q))]


def test_precision_recall_at_k_and_search_match_brute_force():
  rng = np.random.default_rng(5)
  q, db = rng.choice([-1, 1], (9, 12)), rng.choice([-1, 1], (50, 12))
  ql, dbl = rng.integers(0, 4, 9), rng.integers(0, 4, 50)
  ql[0] = 9  # no relevant item: precision and recall 0
  dist, order = _brute_force_ranking(q, db)
  ks = [1, 5, 50]
  precision, recall = ranking.precision_recall_at_k(q, db, ql, dbl, ks)
  for col, k in enumerate(ks):
    hits = [sum(ql[i] == dbl[j] for j in order[i][:k]) for i in range(9)]
    totals = [sum(ql[i] == dbl) for i in range(9)]
    assert precision[col] == pytest.approx(np.mean([h / k for h in hits]), rel=RTOL)
    assert recall[col] == pytest.approx(
        np.mean([h / t if t else 0.0 for h, t in zip(hits, totals)]), rel=RTOL)
  distances, indices = ranking.search(q, db, 6)
  np.testing.assert_array_equal(indices, [r[:6] for r in order])
  np.testing.assert_array_equal(distances, [[dist[i, j] for j in r[:6]] for i, r in enumerate(order)])
  with pytest.raises(ValueError, match='every k'):
    ranking.precision_recall_at_k(q, db, ql, dbl, [0])


def test_precision_recall_by_radius_matches_brute_force():
  rng = np.random.default_rng(6)
  q, db = rng.choice([-1, 1], (8, 6)), rng.choice([-1, 1], (30, 6))
  ql = (rng.random((8, 3)) < 0.4).astype(int)
  dbl = (rng.random((30, 3)) < 0.4).astype(int)
  dist = _numpy_distance(q, db)
  rel = (ql @ dbl.T) > 0
  precision, recall = ranking.precision_recall_by_radius(q, db, ql, dbl)
  for radius in range(7):
    p, r = [], []
    for i in range(8):
      inside = dist[i] <= radius
      p.append(rel[i][inside].mean() if inside.any() else 0.0)
      r.append(rel[i][inside].sum() / rel[i].sum() if rel[i].any() else 0.0)
    assert precision[radius] == pytest.approx(np.mean(p), rel=RTOL)
    assert recall[radius] == pytest.approx(np.mean(r), rel=RTOL)
  assert ranking.precision_within_radius(q, db, ql, dbl, radius=2) == pytest.approx(
      precision[2], rel=RTOL)


@pytest.mark.parametrize('bits', [12, 13, 48, 100])
def test_packed_codes_round_trip_and_distances(bits):
  rng = np.random.default_rng(bits)
  q, db = rng.normal(size=(5, bits)), rng.choice([0, 1], (20, bits))
  packed_q, packed_db = ranking.pack_codes(q), ranking.pack_codes(db)
  assert packed_q.words.dtype == np.uint8 and packed_q.words.shape == (5, -(-bits // 8))
  np.testing.assert_array_equal(ranking.as_pm1(packed_q), ranking.as_pm1(q))
  np.testing.assert_array_equal(ranking.hamming_distance(packed_q, packed_db),
                                _numpy_distance(q, 2 * db - 1))
  np.testing.assert_array_equal(ranking.hamming_distance(q, db), _numpy_distance(q, 2 * db - 1))
  assert ranking.mean_average_precision(packed_q, packed_db, [0] * 5, [0, 1] * 10) == \
      pytest.approx(ranking.mean_average_precision(q, db, [0] * 5, [0, 1] * 10), rel=RTOL)
  with pytest.raises(ValueError, match='code lengths differ'):
    ranking.hamming_distance(packed_q, ranking.pack_codes(db[:, :-1]))


@pytest.mark.parametrize('k', [1, 4, 9, 40])
def test_search_cuts_ties_by_index(k):
  rng = np.random.default_rng(k)
  q, db = rng.choice([-1, 1], (5, 3)), rng.choice([-1, 1], (40, 3))  # 3 bits: large tied groups
  dist, order = _brute_force_ranking(q, db)
  for codes in ((q, db), (ranking.pack_codes(q), ranking.pack_codes(db))):
    distances, indices = ranking.search(*codes, k)
    np.testing.assert_array_equal(indices, [r[:k] for r in order])
    np.testing.assert_array_equal(distances, np.take_along_axis(dist, indices, axis=1))


def test_many_labels_and_long_codes_span_several_words():
  # 130 labels and 100 bits: labels and codes each take more than one 64-bit word.
  rng = np.random.default_rng(7)
  q, db = rng.choice([-1, 1], (6, 100)), rng.choice([-1, 1], (30, 100))
  ql = (rng.random((6, 130)) < 0.01).astype(int)
  dbl = (rng.random((30, 130)) < 0.01).astype(int)
  ql[:, 129], dbl[::3, 129] = 1, 1  # the last label word shares a label with every third item
  assert ranking.mean_average_precision(q, db, ql, dbl) == pytest.approx(
      _brute_force_map(q, db, ql, dbl), rel=RTOL)
  dist, order = _brute_force_ranking(q, db)
  precision, recall = ranking.precision_recall_at_k(q, db, ql, dbl, [3, 30])
  rel = (ql @ dbl.T) > 0
  hits = np.array([[rel[i, order[i][:k]].sum() for k in (3, 30)] for i in range(6)])
  np.testing.assert_allclose(precision, (hits / [3, 30]).mean(axis=0), rtol=RTOL)
  np.testing.assert_allclose(recall, (hits / rel.sum(axis=1, keepdims=True)).mean(axis=0),
                             rtol=RTOL)


def test_mismatched_inputs_are_named():
  q, db = np.ones((3, 8)), np.ones((5, 8))
  with pytest.raises(ValueError, match='5 database codes but 4 database labels'):
    ranking.mean_average_precision(q, db, [0, 1, 2], [0, 1, 2, 3])
  with pytest.raises(ValueError, match='not the same kind'):
    ranking.mean_average_precision(q, db, [0, 1, 2], np.ones((5, 3)))
