"""Retrieval benchmarks: ours against the tools people use, measured in the same run.

    python benchmarks/ranking.py [--food101] [--baseline_queries=500]

- mAP@all (and the tie-aware mAP) against the per-query loops of the widely copied
  evaluation code (Hamming distances, argsort, cumulative precision, one query at a
  time), in NumPy (``calc_map``) and, if torch is installed, in PyTorch
  (``calc_map_k``). A loop's time is linear in the number of queries: it is measured on
  `--baseline_queries` queries (a fifth of them for PyTorch) and scaled to the full
  query set (said in the output).
- dcc_update against the reference formulation, which multiplies B[:, ≠j] by
  U[:, ≠j]ᵀ before U[:, j] (an N × |Ω| intermediate per bit).
- top-100 search over 1,000,000 48-bit codes against faiss IndexBinaryFlat, if
  faiss-cpu is installed (a benchmark-only dependency).
Prints the machine, versions and every ratio.
"""

import os
import platform
import sys
import time

from absl import app, flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aah_jax.retrieval import ranking
from aah_jax.training import adsh  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_bool('food101', False, 'Also run the Food-101 scale (25,250 × 75,750).')
flags.DEFINE_integer('baseline_queries', 500, 'Queries the per-query loop is timed on.')
flags.DEFINE_integer('bits', 48, 'Code length.')


def per_query_map(qB, rB, queryL, retrievalL):
  """The widely copied ``calc_map`` (DPSH/ADSH evaluation code), verbatim but for names:
  one-hot labels, ±1 codes, one query at a time, argsort of the Hamming distances."""
  num_query = queryL.shape[0]
  map_ = 0
  for it in range(num_query):
    gnd = (np.dot(queryL[it, :], retrievalL.transpose()) > 0).astype(np.float32)
    tsum = int(np.sum(gnd))
    if tsum == 0:
      continue
    hamm = 0.5 * (rB.shape[1] - np.dot(qB[it, :], rB.transpose()))
    ind = np.argsort(hamm)
    gnd = gnd[ind]
    count = np.linspace(1, tsum, tsum)
    tindex = np.asarray(np.where(gnd == 1)) + 1.0
    map_ = map_ + np.mean(count / tindex)
  return map_ / num_query


def per_query_map_torch(qB, rB, query_label, retrieval_label):
  """The widely copied PyTorch ``calc_map_k`` (DCMH/SSAH/ADSH-pytorch evaluation code),
  verbatim but for names, with k = all: torch.sort of the Hamming distances per query."""
  import torch  # pylint: disable=g-import-not-at-top
  num_query = query_label.shape[0]
  map_ = 0.
  k = retrieval_label.shape[0]
  for it in range(num_query):
    q_l = query_label[it].unsqueeze(0)
    gnd = (q_l.mm(retrieval_label.transpose(0, 1)) > 0).squeeze().type(torch.float32)
    tsum = torch.sum(gnd)
    if tsum == 0:
      continue
    hamm = 0.5 * (rB.shape[1] - qB[it, :].unsqueeze(0).mm(rB.transpose(0, 1)))
    _, ind = torch.sort(hamm)
    ind.squeeze_()
    gnd = gnd[ind]
    total = min(k, int(tsum))
    count = torch.arange(1, total + 1).type(torch.float32)
    tindex = torch.nonzero(gnd)[:total].squeeze().type(torch.float32) + 1.0
    map_ = map_ + torch.mean(count / tindex)
  return float(map_ / num_query)


def timed(fn, *args, **kwargs):
  start = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - start


