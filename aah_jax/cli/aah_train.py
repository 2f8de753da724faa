"""aah-train, the main job: `python -m aah_jax.main --config=configs/default.py --workdir=DIR`
(aah_jax/main.py runs this)."""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from aah_jax import run as run_lib
from aah_jax.common import compile_cache, distributed, preemption

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'ml_collections config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for the run\'s outputs (results.json, '
                    'checkpoints/, metrics.jsonl, tensorboard/); rerunning continues the run.')
flags.DEFINE_bool('distributed', os.environ.get('AAH_DISTRIBUTED') == '1',
                  'Join a multi-process run (jax.distributed.initialize); also AAH_DISTRIBUTED=1. '
                  'On TPU pods, SLURM and Open MPI the rest is detected.')
flags.DEFINE_string('coordinator_address', os.environ.get('AAH_COORDINATOR_ADDRESS'),
                    'host:port of process 0 (where it cannot be detected).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (where it cannot be detected).')
flags.DEFINE_integer('process_id', None, 'This process\'s id (where it cannot be detected).')
flags.DEFINE_string('compilation_cache_dir', None,
                    'Keep compiled programs here, so a resumed or repeated run skips compiling '
                    '(JAX\'s persistent cache). Unset: $JAX_COMPILATION_CACHE_DIR if set, else '
                    'WORKDIR/xla_cache; "none": no cache.')
flags.mark_flags_as_required(['config', 'workdir'])


def summary(results: dict) -> str:
  return (f'{results["dataset"]}, {results["bits"]} bits, {results["num_queries"]} queries vs '
          f'{results["num_database"]} database items: mAP@all {results["map_learned_db"]:.4f} '
          f'(learned B), {results["map_encoded_db"]:.4f} (encoded database), '
          f'{results["map_random"]:.4f} (random codes); {results["wall_time_seconds"]:.0f}s')


def main(argv):
  del argv
  if FLAGS.distributed:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  compile_cache.enable(compile_cache.folder(FLAGS.compilation_cache_dir, FLAGS.workdir))
  try:
    results = run_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted as stopped:
    logging.warning('%s', stopped)
    print(stopped, flush=True)
    return 0
  print(summary(results))


def run():
  app.run(main)


if __name__ == '__main__':
  run()
