"""Which visual attribute each bit encodes: alignment measures and their pictures.

For every bit j (its pre-sign activation u_j) and every attribute value a (a binary
indicator per image: "has this value" for categorical attributes, the annotation itself
for binary ones):

- the ROC-AUC of u_j for predicting a, folded as max(AUC, 1 − AUC) (a bit may encode
  an attribute with either sign), from the Mann–Whitney rank sum with tied values given
  their average rank;
- the mutual information (in bits) between the bit b_j = sign(u_j) and a.

Summaries: ``mean_best_auc`` is the mean over bits of the best attribute's AUC;
``attributes_covered`` the fraction of attribute values that some bit predicts with
AUC ≥ ``COVERED_AUC``. Attribute values that every image (or none) has are left out.
"""

import numpy as np
from scipy import stats

COVERED_AUC = 0.8


def auc_matrix(u: np.ndarray, indicators: np.ndarray) -> np.ndarray:
  """(k, A) ROC-AUC of each column of u (n, k) for each indicator column (n, A); NaN where
  an indicator is constant."""
  u = np.asarray(u, np.float64)
  positive = np.asarray(indicators, bool)
  n = len(u)
  ranks = stats.rankdata(u, axis=0)  # average ranks for ties
  num_pos = positive.sum(axis=0).astype(np.float64)
  num_neg = n - num_pos
  rank_sums = ranks.T @ positive.astype(np.float64)  # (k, A)
  with np.errstate(invalid='ignore', divide='ignore'):
    auc = (rank_sums - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)
  auc[:, (num_pos == 0) | (num_neg == 0)] = np.nan
  return auc


def aligned_auc(u: np.ndarray, indicators: np.ndarray) -> np.ndarray:
  """max(AUC, 1 − AUC): how well a bit predicts an attribute value, whatever its sign."""
  auc = auc_matrix(u, indicators)
  return np.maximum(auc, 1 - auc)


def mutual_information(bits: np.ndarray, indicators: np.ndarray) -> np.ndarray:
  """(k, A) mutual information in bits between binary columns of bits (n, k) and of
  indicators (n, A)."""
  x = np.asarray(bits, bool).astype(np.float64)
  y = np.asarray(indicators, bool).astype(np.float64)
  n = len(x)
  joint = {(1, 1): x.T @ y, (1, 0): x.T @ (1 - y), (0, 1): (1 - x).T @ y,
           (0, 0): (1 - x).T @ (1 - y)}
  p_x = {1: x.mean(axis=0)[:, None], 0: 1 - x.mean(axis=0)[:, None]}
  p_y = {1: y.mean(axis=0)[None, :], 0: 1 - y.mean(axis=0)[None, :]}
  mi = np.zeros((x.shape[1], y.shape[1]))
  for (a, b), count in joint.items():
    p = count / n
    with np.errstate(divide='ignore', invalid='ignore'):
      term = p * np.log2(p / (p_x[a] * p_y[b]))
    mi += np.where(p > 0, term, 0.0)
  return mi


def summary(u: np.ndarray, indicators: np.ndarray) -> dict:
  """mean_best_auc, attributes_covered, and how many bits and attribute values counted."""
  return summarize_alignment(aligned_auc(u, indicators))


def summarize_alignment(aligned: np.ndarray) -> dict:
  """``summary`` of an ``aligned_auc`` matrix (k, A) already computed."""
  num_bits = int(aligned.shape[0])
  defined = ~np.all(np.isnan(aligned), axis=0)
  aligned = aligned[:, defined]
  if aligned.size == 0:
    return {'mean_best_auc': None, 'attributes_covered': None, 'num_bits': num_bits,
            'num_attribute_values': 0}
  return {'mean_best_auc': float(np.mean(aligned.max(axis=1))),
          'attributes_covered': float(np.mean(aligned.max(axis=0) >= COVERED_AUC)),
          'num_bits': num_bits, 'num_attribute_values': int(defined.sum())}


def indicators_from_attributes(attributes: np.ndarray, names: list,
                               values: list = None) -> tuple[np.ndarray, list[str]]:
  """Binary indicators and their names: categorical attributes (values[i] lists the
  names of attribute i's values) become one indicator per value; without values the
  attributes are binary annotations already."""
  attributes = np.asarray(attributes)
  if not values:
    return attributes > 0, list(names)
  columns, labels = [], []
  for i, (name, options) in enumerate(zip(names, values)):
    for v, option in enumerate(options):
      columns.append(attributes[:, i] == v)
      labels.append(f'{name}={option}')
  return np.stack(columns, axis=1), labels


def strongest_part(W: np.ndarray, num_parts: int, bit: int) -> int:
  """The attention part whose block of W carries most weight for bit (v = [x_1 … x_M, g])."""
  blocks = np.asarray(W)[bit].reshape(num_parts + 1, -1)[:num_parts]
  return int(np.argmax(np.linalg.norm(blocks, axis=1)))
