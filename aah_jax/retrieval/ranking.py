"""Retrieval metrics with Hamming ranking.

Ties in Hamming distance are broken by database index (a stable sort), and every
database item is ranked: the reference code's ``topk=-1`` slice drops the last one.
Codes may be ±1, {0, 1} (an integer or bool array), real values (sign, with
sign(0) = +1; so float 0/1 arrays count as real values) or ``PackedCodes``.
Labels are int class ids (n,) or multi-hot rows (n, L); relevant = same class or
at least one shared label. Every metric averages over all queries. The work runs in
the compiled kernels of ``aah_jax.retrieval.hamming`` (XOR + popcount on 64-bit words, one
pass over the database per query, no sort), which keep O(N) memory per thread.
"""

import dataclasses

import numpy as np

from aah_jax.retrieval import hamming


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
  """Any code form → PackedCodes (k bits in ⌈k/8⌉ bytes per code); PackedCodes as they are."""
  if isinstance(codes, PackedCodes):
    return codes
  pm1 = as_pm1(codes)
  return PackedCodes(np.packbits(pm1 > 0, axis=1), pm1.shape[1])


def _code_length(codes) -> int:
  return codes.bits if isinstance(codes, PackedCodes) else np.asarray(codes).shape[1]


def _words(codes) -> np.ndarray:
  """(n, W) uint64: the packed bits in whole 64-bit words (zero padding adds no distance)."""
  packed = codes if isinstance(codes, PackedCodes) else pack_codes(codes)
  pad = -packed.words.shape[1] % 8
  return np.ascontiguousarray(np.pad(packed.words, ((0, 0), (0, pad)))).view(np.uint64)


def _prepared(query_codes, db_codes):
  """Query words (q, W) and database words word-major (W, N), after checking lengths."""
  if _code_length(query_codes) != _code_length(db_codes):
    raise ValueError(f'code lengths differ: queries have {_code_length(query_codes)} bits, '
                     f'the database {_code_length(db_codes)}')
  return _words(query_codes), np.ascontiguousarray(_words(db_codes).T)


def _label_rows(labels, name: str) -> tuple[np.ndarray, bool]:
  """int64 rows for the kernels: class ids (n, 1), or multi-hot (n, L) packed in 64-bit
  words; and whether they are multi-hot."""
  labels = np.asarray(labels)
  if labels.ndim == 1:
    return labels.astype(np.int64)[:, None], False
  if labels.ndim != 2:
    raise ValueError(f'{name} must be class ids (n,) or multi-hot rows (n, L); '
                     f'got shape {labels.shape}')
  packed = np.packbits(labels > 0, axis=1)
  packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
  return np.ascontiguousarray(packed).view(np.int64), True


def _prepared_with_labels(query_codes, db_codes, query_labels, db_labels):
  for codes, labels, name in ((query_codes, query_labels, 'query'), (db_codes, db_labels, 'database')):
    if len(codes) != len(labels):
      raise ValueError(f'{len(codes)} {name} codes but {len(labels)} {name} labels')
  query_rows, query_multi = _label_rows(query_labels, 'query labels')
  db_rows, db_multi = _label_rows(db_labels, 'database labels')
  if query_multi != db_multi or query_rows.shape[1] != db_rows.shape[1]:
    raise ValueError(f'query labels {np.shape(query_labels)} and database labels '
                     f'{np.shape(db_labels)} are not the same kind')
  return (*_prepared(query_codes, db_codes), query_rows, np.ascontiguousarray(db_rows.T),
          query_multi, _code_length(query_codes))


def hamming_distance(query_codes, db_codes) -> np.ndarray:
  """(q, N) int32 Hamming distances between two code sets (any form ``as_pm1`` takes)."""
  return hamming.distances(*_prepared(query_codes, db_codes))


def relevance(query_labels, db_labels) -> np.ndarray:
  """(q, N) bool: same class id, or multi-hot rows sharing a label."""
  query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
  if query_labels.ndim == 1:
    return query_labels[:, None] == db_labels[None, :]
  return (query_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=None) -> float:
  """mAP over queries of the AP of their Hamming ranking (mAP@all when topk is None).

  AP@k = Σ_{i ≤ k, relevant} precision@i / (relevant items in the top k); a query
  with no relevant item in its ranked list has AP 0.
  """
  topk = len(db_codes) if topk is None else min(int(topk), len(db_codes))
  aps = hamming.average_precision(
      *_prepared_with_labels(query_codes, db_codes, query_labels, db_labels), topk)
  return float(aps.mean())


