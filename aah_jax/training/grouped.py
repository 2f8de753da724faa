"""The asymmetric hash loss and the DCC sweep with the database grouped by label row: no
array of the database's size N beside B itself (docs/method.md §8).

S_ij depends on the database item j only through its label row, so the database is grouped
by distinct label row: g(j) ∈ {0..G−1} (``LabelGroups``), with counts c_g and group rows
L_g. For a row i (a batch item, an Ω item) with labels ℓ_i, h_ig = 1 where ℓ_i shares a
label with L_g (``membership``); S_ij = h_{i,g(j)} − r·(1 − h_{i,g(j)}). With B fixed, the
Gram matrix K = BᵀB (k × k) and the group sums Σ_g = Σ_{g(j)=g} B_j (G × k) carry every
product the hash loss takes of B (``DatabaseSummary``), and the DCC sweep needs SᵀU only
per group.

``config.train.similarity='grouped'`` trains with these: the step gets B's summary (and B_Ω
for the quantisation term), never B; B and the group ids live split over the devices by
rows (``TrainState``), and the DCC sweep runs on each device's rows. This is the default;
'explicit' builds S against a replicated B. tests/test_grouped.py checks the two against
each other.
"""

import dataclasses
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from aah_jax.models.precision import accumulation_dtype, precise_matmul
from aah_jax.training import adsh


@flax.struct.dataclass
class LabelGroups:
  """The database's distinct label rows: ``rows`` (G,) class ids or (G, L) multi-hot,
  ``group_of`` (N,) int32 the group of each database item, ``counts`` (G,) int32 its size.
  ``of`` gives NumPy arrays; a pytree, so ``jax.device_put`` puts it on the devices."""

  rows: Any
  group_of: Any
  counts: Any

  @classmethod
  def of(cls, labels) -> 'LabelGroups':
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
      raise ValueError(f'labels must be int ids (N,) or multi-hot (N, L); got {labels.shape}')
    rows, group_of, counts = np.unique(labels, axis=0, return_inverse=True, return_counts=True)
    return cls(rows=rows, group_of=group_of.reshape(-1).astype(np.int32),
               counts=counts.astype(np.int32))

  @property
  def num_groups(self) -> int:
    return len(self.counts)


def membership(labels, group_rows):
  """h (len(labels), G) float32: 1 where the row's labels meet the group's, else 0."""
  labels, group_rows = jnp.asarray(labels), jnp.asarray(group_rows)
  if labels.ndim != group_rows.ndim:
    raise ValueError(f'labels {labels.shape} and group rows {group_rows.shape}: both int ids '
                     f'or both multi-hot')
  if labels.ndim == 1:
    return (labels[:, None] == group_rows[None, :]).astype(jnp.float32)
  shared = precise_matmul(labels.astype(jnp.float32), group_rows.astype(jnp.float32).T)
  return (shared > 0).astype(jnp.float32)


def negative_weight(h, counts, soft: bool = True):
  """r of the block (rows of h) × database: P/Q with P = Σ_i Σ_g h_ig c_g the similar pairs
  and Q = rows·N − P; 0 when no pair is dissimilar; 1 when not soft."""
  if not soft:
    return jnp.float32(1.0)
  counts = jnp.asarray(counts, jnp.float32)
  positives = jnp.sum(precise_matmul(h, counts))
  negatives = h.shape[0] * jnp.sum(counts) - positives
  return jnp.where(negatives > 0, positives / jnp.maximum(negatives, 1.0), 0.0)


def omega_negative_weight(omega_labels, groups: LabelGroups, soft: bool = True):
  """r of Ω × database from Ω's labels and the database's label groups."""
  return negative_weight(membership(omega_labels, groups.rows), groups.counts, soft)


@flax.struct.dataclass
class DatabaseSummary:
  """What the step needs of B (fixed during an outer iteration): K = BᵀB (k × k), the
  group sums Σ (G × k), the group rows and counts c (G,), B_Ω = B[Ω] (|Ω| × k, the
  quantisation targets of the sampled images, by position) and N (static). A pytree:
  jitted functions take and return it; nothing in it grows with N."""

  gram: jax.Array
  group_sums: jax.Array
  group_rows: jax.Array
  counts: jax.Array
  omega_codes: jax.Array
  num_database: int = flax.struct.field(pytree_node=False)


def summarize(B, groups: LabelGroups, omega, *, num_database: int) -> DatabaseSummary:
  """K, Σ and B[Ω] of B (N × k, or padded with zero rows past N); the rows of B and of
  groups.group_of may be split over devices (K and Σ are sums over rows)."""
  dtype = accumulation_dtype(B.dtype)
  B = B.astype(dtype)
  sums = jax.ops.segment_sum(B, groups.group_of, num_segments=groups.counts.shape[0])
  return DatabaseSummary(gram=precise_matmul(B.T, B), group_sums=sums, group_rows=groups.rows,
                         counts=groups.counts.astype(dtype), omega_codes=B[omega],
                         num_database=num_database)


