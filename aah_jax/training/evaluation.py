"""Encoding splits with a trained network, and the retrieval numbers of a run.

Queries are the test split, the database the training split; codes are sign(u) with
sign(0) = +1. "learned B" ranks the database by the codes the training learned for it
(ADSH's asymmetric protocol); "encoded database" by the network's codes of the database
images (what a deployed index holds).
"""

import dataclasses
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from aah_jax.common import mesh as mesh_lib
from aah_jax.data import input_pipeline
from aah_jax.models import A2NetPlusPlus
from aah_jax.retrieval import ranking
from aah_jax.retrieval.codes import hash_codes, packed_hash_codes


@dataclasses.dataclass(frozen=True)
class Splits:
  """The data a run is evaluated on: the query and database sources (random access, items
  with 'image') and their label rows ((n,) class ids or (n, C) multi-hot)."""

  query_source: Any
  db_source: Any
  query_labels: np.ndarray
  db_labels: np.ndarray


def make_encoder(model: A2NetPlusPlus, mesh, packed: bool = False):
  """Jitted eval-mode forward: (variables, images) → u, batch sharded over the mesh; with
  packed, sign(u) packed 8 bits to a byte (``packed_hash_codes``) instead."""
  def forward(variables, images):
    u = model.apply(variables, images, train=False)
    return packed_hash_codes(u) if packed else u
  return jax.jit(forward, in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)),
                 out_shardings=mesh_lib.batch_sharded(mesh))


def packed_rows_to_host(x, num_rows: int) -> ranking.PackedCodes:
  """The codes sign(x) of x's first num_rows rows on the host, packed where x lies (split by
  rows or replicated; ``packed_hash_codes``): k/8 bytes a row are gathered, not 4k."""
  words = jax.jit(packed_hash_codes, out_shardings=x.sharding)(x)
  return ranking.PackedCodes(mesh_lib.rows_to_host(words, num_rows), x.shape[1])


def encode_split(encoder, variables, source, *, global_batch: int, image_size: int,
                 num_threads: int, sharding, num_workers: int = 0,
                 dtype=np.float32) -> np.ndarray:
  """The encoder's rows (u as float32, or packed codes as they come) of a whole split, in
  order, every item exactly once."""
  outputs = []
  for local in input_pipeline.eval_batches(source, global_batch=global_batch,
                                           image_size=image_size, num_threads=num_threads,
                                           num_workers=num_workers, dtype=dtype,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
    batch = mesh_lib.global_batch_array({'image': local['image'], 'mask': local['mask']}, sharding)
    u = encoder(variables, batch['image'])
    u, mask = multihost_utils.process_allgather((u, batch['mask']), tiled=True)
    outputs.append(np.asarray(u)[np.asarray(mask)])
  out = np.concatenate(outputs)
  return out if out.dtype == np.uint8 else out.astype(np.float32)


RANDOM_CODE_ROWS = 1 << 16  # database rows drawn (as int64: 8k bytes a row) at a time


def random_codes(seed: int, num_queries: int, num_database: int,
                 bits: int) -> tuple[np.ndarray, ranking.PackedCodes]:
  """(±1 query codes, packed database codes) of the chance baseline: the same for a seed
  wherever drawn (the training evaluation, aah-eval, the report). The database is drawn
  ``RANDOM_CODE_ROWS`` rows at a time from the one generator and packed as it goes (the
  same codes as one draw of every row: tested), so no N × k array is made."""
  rng = np.random.default_rng(seed)
  query = rng.choice([-1, 1], (num_queries, bits))
  words = [ranking.pack_codes(rng.choice([-1, 1], (min(RANDOM_CODE_ROWS, num_database - start),
                                                   bits))).words
           for start in range(0, num_database, RANDOM_CODE_ROWS)]
  return query, ranking.PackedCodes(
      np.concatenate(words) if words else np.zeros((0, -(-bits // 8)), np.uint8), bits)


def evaluate(query_u, db_codes, B, query_labels, db_labels, seed: int) -> dict:
  """mAP@all of the query codes against the learned B, the encoded database (u or codes in
  any form ``ranking`` takes, such as packed), and random codes (and, against B, the
  tie-aware mAP: the expected AP over orderings of equidistant items)."""
  query_codes = np.asarray(hash_codes(query_u))
  random_query, random_db = random_codes(seed, len(query_codes), len(B), query_codes.shape[1])
  return {
      'map_learned_db': ranking.mean_average_precision(query_codes, B, query_labels, db_labels),
      'map_tie_aware_learned_db': ranking.tie_aware_mean_average_precision(
          query_codes, B, query_labels, db_labels),
      'map_encoded_db': ranking.mean_average_precision(query_codes, db_codes, query_labels,
                                                       db_labels),
      'map_random': ranking.mean_average_precision(random_query, random_db, query_labels,
                                                   db_labels),
  }


def detailed_metrics(query_codes, db_codes, query_labels, db_labels, *, topk: int,
                     ks) -> dict:
  """mAP@all, mAP@topk, tie-aware mAP, precision/recall@k, the PR curve over radii and
  precision within radius 2, as JSON-ready values."""
  ks = [k for k in ks if k <= len(db_codes)]
  precision_k, recall_k = ranking.precision_recall_at_k(query_codes, db_codes, query_labels,
                                                        db_labels, ks)
  precision_r, recall_r = ranking.precision_recall_by_radius(query_codes, db_codes,
                                                             query_labels, db_labels)
  return {
      'map': ranking.mean_average_precision(query_codes, db_codes, query_labels, db_labels),
      f'map@{topk}': ranking.mean_average_precision(query_codes, db_codes, query_labels,
                                                    db_labels, topk=topk),
      'map_tie_aware': ranking.tie_aware_mean_average_precision(query_codes, db_codes,
                                                                query_labels, db_labels),
      'precision_within_radius_2': float(precision_r[min(2, len(precision_r) - 1)]),
      'precision_at_k': {str(k): float(p) for k, p in zip(ks, precision_k)},
      'recall_at_k': {str(k): float(r) for k, r in zip(ks, recall_k)},
      'pr_curve_by_radius': {'radius': list(range(len(precision_r))),
                             'precision': precision_r.tolist(), 'recall': recall_r.tolist()},
  }


def make_attention_encoder(model: A2NetPlusPlus):
  """Jitted eval-mode forward for a few images: (variables, images) → (u, attention maps
  (n, h, w, M), or None without the attention branch)."""

  def forward(variables, images):
    u, state = model.apply(variables, images, train=False, mutable=['intermediates'])
    attention = state['intermediates'].get('attention_maps')
    return u, None if attention is None else attention[0]

  return jax.jit(forward)
