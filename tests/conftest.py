"""Test set-up: 8 fake CPU devices, set before anything imports jax; one XLA compilation
cache for the session.

The cache (a fresh temporary folder, removed at the end) is shared by the xdist workers
and the subprocesses the tests start (they inherit the environment): the same tiny
network's step is compiled once instead of in every test and process. A cached
executable is the compiled program itself, so results are unchanged.

`tiny_data_dir`: configs/tiny.py's dataset, built once for the session and shared by the
xdist workers, for the tests that run the tiny config (test_datasets builds its own copies:
it tests the build).
"""

import atexit
import fcntl
import os
import shutil
import sys
import tempfile

import pytest

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # the controller; workers inherit it
  _cache = tempfile.mkdtemp(prefix='aah_jax_test_xla_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """The data_dir holding the tiny synthetic set. The workers' base folders share a parent;
  the first worker to get there builds the set under a lock, the others wait and read it."""
  from aah_jax.data import datasets  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.getbasetemp()
  if 'PYTEST_XDIST_WORKER' in os.environ:
    root = root.parent
  path = root / 'tiny_data'
  with open(root / 'tiny_data.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    datasets.load_builder('synthetic_birds', 'tiny', str(path))
  return path
