"""Where the main job keeps its compiled programs between runs (JAX's persistent
compilation cache), so that a resumed or repeated run loads them instead of compiling again.

Compiling the paper's ResNet-50 step takes minutes on a TPU host (README, "Before renting a
pod"); a preempted run that resumes, or a second seed of the same config, would pay it again.
The cache holds the compiled executables themselves, so results are unchanged. Only process 0
writes entries (JAX's rule); on a pod, a workdir every host sees (gs://…) lets all of them read.
"""

import os
from typing import Optional

from absl import logging
import jax

OFF = ('', 'none')


def folder(flag_value: Optional[str], workdir: str) -> Optional[str]:
  """The cache folder for a run: the flag's value; unset, $JAX_COMPILATION_CACHE_DIR if that
  is set, else WORKDIR/xla_cache; '' or 'none': no cache (None)."""
  if flag_value is not None:
    return None if flag_value.lower() in OFF else flag_value
  return os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(workdir, 'xla_cache')


def enable(path: Optional[str]):
  """Keeps compiled programs under path (None: leaves JAX's setting as it is). Call before
  the first compile."""
  if path is None:
    return
  jax.config.update('jax_compilation_cache_dir', path)
  logging.info('compiled programs are cached in %s', path)