def bench_map(name, num_queries, num_db, num_classes, bits, rng):
  query_labels = rng.integers(0, num_classes, num_queries)
  db_labels = rng.integers(0, num_classes, num_db)
  centres = rng.choice([-1.0, 1.0], (num_classes, bits))  # codes that carry their class
  flip = lambda labels: np.where(rng.random((len(labels), bits)) < 0.2, -1, 1)
  q = (centres[query_labels] * flip(query_labels)).astype(np.float32)
  db = (centres[db_labels] * flip(db_labels)).astype(np.float32)
  ranking.mean_average_precision(q[:2], db[:10], query_labels[:2], db_labels[:10])  # compile
  ranking.tie_aware_mean_average_precision(q[:2], db[:10], query_labels[:2], db_labels[:10])
  ours, t_ours = timed(ranking.mean_average_precision, q, db, query_labels, db_labels)
  tie, t_tie = timed(ranking.tie_aware_mean_average_precision, q, db, query_labels, db_labels)
  n = min(FLAGS.baseline_queries, num_queries)
  one_hot = np.eye(num_classes, dtype=np.float32)
  base, t_base = timed(per_query_map, q[:n], db, one_hot[query_labels[:n]], one_hot[db_labels])
  t_base_all = t_base * num_queries / n
  ours_subset = ranking.mean_average_precision(q[:n], db, query_labels[:n], db_labels)
  print(f'{name}: {num_queries} × {num_db}, {bits} bits')
  print(f'  per-query loop: {t_base:.2f}s on {n} queries → {t_base_all:.1f}s for all '
        f'(its mAP on them {base:.4f}, ours on them {ours_subset:.4f}; the loop breaks '
        f'ties arbitrarily)')
  print(f'  exact mAP@all:  {t_ours:.2f}s  ({ours:.4f})   speed-up {t_base_all / t_ours:.1f}×')
  print(f'  tie-aware mAP:  {t_tie:.2f}s  ({tie:.4f})   speed-up {t_base_all / t_tie:.1f}×')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('  (torch is not installed: the PyTorch loop is skipped)')
    return
  m = max(1, n // 5)  # the PyTorch loop is slower: timed on fewer queries
  tensors = [torch.from_numpy(x) for x in (q[:m], db, one_hot[query_labels[:m]],
                                           one_hot[db_labels])]
  base_torch, t_torch = timed(per_query_map_torch, *tensors)
  t_torch_all = t_torch * num_queries / m
  print(f'  PyTorch loop ({torch.get_num_threads()} threads): {t_torch:.2f}s on {m} queries → '
        f'{t_torch_all:.1f}s for all (its mAP on them {base_torch:.4f}); exact mAP '
        f'{t_torch_all / t_ours:.1f}×, tie-aware {t_torch_all / t_tie:.1f}× faster')


def reference_dcc(B, U, omega, S, gamma):
  """The reference code's sweep: B[:, ≠j] @ U[:, ≠j]ᵀ first, then @ U[:, j]."""
  B = B.copy()
  N, k = B.shape
  u_bar = np.zeros((N, k), np.float32)
  u_bar[omega] = U
  Q = k * S.T @ U + gamma * u_bar
  for j in range(k):
    rest = np.arange(k) != j
    B[:, j] = np.where(Q[:, j] - (B[:, rest] @ U[:, rest].T) @ U[:, j] >= 0, 1.0, -1.0)
  return B


def bench_dcc(bits, rng):
  N, n_omega = 75_750, 2_000
  labels = rng.integers(0, 101, N)
  omega = rng.choice(N, n_omega, replace=False)
  U = np.tanh(rng.normal(size=(n_omega, bits))).astype(np.float32)
  B = np.where(rng.normal(size=(N, bits)) >= 0, 1.0, -1.0).astype(np.float32)
  S = np.asarray(adsh.similarity(labels[omega], labels))
  jax.block_until_ready(adsh.dcc_update(B, U, omega, S, 200.0))  # compile
  ours, t_ours = timed(lambda: jax.block_until_ready(adsh.dcc_update(B, U, omega, S, 200.0)))
  ref, t_ref = timed(reference_dcc, B, U, omega, S, 200.0)
  same = np.mean(np.asarray(ours) == ref)
  print(f'dcc_update: N={N}, |Ω|={n_omega}, k={bits}: reference {t_ref:.2f}s, ours {t_ours:.3f}s, '
        f'speed-up {t_ref / t_ours:.1f}×, identical bits {same:.6f}')


def bench_search(bits, rng):
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('search: faiss-cpu is not installed; `pip install faiss-cpu` to compare')
    return
  db = rng.choice([-1.0, 1.0], (1_000_000, bits))
  q = rng.choice([-1.0, 1.0], (1_000, bits))
  packed_db, packed_q = ranking.pack_codes(db), ranking.pack_codes(q)
  index = faiss.IndexBinaryFlat(bits)
  index.add(packed_db.words)
  (fd, fi), t_faiss = timed(index.search, packed_q.words, 100)
  ranking.search(packed_q[:2], packed_db[:200], 100)  # compile
  (od, oi), t_ours = timed(ranking.search, packed_q, packed_db, 100)
  print(f'search: 1,000 queries, top-100 of 1,000,000 {bits}-bit codes: faiss {t_faiss:.2f}s, '
        f'ours {t_ours:.2f}s, throughput ratio {t_faiss / t_ours:.2f}×, '
        f'distances identical {np.array_equal(np.sort(fd, 1), od)}')


def main(argv):
  del argv
  print(f'{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, '
        f'numpy {np.__version__}, jax {jax.__version__} ({jax.devices()[0].platform})')
  rng = np.random.default_rng(0)
  bench_map('CUB-200-2011 scale', 5_794, 5_994, 200, FLAGS.bits, rng)
  if FLAGS.food101:
    bench_map('Food-101 scale', 25_250, 75_750, 101, FLAGS.bits, rng)
  bench_dcc(FLAGS.bits, rng)
  bench_search(FLAGS.bits, rng)


if __name__ == '__main__':
  app.run(main)
