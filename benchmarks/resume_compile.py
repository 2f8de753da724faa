"""The first outer iteration of a run that starts again (a resume after preemption, or a
second seed), with the workdir's compilation cache against the baseline of compiling again
(`--compilation_cache_dir=none`), in the same run.

    .venv/bin/python benchmarks/resume_compile.py [--config=configs/default.py] [--rounds=3]

Each round runs the main job for one outer iteration in a fresh workdir, as a fresh process,
and reads that iteration's seconds from its metrics.jsonl (compiling or loading the step and
the DCC update, the iteration's steps and sweep) and the process's wall time. The cached
rounds share one cache folder, filled by a run before the rounds start. Prints medians and
their ratios.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _one_run(config: str, cache: str, data_dir: str) -> tuple[float, float]:
  """(its first iteration's seconds, the process's wall seconds) of a fresh one-iteration run."""
  workdir = tempfile.mkdtemp(prefix='resume_compile_')
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  start = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'aah_jax.main', f'--config={config}',
                  f'--workdir={workdir}', f'--compilation_cache_dir={cache}',
                  f'--config.data.data_dir={data_dir}', '--config.train.num_iterations=1',
                  '--config.log.report=False'],
                 cwd=REPO, env=env, check=True, capture_output=True)
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    first = next(r for r in map(json.loads, f) if r['kind'] == 'iteration')
  return first['seconds'], wall


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  data_dir = tempfile.mkdtemp(prefix='resume_compile_data_')
  cache = tempfile.mkdtemp(prefix='resume_compile_cache_')
  _one_run(args.config, cache, data_dir)  # prepares the dataset and fills the cache
  results = {}
  for name, folder in (('compile again (baseline)', 'none'), ('workdir cache', cache)):
    runs = [_one_run(args.config, folder, data_dir) for _ in range(args.rounds)]
    results[name] = [statistics.median(r[i] for r in runs) for i in (0, 1)]
  (base_first, base_wall), (first_cached, wall) = results.values()
  for name, (first, total) in results.items():
    print(f'{name}: first iteration {first:.2f} s, whole run {total:.1f} s (median of '
          f'{args.rounds})')
  print(f'ratio cached / baseline: first iteration {first_cached / base_first:.3f}, '
        f'run {wall / base_wall:.3f}')


if __name__ == '__main__':
  main()
