"""Compiled Hamming kernels over packed codes (numba, parallel over queries).

Codes arrive as 64-bit words: queries (q, W) and the database word-major (W, N), so
that the distance loop over the database runs over contiguous memory and vectorises
(XOR + popcount). Labels arrive the same way, queries (q, L) and the database (L, N)
int64: class ids (L = 1) compared for equality (``multi_label=False``), or packed
multi-hot words where any shared bit makes two items relevant (``multi_label=True``).

No kernel materialises a (q, N) array except ``distances``: each query's pass keeps
one N-length distance buffer and per-distance counters, so memory stays O(N) per
thread whatever the query count. Ranking is by (distance, database index): the
position of an item in that order is the number of nearer items plus the number of
equidistant items before it in the database, which one pass in index order counts.
"""

from llvmlite import ir
import numba
from numba import types
from numba.extending import intrinsic
import numpy as np

_JIT = dict(nogil=True, cache=True)


@intrinsic
def _popcount(typingctx, x):  # pylint: disable=unused-argument
  """LLVM's ctpop on a uint64 (one instruction where the CPU has it; vectorisable)."""
  def codegen(context, builder, signature, args):  # pylint: disable=unused-argument
    fn = builder.module.declare_intrinsic('llvm.ctpop', [ir.IntType(64)])
    return builder.call(fn, args)
  return types.uint64(types.uint64), codegen


@numba.njit(**_JIT)
def _word_distances(query, db_words, out, num_words):
  """out[j] = Hamming distance over the first num_words words (out: uint32)."""
  out[:] = 0
  for w in range(num_words):
    q, row = query[w], db_words[w]
    for j in range(row.shape[0]):
      out[j] += np.uint32(_popcount(q ^ row[j]))


@numba.njit(**_JIT)
def _query_distances(query, db_words, out):
  """out[j] = Hamming distance between one query (W,) and database item j (out: uint32)."""
  _word_distances(query, db_words, out, db_words.shape[0])


@numba.njit(**_JIT)
def _query_keys(query, db_words, query_label, db_labels, multi_label, out):
  """out[j] = 2 · distance + (1 if database item j is relevant to the query, else 0)."""
  if multi_label:
    _query_distances(query, db_words, out)
    relevant = np.zeros(out.shape[0], np.uint32)
    for w in range(db_labels.shape[0]):
      mine, row = query_label[w], db_labels[w]
      for j in range(row.shape[0]):
        relevant[j] |= (mine & row[j]) != 0
    for j in range(out.shape[0]):
      out[j] = np.uint32(2) * out[j] + relevant[j]
    return
  # One class id each: the last word's pass also forms the key (one pass for ≤ 64 bits).
  last = db_words.shape[0] - 1
  _word_distances(query, db_words, out, last)
  q, row, mine, labels = query[last], db_words[last], query_label[0], db_labels[0]
  for j in range(row.shape[0]):
    out[j] = np.uint32(2) * (out[j] + np.uint32(_popcount(q ^ row[j]))) + np.uint32(labels[j] == mine)


_LANES = 4  # interleaved counter copies: consecutive equal keys do not wait on each other


@numba.njit(**_JIT)
def _count_keys(keys, num_keys):
  """(num_keys,) int64 histogram of keys (uint32 < num_keys)."""
  counts = np.zeros(_LANES * num_keys, np.int32)
  lane1, lane2, lane3 = np.uint32(num_keys), np.uint32(2 * num_keys), np.uint32(3 * num_keys)
  whole = keys.shape[0] // _LANES * _LANES
  for j in range(0, whole, _LANES):
    counts[keys[j]] += 1
    counts[lane1 + keys[j + 1]] += 1
    counts[lane2 + keys[j + 2]] += 1
    counts[lane3 + keys[j + 3]] += 1
  for j in range(whole, keys.shape[0]):
    counts[keys[j]] += 1
  return counts.reshape(_LANES, num_keys).sum(axis=0).astype(np.int64)


@numba.njit(parallel=True, **_JIT)
def distances(query_words, db_words):
  """(q, N) int32 Hamming distances."""
  out = np.empty((query_words.shape[0], db_words.shape[1]), np.uint32)
  for i in numba.prange(query_words.shape[0]):
    _query_distances(query_words[i], db_words, out[i])
  return out.view(np.int32)


@numba.njit(parallel=True, **_JIT)
def bucket_counts(query_words, db_words, query_labels, db_labels, multi_label, bits):
  """Per query and distance d ∈ [0, bits]: items n (q, bits + 1) and relevant items r."""
  num_queries, num_db = query_words.shape[0], db_words.shape[1]
  n = np.zeros((num_queries, bits + 1), np.int64)
  r = np.zeros((num_queries, bits + 1), np.int64)
  for i in numba.prange(num_queries):
    keys = np.empty(num_db, np.uint32)
    _query_keys(query_words[i], db_words, query_labels[i], db_labels, multi_label, keys)
    counts = _count_keys(keys, 2 * bits + 2)
    for d in range(bits + 1):
      n[i, d] = counts[2 * d] + counts[2 * d + 1]
      r[i, d] = counts[2 * d + 1]
  return n, r


