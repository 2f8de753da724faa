"""One writer per run folder: a second training, aah-eval or aah-explain on a folder another
process writes into is refused at once, naming the holder; the lock dies with its holder."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from aah_jax import run as run_lib
from aah_jax.common import workdir_lock
from configs import tiny

HOLD = """
import sys, time
from aah_jax.common import workdir_lock
with workdir_lock.hold(sys.argv[1], 'training'):
  print('held', flush=True)
  time.sleep(600)
"""


@pytest.fixture
def held(tmp_path):
  """A workdir whose lock another process holds (as a training run would); yields it."""
  workdir = tmp_path / 'run'
  holder = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    yield workdir, holder
  finally:
    holder.kill()
    holder.wait()


def test_a_second_writer_is_refused_naming_the_holder(held):
  workdir, holder = held
  with pytest.raises(workdir_lock.WorkdirBusy,
                     match=rf'in use by training \(pid {holder.pid} on {socket.gethostname()}'):
    with workdir_lock.hold(str(workdir), 'aah-eval'):
      pass


def test_the_lock_is_released_when_its_holder_dies(held):
  workdir, holder = held
  os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the OS drops the lock
  holder.wait()
  with workdir_lock.hold(str(workdir), 'training'):
    with pytest.raises(workdir_lock.WorkdirBusy, match=rf'pid {os.getpid()}\b'):
      with workdir_lock.hold(str(workdir), 'aah-eval'):  # held by this process now
        pass
  with workdir_lock.hold(str(workdir), 'training'):  # released at the end of the block
    pass


def test_training_on_a_held_folder_stops_before_any_compute(held, monkeypatch):
  workdir, _ = held

  def prepare(config):
    raise AssertionError('the run was prepared although its folder is held')

  monkeypatch.setattr(run_lib, 'prepare', prepare)
  with pytest.raises(workdir_lock.WorkdirBusy, match='one writer per run folder'):
    run_lib.train_and_evaluate(tiny.get_config(), str(workdir))
  assert os.listdir(workdir) == [workdir_lock.LOCK_FILE]  # nothing written


@pytest.mark.parametrize('tool', ['aah_eval', 'aah_explain'])
def test_the_tools_that_write_into_a_run_are_refused_too(held, tool):
  workdir, holder = held
  result = subprocess.run([sys.executable, '-m', f'aah_jax.cli.{tool}', f'--workdir={workdir}'],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert f'in use by training (pid {holder.pid}' in result.stderr


def test_a_missing_folder_is_left_to_the_tools_own_error(tmp_path):
  missing = tmp_path / 'nothing'
  with workdir_lock.hold(str(missing), 'aah-eval', create=False):
    pass
  assert not missing.exists()
