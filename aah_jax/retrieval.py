"""Retrieval metrics with Hamming ranking.

Ties in Hamming distance are broken by database index (a stable sort), and every
database item is ranked: the reference code's ``topk=-1`` slice drops the last one.
"""

import numpy as np


def as_pm1(codes) -> np.ndarray:
  """±1 float32 codes from ±1, {0, 1} or real values (sign, with sign(0) = +1)."""
  codes = np.asarray(codes)
  if codes.dtype == np.bool_ or (np.issubdtype(codes.dtype, np.integer) and codes.min(initial=0) >= 0
                                 and codes.max(initial=0) <= 1):
    return np.where(codes > 0, 1.0, -1.0).astype(np.float32)
  return np.where(codes >= 0, 1.0, -1.0).astype(np.float32)


def hamming_distance(query_codes, db_codes) -> np.ndarray:
  """(q, N) int32 Hamming distances between code sets (any form ``as_pm1`` takes)."""
  q, db = as_pm1(query_codes), as_pm1(db_codes)
  k = q.shape[1]
  return np.rint((k - q @ db.T) / 2).astype(np.int32)


def relevance(query_labels, db_labels) -> np.ndarray:
  """(q, N) bool: same class id, or multi-hot rows sharing a label."""
  query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
  if query_labels.ndim == 1:
    return query_labels[:, None] == db_labels[None, :]
  return (query_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=None,
                           chunk: int = 256) -> float:
  """mAP over queries of the AP of their Hamming ranking (mAP@all when topk is None).

  A query with no relevant item in its ranked list has AP 0.
  """
  num_db = np.asarray(db_codes).shape[0]
  topk = num_db if topk is None else min(int(topk), num_db)
  aps = []
  for start in range(0, len(query_codes), chunk):
    stop = start + chunk
    dist = hamming_distance(query_codes[start:stop], db_codes)
    order = np.argsort(dist, axis=1, kind='stable')[:, :topk]
    rel = np.take_along_axis(relevance(query_labels[start:stop], db_labels), order, axis=1)
    hits = np.cumsum(rel, axis=1)
    precision_at_hits = np.where(rel, hits / np.arange(1, topk + 1), 0.0)
    num_rel = rel.sum(axis=1)
    aps.append(np.where(num_rel > 0, precision_at_hits.sum(axis=1) / np.maximum(num_rel, 1), 0.0))
  return float(np.concatenate(aps).mean())
