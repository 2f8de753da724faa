"""aah-eval: the retrieval numbers of a saved run.

    aah-eval --workdir=RUN [--step=S] [--topk=100] [--config.FIELD=VALUE ...]

Restores the checkpoint (default: the latest), encodes the query and database splits,
and writes RUN/eval.json: for the learned B (when the database is the one it was
learned for), the encoded database and random codes, mAP@all, mAP@topk, the tie-aware
mAP, precision@k and recall@k, precision within radius 2 and the precision-recall curve
over Hamming radii; and RUN/report/ (figures and index.html, as at the end of training).
The mAPs against B, the encoded database and random codes are computed exactly as the
training run computes them.
"""

import os

from absl import app, flags
import jax
import numpy as np

from aah_jax.analysis import report
from aah_jax.cli import common
from aah_jax.common import files, workdir_lock
from aah_jax.retrieval.codes import hash_codes
from aah_jax.training import evaluation

FLAGS = flags.FLAGS
common.define_run_flags()
flags.DEFINE_integer('topk', 100, 'k of mAP@k.', lower_bound=1)
flags.DEFINE_list('precision_ks', ['1', '5', '10', '50', '100', '500', '1000'],
                  'k values of precision@k and recall@k.')
flags.register_validator('precision_ks', lambda ks: all(k.isdigit() and int(k) > 0 for k in ks),
                         message='--precision_ks: positive integers, comma-separated')
EVAL_FILE = 'eval.json'


def evaluate_run(restored: common.RestoredRun, topk: int, ks, query_u, db_codes) -> dict:
  run = restored.run
  query_codes = np.asarray(hash_codes(query_u))
  config = run.config
  random_query, random_db = evaluation.random_codes(config.seed, len(query_codes),
                                                    run.num_database, int(config.bits))
  metrics = lambda q, db: evaluation.detailed_metrics(q, db, run.query_labels, run.db_labels,
                                                      topk=topk, ks=ks)
  report = {
      'step': restored.step,
      'dataset': config.dataset,
      'bits': int(config.bits),
      'num_queries': len(query_codes),
      'num_database': run.num_database,
      'encoded_db': metrics(query_codes, db_codes),
      'random': metrics(random_query, random_db),
  }
  if restored.same_database():
    report['learned_db'] = metrics(query_codes, restored.B)
  return report


def main(argv):
  del argv
  common.check_writable_folder(FLAGS.workdir, '--workdir')  # eval.json and report/ go there
  with workdir_lock.hold(FLAGS.workdir, 'aah-eval', create=False):
    _main()


def _main():
  restored = common.restore_run(FLAGS.workdir, FLAGS.step, common.overrides_from_flags())
  run = restored.run
  query_u = run.encode(restored.variables, run.query_source)
  db_codes = run.encode_packed(restored.variables, run.db_source)
  numbers = evaluate_run(restored, FLAGS.topk, [int(k) for k in FLAGS.precision_ks], query_u,
                         db_codes)
  curves = {name: numbers[key] for key, name in (('learned_db', 'learned B'),
                                                 ('encoded_db', 'encoded database'),
                                                 ('random', 'random codes')) if key in numbers}
  data = report.collect(run.splits, run.model, restored.variables, query_u, db_codes,
                        restored.B if restored.same_database() else None, FLAGS.workdir,
                        seed=run.config.seed, image_size=run.config.image_size, curves=curves,
                        title=f'{run.config.dataset}, {run.config.bits} bits: aah-eval of step '
                              f'{restored.step} of {os.path.abspath(FLAGS.workdir)}')
  if jax.process_index() == 0:
    files.write_json(os.path.join(FLAGS.workdir, EVAL_FILE), numbers)
    report.write(data, FLAGS.workdir)
    for name in ('learned_db', 'encoded_db', 'random'):
      if name in numbers:
        print(f'{name}: mAP@all {numbers[name]["map"]:.4f}, mAP@{FLAGS.topk} '
              f'{numbers[name][f"map@{FLAGS.topk}"]:.4f}, precision@10 '
              f'{numbers[name]["precision_at_k"].get("10", float("nan")):.4f}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
