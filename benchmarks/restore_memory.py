"""Host memory of the tools' restore (aah-eval, aah-index, aah-search, aah-explain) as the
database grows: B read from the checkpoint a block of rows at a time and packed as it comes
(``cli.common.read_packed_codes`` + ``restore_network``: ``cli.common.restore_run`` now) against
the whole state restored onto one device and B packed from it (``restore_tree``: the tools
before), in the same run, on this host's CPU.

    .venv/bin/python benchmarks/restore_memory.py [--sizes=1000000,10000000] [--folder=/tmp]

For each N a grouped-layout checkpoint is written (B: N × 12 float32 ±1, its group ids, a
small network), then a fresh process per form restores it and prints its peak resident memory
(VmHWM, reset once the libraries are loaded) above what it held before, the seconds, and the
ratio to the whole-state form. Both forms give the same packed B (checked here).
"""

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from host_memory import reset_peak, status_mib

BITS = 12


def _write_checkpoint(workdir: str, n: int):
  import jax
  from aah_jax.training import checkpoint, train
  rng = np.random.default_rng(0)
  block = 1 << 20  # made a block at a time, so the parent holds B once
  B = np.empty((n, BITS), np.float32)
  for start in range(0, n, block):
    B[start:start + block] = rng.choice(np.float32([-1, 1]), (min(block, n - start), BITS))
  state = train.TrainState(
      step=np.int32(1), params={'w': rng.normal(size=(256, 256)).astype(np.float32)},
      batch_stats={'mean': np.zeros(256, np.float32)}, opt_state={'trace': np.zeros((256, 256),
                                                                                     np.float32)},
      B=B, U=np.zeros((2000, BITS), np.float32), db_labels=np.zeros(n, np.int32),
      negative_weight=np.float32(0.01))
  ckpts = checkpoint.RunCheckpoints(workdir, async_save=False)
  ckpts.save(1, jax.device_put(state), {'history': [], 'num_database': n})
  ckpts.close()


def _child(workdir: str, n: int, form: str) -> dict:
  from aah_jax.cli import common
  from aah_jax.retrieval import ranking
  from aah_jax.training import checkpoint
  ckpts = checkpoint.RunCheckpoints(workdir, read_only=True)
  reset_peak()
  before = status_mib('VmRSS')
  start = time.perf_counter()
  if form == 'rows':
    variables = ckpts.restore_network(1)
    words = common.read_packed_codes(ckpts, 1, n).words
  else:
    tree = ckpts.restore_tree(1)
    variables = {name: tree[name] for name in checkpoint.NETWORK_FIELDS}
    words = ranking.pack_codes(np.asarray(tree['B'])[:n]).words
  seconds = time.perf_counter() - start
  assert sorted(variables) == ['batch_stats', 'params']
  return {'peak_mib': status_mib('VmHWM') - before, 'seconds': seconds,
          'digest': hashlib.sha256(words.tobytes()).hexdigest()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='1000000,10000000')
  parser.add_argument('--folder', default=tempfile.gettempdir(),
                      help='where the checkpoints are written (and removed)')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    workdir, n, form = args.child.split(',')
    if form == 'write':
      _write_checkpoint(workdir, int(n))
    else:
      print(json.dumps(_child(workdir, int(n), form)))
    return
  print(f'{"N":>10} {"form":>12} {"peak MiB":>9} {"ratio":>6} {"seconds":>8}')
  for n in (int(s) for s in args.sizes.split(',')):
    workdir = tempfile.mkdtemp(prefix='restore_memory_', dir=args.folder)
    try:
      subprocess.run([sys.executable, __file__, f'--child={workdir},{n},write'], check=True,
                     capture_output=True)
      runs = {}
      for form, name in (('whole', 'whole state'), ('rows', 'B by rows')):
        out = subprocess.run([sys.executable, __file__, f'--child={workdir},{n},{form}'],
                             check=True, capture_output=True, text=True).stdout
        runs[form] = json.loads(out.strip().splitlines()[-1])
        ratio = runs[form]['peak_mib'] / runs['whole']['peak_mib']
        print(f'{n:>10} {name:>12} {runs[form]["peak_mib"]:>9.0f} {ratio:>5.2f}× '
              f'{runs[form]["seconds"]:>8.2f}', flush=True)
      assert runs['whole']['digest'] == runs['rows']['digest'], runs
    finally:
      shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  main()