def _bucket_counts(query_codes, db_codes, query_labels, db_labels):
  """Per query and distance d ∈ [0, bits]: items n_d and relevant items r_d, (q, bits + 1)."""
  n, r = hamming.bucket_counts(
      *_prepared_with_labels(query_codes, db_codes, query_labels, db_labels))
  return n.astype(np.float64), r.astype(np.float64)


def tie_aware_mean_average_precision(query_codes, db_codes, query_labels, db_labels) -> float:
  """mAP@all as the expected AP over all orderings of items tied in distance.

  For a query, the items at distance d occupy ranks L+1 … L+n (L items nearer);
  each of them is relevant with probability r/n, and given that, the relevant
  items ahead of it in its bucket number (i−1)(r−1)/(n−1) on average, so the
  bucket adds (r/n) Σ_i (R_< + 1 + (i−1)(r−1)/(n−1)) / (L + i), summed in closed
  form with harmonic numbers (McSherry & Najork, ECIR 2008). Needs only the
  per-distance counts: no sort.
  """
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, len(db_codes) + 1))])
  n, r = _bucket_counts(query_codes, db_codes, query_labels, db_labels)
  before = np.cumsum(n, axis=1) - n  # L: items nearer than each distance
  rel_before = np.cumsum(r, axis=1) - r  # R_<
  sum_inv = harmonic[(before + n).astype(np.int64)] - harmonic[before.astype(np.int64)]
  sum_frac = n - (before + 1) * sum_inv  # Σ_i (i−1)/(L+i); sum_inv is Σ_i 1/(L+i)
  slope = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
  contribution = np.where(n > 0, r / np.maximum(n, 1) * ((rel_before + 1) * sum_inv
                                                          + slope * sum_frac), 0.0)
  total_rel = r.sum(axis=1)
  aps = np.where(total_rel > 0, contribution.sum(axis=1) / np.maximum(total_rel, 1), 0.0)
  return float(aps.mean())


def precision_recall_at_k(query_codes, db_codes, query_labels, db_labels,
                          ks) -> tuple[np.ndarray, np.ndarray]:
  """Mean precision@k and recall@k over queries for each k in ks (stable tie rule).

  recall@k is 0 for a query with no relevant item in the database.
  """
  ks = np.asarray(ks, np.int64)
  if ks.min() < 1 or ks.max() > len(db_codes):
    raise ValueError(f'every k must be in [1, {len(db_codes)}]; got {ks.tolist()}')
  _, r = _bucket_counts(query_codes, db_codes, query_labels, db_labels)
  _, top = search(query_codes, db_codes, int(ks.max()))
  query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
  if query_labels.ndim == 1:
    ranked = db_labels[top] == query_labels[:, None]
  else:
    ranked = np.einsum('qkl,ql->qk', db_labels[top] > 0, query_labels > 0) > 0
  hits = np.cumsum(ranked, axis=1)[:, ks - 1]
  total = r.sum(axis=1, keepdims=True)
  recall = np.where(total > 0, hits / np.maximum(total, 1), 0.0)
  return (hits / ks).mean(axis=0), recall.mean(axis=0)


def precision_recall_by_radius(query_codes, db_codes, query_labels,
                               db_labels) -> tuple[np.ndarray, np.ndarray]:
  """The precision-recall curve over Hamming radii 0 … k: mean over queries of the
  precision and recall of the items within distance r (precision 0 where none is)."""
  n, r = _bucket_counts(query_codes, db_codes, query_labels, db_labels)
  within, rel_within = np.cumsum(n, axis=1), np.cumsum(r, axis=1)
  precision = np.where(within > 0, rel_within / np.maximum(within, 1), 0.0)
  total = rel_within[:, -1:]
  recall = np.where(total > 0, rel_within / np.maximum(total, 1), 0.0)
  return precision.mean(axis=0), recall.mean(axis=0)


def precision_within_radius(query_codes, db_codes, query_labels, db_labels,
                            radius: int = 2) -> float:
  """Mean over queries of the precision of the items within Hamming distance ``radius``."""
  precision, _ = precision_recall_by_radius(query_codes, db_codes, query_labels, db_labels)
  return float(precision[min(radius, len(precision) - 1)])


def search(query_codes, db_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-k neighbours by (Hamming distance, database index): (distances, indices), (q, k).

  Selects by counting rather than sorting (``hamming.top_k``): one pass per query over
  the database, no (q, N) array.
  """
  k = min(int(k), len(db_codes))
  return hamming.top_k(*_prepared(query_codes, db_codes), _code_length(query_codes), k)
