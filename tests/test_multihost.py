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

from aah_jax import checkpoint, datasets, run_log

REPO = pathlib.Path(__file__).resolve().parents[1]
# Two steps of 32 images (Ω = 64, one epoch), one DCC sweep, the evaluation.
FLAGS = ['--config.train.num_iterations=1', '--config.train.num_samples=64',
         '--config.train.batch_size=32', '--config.train.epochs=1', '--config.log.report=False',
         '--config.checkpoint.async_save=False', '--config.log.every_steps=0']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(workdir, data_dir, devices, *extra):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  command = [sys.executable, '-m', 'aah_jax.main', '--config=configs/tiny.py',
             f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *FLAGS, *extra]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(process):
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-4000:]
  return stdout


def _state(workdir):
  """The latest saved state, restored onto this process's devices (8 here, whatever saved it)."""
  checkpoints = checkpoint.RunCheckpoints(str(workdir), read_only=True)
  try:
    return checkpoints.restore_tree()
  finally:
    checkpoints.close()


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_two_processes_equal_one_process_with_as_many_devices(tmp_path):
  data_dir = tmp_path / 'data'
  datasets.load_builder('synthetic_birds', 'tiny', str(data_dir))  # built once, beforehand
  port = _free_port()
  pair = [_start(tmp_path / 'two', data_dir, 4, '--distributed',
                 f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                 f'--process_id={i}') for i in range(2)]
  single = _start(tmp_path / 'one', data_dir, 8)
  outputs = [_finish(p) for p in pair]
  _finish(single)
  assert 'mAP@all' in outputs[0]

  one = json.loads((tmp_path / 'one' / 'results.json').read_text())
  two = json.loads((tmp_path / 'two' / 'results.json').read_text())
  assert one['num_devices'] == two['num_devices'] == 8
  for term in ('loss', 'hash', 'quant', 'dec', 'rec', 'img'):
    assert two['history'][0][term] == pytest.approx(one['history'][0][term], rel=1e-5), term
  for key in ('map_learned_db', 'map_encoded_db', 'map_random'):
    assert two[key] == pytest.approx(one[key], abs=0.01), key
  # Logs are written by process 0 alone: each step once.
  assert [r['step'] for r in run_log.read_metrics(tmp_path / 'two', 'step')] == [1, 2]

  state_one, state_two = _leaves(_state(tmp_path / 'one')), _leaves(_state(tmp_path / 'two'))
  assert state_one.keys() == state_two.keys()
  for key, value in state_one.items():
    if key.startswith("['params']"):
      np.testing.assert_allclose(state_two[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
  agree = np.mean(np.sign(state_two["['B']"]) == np.sign(state_one["['B']"]))
  assert agree >= 0.99, agree


def test_sigterm_on_one_host_stops_both_at_the_same_step(tmp_path):
  """The preemption notice reaches one process; JAX's preemption sync point makes both save
  the same step and exit 0."""
  data_dir = tmp_path / 'data'
  datasets.load_builder('synthetic_birds', 'tiny', str(data_dir))
  port = _free_port()
  workdir = tmp_path / 'two'
  pair = [_start(workdir, data_dir, 4, '--distributed', f'--coordinator_address=127.0.0.1:{port}',
                 '--num_processes=2', f'--process_id={i}', '--config.train.num_iterations=10',
                 '--config.train.num_samples=480', '--config.train.epochs=3')
          for i in range(2)]
  deadline = time.time() + 300
  while max([r['step'] for r in run_log.read_metrics(workdir, 'step')], default=0) < 30:
    assert all(p.poll() is None for p in pair) and time.time() < deadline
    time.sleep(0.05)
  pair[1].send_signal(signal.SIGTERM)
  outputs = [_finish(p) for p in pair]
  assert all('preempted: saved the checkpoint of step' in out for out in outputs)
  steps = {int(out.split('checkpoint of step ')[1].split()[0]) for out in outputs}
  assert len(steps) == 1
  step = steps.pop()
  assert step >= 30 and (workdir / 'checkpoints' / str(step)).is_dir()
  assert not (workdir / 'results.json').exists()
