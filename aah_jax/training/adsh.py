"""Asymmetric deep supervised hashing (ADSH): similarity and the database-code update.

Symbols follow docs/method.md §1, §3.1 and §4: Ω the sampled training indices, U (|Ω| × k)
the latest network outputs of the sampled images, B (N × k) the database codes, S (|Ω| × N)
the similarity, γ the quantisation weight, k the code length.
"""

import jax
import jax.numpy as jnp

from aah_jax.models.precision import accumulation_dtype, precise_matmul
from aah_jax.retrieval.codes import hash_codes


def share_label(labels_a, labels_b):
  """(len(a), len(b)) bool: int class ids are equal, or multi-hot rows share a label."""
  labels_a, labels_b = jnp.asarray(labels_a), jnp.asarray(labels_b)
  if labels_a.ndim != labels_b.ndim or labels_a.ndim not in (1, 2):
    raise ValueError(f'labels must both be int ids (n,) or multi-hot (n, L); got shapes '
                     f'{labels_a.shape} and {labels_b.shape}')
  if labels_a.ndim == 1:
    return labels_a[:, None] == labels_b[None, :]
  return precise_matmul(labels_a.astype(jnp.float32), labels_b.astype(jnp.float32).T) > 0


def negative_weight(labels_a, labels_b, soft: bool = True):
  """r: the value −r that dissimilar pairs get. P/Q over the whole block when soft, else 1.

  P and Q count the similar and dissimilar pairs of the |a|×|b| block; with no
  dissimilar pair r is 0 (it is never used then).
  """
  if not soft:
    return jnp.float32(1.0)
  similar = share_label(labels_a, labels_b)
  positives = jnp.sum(similar, dtype=jnp.float32)
  negatives = similar.size - positives
  return jnp.where(negatives > 0, positives / jnp.maximum(negatives, 1.0), 0.0)


def similarity_rows(labels_a, labels_b, r):
  """S = +1 where the labels are shared, −r elsewhere."""
  return jnp.where(share_label(labels_a, labels_b), 1.0, -r).astype(jnp.float32)


def similarity(labels_a, labels_b, soft: bool = True):
  """S between two label sets: +1 if they share a label, else −1.

  Soft (the default): negatives become −P/Q, with P positives and Q negatives
  counted over the whole block, so positives and negatives weigh the same in
  total.
  """
  return similarity_rows(labels_a, labels_b, negative_weight(labels_a, labels_b, soft))


@jax.jit
def dcc_update(B, U, omega, S, gamma):
  """One sweep of discrete cyclic coordinate descent over the bits of B.

  Q = (k·S)ᵀU + γ·Ū, Ū = U placed at rows Ω and zeros elsewhere; then for each
  bit j in order, B[:, j] = sign(Q[:, j] − B[:, ≠j] (U[:, ≠j]ᵀ U[:, j])), using
  the bits already updated in this sweep. sign(0) = +1.

  Args:
    B: (N, k) current database codes (real-valued before the first sweep).
    U: (|Ω|, k) network outputs of the sampled images.
    omega: (|Ω|,) their database indices.
    S: (|Ω|, N) similarity of the sampled images to the database.
    gamma: γ.

  Returns:
    (N, k) codes in {−1, +1}, float32 (float64 when U is). Rows are independent given
    U, so B, S's columns and the result may be sharded over the database axis.
  """
  dtype = accumulation_dtype(U.dtype)
  B = B.astype(dtype)
  U = U.astype(dtype)
  k = U.shape[1]
  u_bar = jnp.zeros_like(B).at[omega].set(U)
  return dcc_sweep(B, k * precise_matmul(S.astype(dtype).T, U) + gamma * u_bar, U)


def dcc_sweep(B, Q, U, gram=None):
  """For each bit j in order: B[:, j] = sign(Q[:, j] − B[:, ≠j] (U[:, ≠j]ᵀ U[:, j])), with
  the bits already updated in this sweep; B, Q and U in one dtype. Q: the (N, k) matrix, or
  a function j → Q[:, j] (N,) that builds one column at a time (no N × k Q held). gram: UᵀU
  when the caller has it (a sweep done a block of rows at a time)."""
  if gram is None:
    gram = precise_matmul(U.T, U)  # G[l, j] = U[:, l]ᵀ U[:, j]
  column = Q if callable(Q) else (lambda j: Q[:, j])

  def sweep_bit(j, B):
    coupling = gram[:, j].at[j].set(0.0)  # leaves bit j out of B[:, ≠j] G[≠j, j]
    return B.at[:, j].set(hash_codes(column(j) - precise_matmul(B, coupling)).astype(B.dtype))

  return jax.lax.fori_loop(0, U.shape[1], sweep_bit, B)
