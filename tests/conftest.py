"""Test set-up: 8 fake CPU devices, set before anything imports jax; one XLA compilation
cache for the session.

The cache (a fresh temporary folder, removed at the end) is shared by the xdist workers
and the subprocesses the tests start (they inherit the environment): the same tiny
network's step is compiled once instead of in every test and process. A cached
executable is the compiled program itself, so results are unchanged.
"""

import atexit
import os
import shutil
import sys
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # the controller; workers inherit it
  _cache = tempfile.mkdtemp(prefix='aah_jax_test_xla_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