@numba.njit(**_JIT)
def _seen(seen, num_keys, key):
  """Items with this key so far: the sum over the counter copies."""
  return (seen[key] + seen[num_keys + key] + seen[2 * num_keys + key]
          + seen[3 * num_keys + key])


@numba.njit(inline='always', **_JIT)
def _visit(seen, lane, num_keys, key, found, rel_distance, rel_place, rel_place_relevant):
  """Counts one item in its lane; a relevant item's places are recorded. → found."""
  seen[lane + key] += 1
  if key & 1:
    rel_distance[found] = key >> 1
    rel_place_relevant[found] = _seen(seen, num_keys, key)
    rel_place[found] = _seen(seen, num_keys, key - 1) + rel_place_relevant[found]
    found += 1
  return found


@numba.njit(parallel=True, **_JIT)
def average_precision(query_words, db_words, query_labels, db_labels, multi_label, bits, topk):
  """(q,) AP@topk of each query's (distance, index) ranking; 0 with no relevant item in it.

  One pass in database order gives each relevant item j its place among the items at
  its distance d (s_j) and among the relevant ones there (t_j); after the pass, its
  rank is (items nearer than d) + s_j and its place among relevant items is
  (relevant items nearer than d) + t_j.
  """
  num_queries, num_db = query_words.shape[0], db_words.shape[1]
  num_keys = 2 * bits + 2
  lane1, lane2, lane3 = np.uint32(num_keys), np.uint32(2 * num_keys), np.uint32(3 * num_keys)
  whole = num_db // _LANES * _LANES
  ap = np.zeros(num_queries, np.float64)
  for i in numba.prange(num_queries):
    keys = np.empty(num_db, np.uint32)
    _query_keys(query_words[i], db_words, query_labels[i], db_labels, multi_label, keys)
    seen = np.zeros(_LANES * num_keys, np.int32)  # counter copy j % 4, then key
    rel_distance = np.empty(num_db, np.int32)
    rel_place = np.empty(num_db, np.int64)
    rel_place_relevant = np.empty(num_db, np.int64)
    found = 0
    for j in range(0, whole, _LANES):
      found = _visit(seen, np.uint32(0), num_keys, keys[j], found, rel_distance, rel_place,
                     rel_place_relevant)
      found = _visit(seen, lane1, num_keys, keys[j + 1], found, rel_distance, rel_place,
                     rel_place_relevant)
      found = _visit(seen, lane2, num_keys, keys[j + 2], found, rel_distance, rel_place,
                     rel_place_relevant)
      found = _visit(seen, lane3, num_keys, keys[j + 3], found, rel_distance, rel_place,
                     rel_place_relevant)
    for j in range(whole, num_db):
      found = _visit(seen, np.uint32(0), num_keys, keys[j], found, rel_distance, rel_place,
                     rel_place_relevant)
    nearer = np.zeros(bits + 2, np.int64)
    nearer_relevant = np.zeros(bits + 2, np.int64)
    for d in range(bits + 1):
      relevant = _seen(seen, num_keys, 2 * d + 1)
      nearer[d + 1] = nearer[d] + _seen(seen, num_keys, 2 * d) + relevant
      nearer_relevant[d + 1] = nearer_relevant[d] + relevant
    total, hits = 0.0, 0
    for m in range(found):
      d = rel_distance[m]
      rank = nearer[d] + rel_place[m]
      if rank <= topk:
        total += (nearer_relevant[d] + rel_place_relevant[m]) / rank
        hits += 1
    ap[i] = total / hits if hits > 0 else 0.0
  return ap


@numba.njit(parallel=True, **_JIT)
def top_k(query_words, db_words, bits, k):
  """(distances, indices), each (q, k): the first k items by (distance, index).

  Counts the items per distance, places the cut at the distance t where the count
  reaches k, then writes each chosen item straight to its rank (nearer items by
  distance, then index; those at t in index order until k are placed).
  """
  num_queries, num_db = query_words.shape[0], db_words.shape[1]
  out_dist = np.empty((num_queries, k), np.int32)
  out_idx = np.empty((num_queries, k), np.int64)
  for i in numba.prange(num_queries):
    dist = np.empty(num_db, np.uint32)
    _query_distances(query_words[i], db_words, dist)
    count = _count_keys(dist, bits + 1)
    start = np.zeros(bits + 2, np.int64)
    for d in range(bits + 1):
      start[d + 1] = start[d] + count[d]
    cut = 0
    while start[cut + 1] < k:
      cut += 1
    for j in range(num_db):
      d = dist[j]
      if d <= cut and start[d] < k:
        out_dist[i, start[d]] = d
        out_idx[i, start[d]] = j
        start[d] += 1
  return out_dist, out_idx
