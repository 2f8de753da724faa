"""The explicit similarity, built chunk by chunk on each device's database rows: the form for
a database with nearly as many distinct label rows as items (docs/method.md §8.1).

The label-grouped form (``grouped``) sums over G label groups, and keeps the G-row group
table on every device; when G is close to N (multi-label data whose label rows are nearly
all distinct) that table is as large as B. This form needs no table. B and the database's
labels lie split over the devices by rows (as in the grouped form: ``train.state_sharding``,
padded with zero rows), and each device walks its own rows ``chunk_rows`` at a time, building
the block of S for them from the labels (``adsh.similarity_rows``):

- ``row_sums``: the two sums over the database the hash term needs for each batch item,
  Σ_j S_ij² and Σ_j S_ij B_j (``grouped.hash_loss_of_sums`` takes them with K = BᵀB);
- ``negative_weight``: r = P/Q of Ω × database from the similar pairs counted per chunk;
- ``dcc_update``: the DCC sweep of each device's rows a chunk at a time, Q = k·SᵀU + γ·Ū
  built for the chunk's rows and all k bits swept for them before the next chunk.

Each sum is added over devices with one ``psum``. Memory per device: its rows of B and of
the labels, one n × chunk_rows (step) or |Ω| × chunk_rows (DCC) block of S, and the chunk's
Q in the DCC; nothing with N rows. Padding rows (index ≥ N) take no part.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from aah_jax.models.precision import accumulation_dtype, precise_matmul
from aah_jax.training import adsh, grouped


def _fold_rows(fold, init, num_local: int, chunk_rows: int, num_database: int):
  """fold(acc, start, size, valid) over this device's rows in chunks of ``size`` rows from
  ``start`` (the last chunk moved back to end at the last row; valid: (size,) bool, False
  for rows an earlier chunk had and for padding rows)."""
  size = min(chunk_rows, num_local)
  offset = jax.lax.axis_index('data') * num_local  # this device's first row

  def body(c, acc):
    start = jnp.minimum(c * size, num_local - size)
    local = start + jnp.arange(size)
    return fold(acc, start, size, (local >= c * size) & (offset + local < num_database))

  return jax.lax.fori_loop(0, -(-num_local // size), body, init)


def _per_device(tree):
  """Values made the same on every device, typed as differing per device: the sums a
  device's loop carries start from them."""
  return jax.tree.map(lambda x: jax.lax.pcast(x, ('data',), to='varying'), tree)


def _rows(x, start, size):
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)


def row_sums(labels, r, B, db_labels, *, mesh, num_database: int, chunk_rows: int):
  """(Σ_j S_ij² (n,), Σ_j S_ij B_j (n, k)) of each row i of labels against the N database
  rows, S_ij = 1 if i and j share a label else −r; B and db_labels split over 'data' by
  rows, padded past num_database."""
  dtype = accumulation_dtype(B.dtype)

  def local(labels, r, B, db_labels):
    def fold(acc, start, size, valid):
      S = adsh.similarity_rows(labels, _rows(db_labels, start, size), r).astype(dtype)
      S = jnp.where(valid[None, :], S, 0)
      S_B = precise_matmul(S, _rows(B, start, size).astype(dtype))
      return acc[0] + jnp.sum(S * S, axis=1), acc[1] + S_B

    init = _per_device((jnp.zeros(labels.shape[0], dtype),
                        jnp.zeros((labels.shape[0], B.shape[1]), dtype)))
    return jax.lax.psum(_fold_rows(fold, init, B.shape[0], chunk_rows, num_database), 'data')

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P('data'), P('data')),
                       out_specs=P())(labels, jnp.asarray(r, dtype), B, db_labels)


def negative_weight(omega_labels, db_labels, *, mesh, num_database: int, chunk_rows: int,
                    soft: bool = True):
  """r of Ω × database (``adsh.negative_weight``), the similar pairs counted per chunk."""
  if not soft:
    return jnp.float32(1.0)

  def local(omega_labels, db_labels):
    def fold(acc, start, size, valid):
      similar = adsh.share_label(omega_labels, _rows(db_labels, start, size)) & valid[None, :]
      return acc + jnp.sum(similar, dtype=jnp.float32)

    return jax.lax.psum(_fold_rows(fold, _per_device(jnp.float32(0)), db_labels.shape[0],
                                   chunk_rows, num_database), 'data')

  positives = jax.shard_map(local, mesh=mesh, in_specs=(P(), P('data')),
                            out_specs=P())(omega_labels, db_labels)
  negatives = jnp.float32(omega_labels.shape[0]) * num_database - positives
  return jnp.where(negatives > 0, positives / jnp.maximum(negatives, 1.0), 0.0)


def summarize(B, db_labels, omega, *, num_database: int) -> grouped.DatabaseSummary:
  """What the step needs of B in this form: K = BᵀB and B_Ω (no group table)."""
  del db_labels  # the step reads the labels itself, chunk by chunk (row_sums)
  B = B.astype(accumulation_dtype(B.dtype))
  return grouped.DatabaseSummary(gram=precise_matmul(B.T, B), group_sums=None, group_rows=None,
                                 counts=None, omega_codes=B[omega], num_database=num_database)


def dcc_update(B, U, omega, omega_labels, db_labels, *, gamma: float, soft: bool, mesh,
               num_database: int, chunk_rows: int):
  """B ← one DCC sweep (``train.update_database_codes``), each device sweeping its rows a
  chunk at a time: Q = k·SᵀU + γ·Ū for the chunk's rows, then every bit of those rows. The
  sweep is row-local given UᵀU, so this gives the bits of sweeping all rows bit by bit,
  with no Q for all of a device's rows. Padding rows stay 0."""
  dtype = accumulation_dtype(U.dtype)
  r = negative_weight(omega_labels, db_labels, mesh=mesh, num_database=num_database,
                      chunk_rows=chunk_rows, soft=soft).astype(dtype)

  def local(B, U, omega, omega_labels, db_labels, r):
    B, U = B.astype(dtype), U.astype(dtype)
    num_local, k = B.shape
    gram = precise_matmul(U.T, U)
    first = jax.lax.axis_index('data') * num_local  # this device's first row

    def fold(B, start, size, valid):
      S = adsh.similarity_rows(omega_labels, _rows(db_labels, start, size), r).astype(dtype)
      at = omega - (first + start)  # Ω's rows in this chunk; others dropped
      u_bar = jnp.zeros((size, k), dtype).at[jnp.where((at >= 0) & (at < size), at, size)].set(
          U, mode='drop')
      old = _rows(B, start, size)
      swept = adsh.dcc_sweep(old, k * precise_matmul(S.T, U) + gamma * u_bar, U, gram)
      padding = first + start + jnp.arange(size) >= num_database
      new = jnp.where(valid[:, None], swept, jnp.where(padding[:, None], 0, old))
      return jax.lax.dynamic_update_slice_in_dim(B, new, start, axis=0)

    return _fold_rows(fold, B, num_local, chunk_rows, num_database)

  return jax.shard_map(local, mesh=mesh, in_specs=(P('data'), P(), P(), P(), P('data'), P()),
                       out_specs=P('data'))(B, U, omega, omega_labels, db_labels, r)
