"""Retrieval metrics with Hamming ranking.

Ties in Hamming distance are broken by database index (a stable sort), and every
database item is ranked: the reference code's ``topk=-1`` slice drops the last one.
Codes may be ±1, {0, 1} (an integer or bool array), real values (sign, with
sign(0) = +1; so float 0/1 arrays count as real values) or ``PackedCodes``.
Labels are int class ids (n,) or multi-hot rows (n, L); relevant = same class or
at least one shared label. Every metric averages over all queries, in chunks so
that memory stays bounded.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PackedCodes:
  """Codes with their bits packed 8 to a byte: bit 1 for +1. words: (n, ⌈bits/8⌉) uint8."""

  words: np.ndarray
  bits: int

  def __len__(self):
    return self.words.shape[0]

  def __getitem__(self, rows):
    return PackedCodes(self.words[rows], self.bits)


def as_pm1(codes) -> np.ndarray:
  """±1 float32 codes from ±1, {0, 1}, real values (sign(0) = +1) or PackedCodes."""
  if isinstance(codes, PackedCodes):
    bits = np.unpackbits(codes.words, axis=1, count=codes.bits)
    return np.where(bits > 0, 1.0, -1.0).astype(np.float32)
  codes = np.asarray(codes)
  if codes.dtype == np.bool_ or (np.issubdtype(codes.dtype, np.integer) and codes.min(initial=0) >= 0
                                 and codes.max(initial=0) <= 1):
    return np.where(codes > 0, 1.0, -1.0).astype(np.float32)
  return np.where(codes >= 0, 1.0, -1.0).astype(np.float32)


def pack_codes(codes) -> PackedCodes:
  """Any code form → PackedCodes (k bits in ⌈k/8⌉ bytes per code)."""
  pm1 = as_pm1(codes)
  return PackedCodes(np.packbits(pm1 > 0, axis=1), pm1.shape[1])


def _prepared(codes):
  """PackedCodes get whole 64-bit words (zero padding adds no distance); any other
  form becomes ±1 float32. Done once per code set, not per chunk of queries."""
  if not isinstance(codes, PackedCodes):
    return as_pm1(codes)
  pad = -codes.words.shape[1] % 8
  return PackedCodes(np.ascontiguousarray(np.pad(codes.words, ((0, 0), (0, pad)))), codes.bits)


def _distance(q, db) -> np.ndarray:
  """Hamming distances between two prepared code sets of the same kind."""
  if isinstance(q, PackedCodes):
    if q.bits != db.bits:
      raise ValueError(f'code lengths differ: {q.bits} and {db.bits} bits')
    q_words, db_words = q.words.view(np.uint64), db.words.view(np.uint64)
    dist = np.zeros((len(q_words), len(db_words)), np.int32)
    for w in range(q_words.shape[1]):  # XOR + popcount, one 64-bit word at a time
      dist += np.bitwise_count(q_words[:, w, None] ^ db_words[None, :, w])
    return dist
  if q.shape[1] != db.shape[1]:
    raise ValueError(f'code lengths differ: {q.shape[1]} and {db.shape[1]} bits')
  # ±1 codes: q·b is an exact integer in float32 (k < 2^24), so no rounding is needed.
  return ((q.shape[1] - q @ db.T) * 0.5).astype(np.int32)


def hamming_distance(query_codes, db_codes) -> np.ndarray:
  """(q, N) int32 Hamming distances between two code sets (any form ``as_pm1`` takes)."""
  q, db = _prepared(query_codes), _prepared(db_codes)
  if isinstance(q, PackedCodes) != isinstance(db, PackedCodes):
    q, db = as_pm1(q), as_pm1(db)
  return _distance(q, db)


def _query_chunk(chunk: int, num_db: int) -> int:
  """Queries per chunk, so that a chunk's (q, N) arrays stay near 16M elements."""
  return max(1, min(chunk, (1 << 24) // max(num_db, 1)))


def relevance(query_labels, db_labels) -> np.ndarray:
  """(q, N) bool: same class id, or multi-hot rows sharing a label."""
  query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
  if query_labels.ndim == 1:
    return query_labels[:, None] == db_labels[None, :]
  return (query_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def _distance_chunks(query_codes, db_codes, chunk):
  """(rows, distances) for successive chunks of queries; the database prepared once."""
  chunk = _query_chunk(chunk, len(db_codes))
  db_codes = _prepared(db_codes)
  for start in range(0, len(query_codes), chunk):
    rows = slice(start, start + chunk)
    yield rows, hamming_distance(query_codes[rows], db_codes)


def _chunks(query_codes, query_labels, db_codes, db_labels, chunk):
  """(distances, relevance) for successive chunks of queries."""
  for rows, dist in _distance_chunks(query_codes, db_codes, chunk):
    yield dist, relevance(np.asarray(query_labels)[rows], db_labels)


def hamming_ranking(dist: np.ndarray) -> np.ndarray:
  """Database indices of each row sorted by (distance, index): a stable sort."""
  key = dist.astype(np.uint16)  # small unsigned keys: NumPy's stable sort is a radix sort
  return np.argsort(key, axis=1, kind='stable')


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=None,
                           chunk: int = 256) -> float:
  """mAP over queries of the AP of their Hamming ranking (mAP@all when topk is None).

  AP@k = Σ_{i ≤ k, relevant} precision@i / (relevant items in the top k); a query
  with no relevant item in its ranked list has AP 0.
  """
  num_db = len(db_codes)
  topk = num_db if topk is None else min(int(topk), num_db)
  aps = []
  for dist, rel in _chunks(query_codes, query_labels, db_codes, db_labels, chunk):
    ranked = np.take_along_axis(rel, hamming_ranking(dist)[:, :topk], axis=1)
    # Only the relevant positions matter: row-major nonzero lists them rank by rank.
    rows, ranks = np.nonzero(ranked)
    found = np.bincount(rows, minlength=len(dist))
    hits = np.arange(len(rows)) - (np.cumsum(found) - found)[rows] + 1
    total = np.bincount(rows, weights=hits / (ranks + 1), minlength=len(dist))
    aps.append(np.where(found > 0, total / np.maximum(found, 1), 0.0))
  return float(np.concatenate(aps).mean())


def _bucket_counts(dist: np.ndarray, rel, bits: int):
  """Per query and distance d ∈ [0, bits]: items n_d and (unless rel is None) relevant
  items r_d, each (q, bits + 1) float64."""
  q = dist.shape[0]
  flat = (dist + (bits + 1) * np.arange(q)[:, None]).ravel()
  n = np.bincount(flat, minlength=q * (bits + 1)).reshape(q, bits + 1).astype(np.float64)
  if rel is None:
    return n, None
  r = np.bincount(flat, weights=rel.ravel(), minlength=q * (bits + 1)).reshape(q, bits + 1)
  return n, r


def _code_length(codes) -> int:
  return codes.bits if isinstance(codes, PackedCodes) else np.asarray(codes).shape[1]


def tie_aware_mean_average_precision(query_codes, db_codes, query_labels, db_labels,
                                     chunk: int = 256) -> float:
  """mAP@all as the expected AP over all orderings of items tied in distance.

  For a query, the items at distance d occupy ranks L+1 … L+n (L items nearer);
  each of them is relevant with probability r/n, and given that, the relevant
  items ahead of it in its bucket number (i−1)(r−1)/(n−1) on average, so the
  bucket adds (r/n) Σ_i (R_< + 1 + (i−1)(r−1)/(n−1)) / (L + i), summed in closed
  form with harmonic numbers (McSherry & Najork, ECIR 2008). Needs only the
  per-distance counts: no sort.
  """
  bits = _code_length(query_codes)
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, len(db_codes) + 1))])
  aps = []
  for dist, rel in _chunks(query_codes, query_labels, db_codes, db_labels, chunk):
    n, r = _bucket_counts(dist, rel, bits)
    before = np.cumsum(n, axis=1) - n  # L: items nearer than each distance
    rel_before = np.cumsum(r, axis=1) - r  # R_<
    sum_inv = harmonic[(before + n).astype(np.int64)] - harmonic[before.astype(np.int64)]
    sum_frac = n - (before + 1) * sum_inv  # Σ_i (i−1)/(L+i); sum_inv is Σ_i 1/(L+i)
    slope = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
    contribution = np.where(n > 0, r / np.maximum(n, 1) * ((rel_before + 1) * sum_inv
                                                            + slope * sum_frac), 0.0)
    total_rel = r.sum(axis=1)
    aps.append(np.where(total_rel > 0, contribution.sum(axis=1) / np.maximum(total_rel, 1), 0.0))
  return float(np.concatenate(aps).mean())


