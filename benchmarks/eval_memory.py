"""Host memory of the run's evaluation as the database grows: the database's codes reaching
the host packed (k/8 bytes a row: ``Run.evaluate`` now) against the float codes gathered
whole (learned B and the encoded database as float32, the chance baseline drawn as one int64
array: the evaluation before), in the same run, on this host's CPU.

    .venv/bin/python benchmarks/eval_memory.py [--sizes=1000000,4000000] [--queries=50]

For each N and form, a fresh process builds the database's codes as the evaluation receives
them (k = 12, 200 classes) and runs ``evaluation.evaluate`` (mAP@all against the learned B,
tie-aware mAP, encoded database, random codes); it prints the process's peak resident memory
(VmHWM, reset after the kernels are compiled) above what it held before the codes were made, the seconds, and the ratio to the float form.
Both forms give the same numbers (checked here).
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from host_memory import reset_peak, status_mib

BITS, CLASSES = 12, 200


def _packed_codes(rng, n: int):
  """Random codes as the devices hand them over: made and packed 1 M rows at a time."""
  from aah_jax.retrieval import ranking
  return ranking.PackedCodes(np.concatenate(
      [np.packbits(rng.random((min(1 << 20, n - start), BITS)) < 0.5, axis=1)
       for start in range(0, n, 1 << 20)]), BITS)


def _child(n: int, queries: int, packed: bool) -> dict:
  from aah_jax.retrieval import ranking
  from aah_jax.training import evaluation
  rng = np.random.default_rng(0)
  query_u = rng.normal(size=(queries, BITS)).astype(np.float32)
  query_labels = rng.integers(0, CLASSES, queries)
  db_labels = rng.integers(0, CLASSES, n)
  tiny = _packed_codes(rng, 10)  # compiles the kernels (numba) before the measurement
  evaluation.evaluate(query_u, tiny, tiny, query_labels, db_labels[:10], seed=0)
  reset_peak()
  before = status_mib('VmRSS')
  start = time.perf_counter()
  if packed:  # what Run.evaluate hands over: bytes made where B and u lie, chunked random codes
    B, db_codes = _packed_codes(rng, n), _packed_codes(rng, n)
    maps = evaluation.evaluate(query_u, db_codes, B, query_labels, db_labels, seed=0)
  else:  # the float codes gathered whole, the random database drawn as one int64 array
    B = np.where(rng.random((n, BITS), np.float32) < 0.5, 1.0, -1.0).astype(np.float32)
    db_u = rng.normal(size=(n, BITS)).astype(np.float32)
    query_codes = np.where(query_u >= 0, 1, -1)
    random_rng = np.random.default_rng(0)
    random_query = random_rng.choice([-1, 1], (queries, BITS))
    random_db = random_rng.choice([-1, 1], (n, BITS))
    maps = {
        'map_learned_db': ranking.mean_average_precision(query_codes, B, query_labels, db_labels),
        'map_tie_aware_learned_db': ranking.tie_aware_mean_average_precision(
            query_codes, B, query_labels, db_labels),
        'map_encoded_db': ranking.mean_average_precision(query_codes, db_u, query_labels,
                                                         db_labels),
        'map_random': ranking.mean_average_precision(random_query, random_db, query_labels,
                                                     db_labels)}
  return {'peak_mib': status_mib('VmHWM') - before, 'seconds': time.perf_counter() - start,
          'map_random': maps['map_random']}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='1000000,4000000')
  parser.add_argument('--queries', type=int, default=50)
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    n, packed = args.child.split(',')
    print(json.dumps(_child(int(n), args.queries, packed == 'packed')))
    return
  print(f'{"N":>10} {"form":>7} {"peak MiB":>9} {"ratio":>6} {"seconds":>8}')
  for n in (int(s) for s in args.sizes.split(',')):
    runs = {}
    for form in ('float', 'packed'):
      out = subprocess.run([sys.executable, __file__, f'--child={n},{form}',
                            f'--queries={args.queries}'], check=True, capture_output=True,
                           text=True).stdout
      runs[form] = json.loads(out.strip().splitlines()[-1])
      ratio = runs[form]['peak_mib'] / runs['float']['peak_mib']
      print(f'{n:>10} {form:>7} {runs[form]["peak_mib"]:>9.0f} {ratio:>5.2f}× '
            f'{runs[form]["seconds"]:>8.1f}', flush=True)
    assert runs['float']['map_random'] == runs['packed']['map_random'], runs


if __name__ == '__main__':
  main()
