"""Two processes × 4 CPU devices (gloo collectives over localhost) against one process × 8
devices: the same run, through the real entry point."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from aah_jax.training import checkpoint, run_log

REPO = pathlib.Path(__file__).resolve().parents[1]
# Two steps of 32 images (Ω = 64, one epoch), one DCC sweep, the evaluation.
FLAGS = ['--config.train.num_iterations=1', '--config.train.num_samples=64',
         '--config.train.batch_size=32', '--config.train.epochs=1', '--config.log.report=False',
         '--config.checkpoint.async_save=False', '--config.log.every_steps=0']


@pytest.fixture(scope='module')
def data_dir(tiny_data_dir):
  """The tiny set, built beforehand (not by the processes racing each other)."""
  return tiny_data_dir


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(workdir, data_dir, devices, *extra, x64=False):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', JAX_ENABLE_X64=str(int(x64)))
  command = [sys.executable, '-m', 'aah_jax.main', '--config=configs/tiny.py',
             f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *FLAGS, *extra]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(process):
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-4000:]
  return stdout


def _state(workdir):
  """The latest saved state, restored onto this process's devices (8 here, whatever saved it);
  64-bit JAX on, so that float64 arrays restore as float64."""
  import jax  # pylint: disable=g-import-not-at-top
  checkpoints = checkpoint.RunCheckpoints(str(workdir), read_only=True)
  try:
    with jax.enable_x64(True):
      return jax.device_get(checkpoints.restore_tree())
  finally:
    checkpoints.close()


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


# The comparison runs in float64 (JAX_ENABLE_X64=1, model.dtype='float64'): the two layouts
# sum in different orders (gloo's all-reduce across processes, XLA's within one), and in
# float64 that is far below the tolerance. Reductions here have at most 32·16·16 = 8,192
# terms (BatchNorm at 32 px), a worst-case relative error of 8,192 · 1.1e-16 ≈ 1e-12; 1e-9
# leaves a factor of 1,000 for what the second step and the DCC sweep amplify.
FLOAT64 = ['--config.model.dtype=float64']
FLOAT64_RTOL = 1e-9


@pytest.mark.equivalence
def test_two_processes_equal_one_process_with_as_many_devices(tmp_path, data_dir):
  port = _free_port()
  pair = [_start(tmp_path / 'two', data_dir, 4, '--distributed',
                 f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                 f'--process_id={i}', *FLOAT64, x64=True) for i in range(2)]
  single = _start(tmp_path / 'one', data_dir, 8, *FLOAT64, x64=True)
  outputs = [_finish(p) for p in pair]
  _finish(single)
  assert 'mAP@all' in outputs[0]

  one = json.loads((tmp_path / 'one' / 'results.json').read_text())
  two = json.loads((tmp_path / 'two' / 'results.json').read_text())
  assert one['num_devices'] == two['num_devices'] == 8
  for term in ('loss', 'hash', 'quant', 'dec', 'rec', 'img'):
    assert two['history'][0][term] == pytest.approx(one['history'][0][term],
                                                    rel=FLOAT64_RTOL), term
  # Equal codes give equal mAPs: B is equal (below), and a code of the encoded sets could
  # differ only where |u| is below the float64 error (~1e-12).
  for key in ('map_learned_db', 'map_encoded_db', 'map_random'):
    assert two[key] == one[key], key
  # Logs are written by process 0 alone: each step once.
  assert [r['step'] for r in run_log.read_metrics(tmp_path / 'two', 'step')] == [1, 2]

  state_one, state_two = _leaves(_state(tmp_path / 'one')), _leaves(_state(tmp_path / 'two'))
  assert state_one.keys() == state_two.keys()
  for key, value in state_one.items():
    if key.startswith("['params']"):
      assert value.dtype == np.float64, key
      assert np.abs(state_two[key] - value).max() <= FLOAT64_RTOL * np.abs(value).max(), key
  # A bit of the DCC sweep can differ only where its argument is within ~1e-12 of zero.
  np.testing.assert_array_equal(state_two["['B']"], state_one["['B']"])


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['sigterm', 'ctrl_c'])
def test_a_stop_signal_on_one_host_stops_both_at_the_same_step(tmp_path, data_dir, signum):
  """The preemption notice (or a Ctrl-C) reaches one process; JAX's preemption sync point
  makes both save the same step and exit 0."""
  port = _free_port()
  workdir = tmp_path / 'two'
  pair = [_start(workdir, data_dir, 4, '--distributed', f'--coordinator_address=127.0.0.1:{port}',
                 '--num_processes=2', f'--process_id={i}', '--config.train.num_iterations=10',
                 '--config.train.num_samples=480', '--config.train.epochs=3')
          for i in range(2)]
  deadline = time.time() + 300
  while max([r['step'] for r in run_log.read_metrics(workdir, 'step')], default=0) < 2:
    assert all(p.poll() is None for p in pair), [p.communicate()[1][-3000:] for p in pair]
    assert time.time() < deadline
    time.sleep(0.05)
  pair[1].send_signal(signum)
  outputs = [_finish(p) for p in pair]
  assert all('preempted: saved the checkpoint of step' in out for out in outputs)
  steps = {int(out.split('checkpoint of step ')[1].split()[0]) for out in outputs}
  assert len(steps) == 1
  step = steps.pop()
  assert step >= 2 and (workdir / 'checkpoints' / str(step)).is_dir()
  assert not (workdir / 'results.json').exists()