@dataclasses.dataclass(frozen=True)
class BatchSimilarity:
  """A batch's similarity to the database without S_batch: per batch item the two sums
  over the database the hash term needs, Σ_j S_ij² (n,) and Σ_j S_ij B_j (n × k); B's
  summary; and the batch's database codes B[ω] (n × k)."""

  s_squared: jax.Array
  s_b: jax.Array
  summary: DatabaseSummary
  codes: jax.Array

  @classmethod
  def of(cls, labels, positions, r, summary: DatabaseSummary) -> 'BatchSimilarity':
    """From the label groups (h of the batch against them); positions: the batch's rows of
    U (and of B_Ω)."""
    h = membership(labels, summary.group_rows)
    return cls(*database_sums(h, r, summary), summary=summary,
               codes=summary.omega_codes[positions])


def database_sums(h, r, summary: DatabaseSummary):
  """(Σ_j S_ij², Σ_j S_ij B_j) from the groups: Σ_g h_ig c_g + r²·(N − Σ_g h_ig c_g) and
  (1 + r)·Σ_g h_ig Σ_g − r·Σ_g Σ_g, in the summary's dtype (1 + r and r² exact)."""
  r = jnp.asarray(r, summary.gram.dtype)
  similar_count = precise_matmul(h, summary.counts)  # (n,) Σ_g h_ig c_g
  s_squared = similar_count + r * r * (summary.num_database - similar_count)
  s_b = (1 + r) * precise_matmul(h, summary.group_sums) - r * jnp.sum(summary.group_sums, axis=0)
  return s_squared, s_b


def hash_loss_of_sums(F, s_squared, s_b, gram, *, num_database: int, code_length: int):
  """hash = (12/k)/(n·N) · Σ_i [k²·Σ_j S_ij² − 2k·F_i·Σ_j S_ij B_j + F_iᵀ K F_i]."""
  n, k = F.shape[0], code_length
  F = F.astype(gram.dtype)
  per_item = k * k * s_squared - 2 * k * jnp.sum(F * s_b, axis=1) + jnp.sum(
      precise_matmul(F, gram) * F, axis=1)
  return jnp.sum(per_item) * (12.0 / k / (n * num_database))  # a Python float: n·N may pass 2³¹


def hash_loss(F, h, r, summary: DatabaseSummary, *, code_length: int):
  """``losses.hash_loss(F, B, S_batch)`` with S_batch = h[:, g] − r·(1 − h[:, g]), from the
  label groups."""
  return hash_loss_of_sums(F, *database_sums(h, r, summary), summary.gram,
                           num_database=summary.num_database, code_length=code_length)


def dcc_update(B, U, omega, h_omega, r, group_of, gamma, num_database: Optional[int] = None):
  """``adsh.dcc_update`` with (SᵀU)_j = P_{g(j)}, P = (1 + r)·h_Ωᵀ U − r·Σ_i U_i (G × k):
  Q = k·P[g] + γ·Ū, then the same bit-by-bit sweep, each column of Q built when its bit is
  swept. Rows are independent given U, so B and g may be split over devices by rows; rows
  from num_database on (padding) stay 0."""
  dtype = accumulation_dtype(U.dtype)
  B, U, h_omega, r = B.astype(dtype), U.astype(dtype), h_omega.astype(dtype), jnp.asarray(r, dtype)
  k = U.shape[1]
  per_group = (1 + r) * precise_matmul(h_omega.T, U) - r * jnp.sum(U, axis=0)

  def target(j):  # Q[:, j] = k·P[g, j] + γ·Ū[:, j], built per bit: no N × k Q or Ū
    u_bar = jnp.zeros(B.shape[0], dtype).at[omega].set(U[:, j])
    return k * per_group[group_of, j] + gamma * u_bar

  B = adsh.dcc_sweep(B, target, U)
  if num_database is None or num_database == B.shape[0]:
    return B
  return jnp.where((jnp.arange(B.shape[0]) < num_database)[:, None], B, 0)


def update_database_codes(B, U, omega, omega_labels, groups: LabelGroups, *, gamma: float,
                          soft: bool, num_database: Optional[int] = None):
  """B ← one DCC sweep (``train.update_database_codes`` in the grouped form); B and
  groups.group_of may carry padding rows from num_database on."""
  h_omega = membership(omega_labels, groups.rows)
  r = negative_weight(h_omega, groups.counts, soft)
  return dcc_update(B, U, omega, h_omega, r, groups.group_of, gamma, num_database)
