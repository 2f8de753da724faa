"""The label-grouped form (the default, docs/method.md §8) and the explicit form (the
reference's S_batch and S) give the same whole run: configs/tiny.py through its command line,
in float64, two outer iterations of 5 steps (both phases, two DCC sweeps, the evaluation
and results.json).

float64 because the forms add the same terms in other orders: in float32 that difference
(~1e-7) is amplified by the training dynamics past any useful tolerance within an outer
iteration; in float64 it stays below 1.2e-10 (measured over the 450 steps of
configs/tiny.py's 10 outer iterations, whose B and mAPs then came out identical in both forms).
"""

import json
import subprocess
import sys

import numpy as np

from run_helpers import REPO, final_state, one_device_env

# Per-iteration means of the loss terms. Each step's reductions have at most 32·960 terms
# (the explicit hash term), a relative rounding bound of ~3e4 · 1.1e-16 ≈ 3e-12 per step;
# the 10 steps (2 iterations of 5: 160 samples, batch 32) compound it (measured: ≤ 8e-15
# relative over these 10 steps, ≤ 1.2e-10 over all 450 steps of the config's 10 iterations).
# 1e-9 leaves a factor of 8 over the latter, a run 45 times as long as this one.
FLOAT64_RTOL = 1e-9


def _run(workdir, data_dir, form):
  env = dict(one_device_env(), JAX_ENABLE_X64='1')
  command = [sys.executable, '-m', 'aah_jax.main', '--config=configs/tiny.py',
             f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
             '--config.model.dtype=float64', '--config.train.num_iterations=2',
             '--config.train.num_samples=160', '--config.train.epochs=1',
             f'--config.train.similarity={form}']
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads((workdir / 'results.json').read_text())


def test_grouped_and_explicit_runs_give_the_same_results(tmp_path, tiny_data_dir):
  grouped = _run(tmp_path / 'grouped', tiny_data_dir, 'grouped')
  explicit = _run(tmp_path / 'explicit', tiny_data_dir, 'explicit')
  assert [h['iteration'] for h in grouped['history']] == [1, 2]
  for got, want in zip(grouped['history'], explicit['history']):
    for term in ('loss', 'hash', 'quant', 'dec', 'rec', 'img'):
      np.testing.assert_allclose(got[term], want[term], rtol=FLOAT64_RTOL, err_msg=term)
  # The DCC sweeps give the same bits: a bit could differ only where its sign argument is
  # within ~1e-12 of 0 (none in this run). The grouped run's B is padded to the devices'
  # rows (none here: one device).
  np.testing.assert_array_equal(final_state(tmp_path / 'grouped')['B'],
                                final_state(tmp_path / 'explicit')['B'])
  # Identical codes rank identically: the mAPs are the same numbers, not just close. The
  # encoded database and the queries' codes are signs of u, equal unless some |u| < ~1e-12.
  for name in ('map_learned_db', 'map_tie_aware_learned_db', 'map_encoded_db', 'map_random'):
    assert grouped[name] == explicit[name], name