def precision_recall_at_k(query_codes, db_codes, query_labels, db_labels, ks,
                          chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Mean precision@k and recall@k over queries for each k in ks (stable tie rule).

  recall@k is 0 for a query with no relevant item in the database.
  """
  ks = np.asarray(ks, np.int64)
  if ks.min() < 1 or ks.max() > len(db_codes):
    raise ValueError(f'every k must be in [1, {len(db_codes)}]; got {ks.tolist()}')
  precision, recall = [], []
  for dist, rel in _chunks(query_codes, query_labels, db_codes, db_labels, chunk):
    ranked = np.take_along_axis(rel, hamming_ranking(dist)[:, :ks.max()], axis=1)
    hits = np.cumsum(ranked, axis=1)[:, ks - 1]
    precision.append(hits / ks)
    total = rel.sum(axis=1, keepdims=True)
    recall.append(np.where(total > 0, hits / np.maximum(total, 1), 0.0))
  return np.concatenate(precision).mean(axis=0), np.concatenate(recall).mean(axis=0)


def precision_recall_by_radius(query_codes, db_codes, query_labels, db_labels,
                               chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """The precision-recall curve over Hamming radii 0 … k: mean over queries of the
  precision and recall of the items within distance r (precision 0 where none is)."""
  bits = _code_length(query_codes)
  precision, recall = [], []
  for dist, rel in _chunks(query_codes, query_labels, db_codes, db_labels, chunk):
    n, r = _bucket_counts(dist, rel, bits)
    within, rel_within = np.cumsum(n, axis=1), np.cumsum(r, axis=1)
    precision.append(np.where(within > 0, rel_within / np.maximum(within, 1), 0.0))
    total = rel_within[:, -1:]
    recall.append(np.where(total > 0, rel_within / np.maximum(total, 1), 0.0))
  return np.concatenate(precision).mean(axis=0), np.concatenate(recall).mean(axis=0)


def precision_within_radius(query_codes, db_codes, query_labels, db_labels, radius: int = 2,
                            chunk: int = 256) -> float:
  """Mean over queries of the precision of the items within Hamming distance ``radius``."""
  precision, _ = precision_recall_by_radius(query_codes, db_codes, query_labels, db_labels, chunk)
  return float(precision[min(radius, len(precision) - 1)])


def search(query_codes, db_codes, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Top-k neighbours by (Hamming distance, database index): (distances, indices), (q, k).

  Selects by counting rather than sorting: the k-th distance t of each query comes from
  its per-distance counts; the result is every item nearer than t and the first
  (by index) of those at distance t.
  """
  k = min(int(k), len(db_codes))
  bits = _code_length(query_codes)
  distances, indices = [], []
  for _, dist in _distance_chunks(query_codes, db_codes, chunk):
    counts, _ = _bucket_counts(dist, None, bits)
    threshold = np.argmax(np.cumsum(counts, axis=1) >= k, axis=1)[:, None]
    nearer = dist < threshold
    at_threshold = dist == threshold
    room = k - nearer.sum(axis=1, keepdims=True)
    chosen = nearer | (at_threshold & (np.cumsum(at_threshold, axis=1) <= room))
    _, cols = np.nonzero(chosen)  # row-major: indices ascending within each query
    cols = cols.reshape(len(dist), k)
    picked = np.take_along_axis(dist, cols, axis=1)
    order = hamming_ranking(picked)
    indices.append(np.take_along_axis(cols, order, axis=1))
    distances.append(np.take_along_axis(picked, order, axis=1))
  return np.concatenate(distances), np.concatenate(indices)
