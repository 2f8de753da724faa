"""What the tools share: a run restored from its workdir, with the saved config.

Every tool takes ``--workdir`` (a training run's directory), ``--step`` (default: the
latest checkpoint) and ``--config.FIELD=VALUE`` overrides applied to the config saved
with the checkpoint (e.g. ``--config.data.data_dir``, ``--config.eval.batch_size``).
"""

import dataclasses
import os
from typing import Optional

from absl import app, flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from aah_jax import run as run_lib
from aah_jax.retrieval import ranking
from aah_jax.training import checkpoint, defaults


def define_run_flags():
  flags.DEFINE_string('workdir', None, 'A training run\'s directory (with checkpoints/).')
  flags.DEFINE_integer('step', None, 'Checkpoint step to use (default: the latest).',
                       lower_bound=0)
  config_flags.DEFINE_config_dict(
      'config', defaults.get_config(),
      'Overrides of the config saved with the checkpoint, as --config.FIELD=VALUE.')
  flags.mark_flag_as_required('workdir')


def check_writable_folder(path: str, flag: str):
  """A tool that writes into an existing folder checks it first (UsageError naming flag)."""
  if not os.path.isdir(path):
    raise app.UsageError(f'{flag}={path}: no such folder')
  if not os.access(path, os.W_OK | os.X_OK):
    raise app.UsageError(f'{flag}={path}: the folder is not writable (its outputs go there)')


def check_output_file(path: str, flag: str):
  """An output file's path, checked before any compute (UsageError naming flag)."""
  if os.path.isdir(path):
    raise app.UsageError(f'{flag}={path} is a folder: give a file path')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise app.UsageError(f'{flag}={path}: the folder {folder} does not exist')
  if not os.access(folder, os.W_OK | os.X_OK):
    raise app.UsageError(f'{flag}={path}: the folder {folder} is not writable')


@dataclasses.dataclass
class RestoredRun:
  """A saved run made usable: its Run (network, data of the possibly overridden config),
  the network's variables, its learned database codes B (packed) and the checkpoint's
  progress."""

  run: run_lib.Run
  variables: dict
  B: ranking.PackedCodes
  step: int
  progress: dict

  def same_database(self) -> bool:
    """Whether the config's database is the one B was learned for (B is then comparable
    with its labels; otherwise only encoded codes are)."""
    config, saved = self.run.config, self.progress['config']
    return (config.dataset == saved['dataset']
            and config.data.builder_config == saved['data']['builder_config']
            and self.run.num_database == self.progress['num_database'])


def _set(config: ml_collections.ConfigDict, dotted: str, value):
  *parents, leaf = dotted.split('.')
  for name in parents:
    if name not in config:
      config[name] = ml_collections.ConfigDict()
    config = config[name]
  with config.ignore_type():
    config[leaf] = value


def saved_config(workdir: str, step: Optional[int] = None,
                 overrides: Optional[dict] = None) -> tuple[ml_collections.ConfigDict, int, dict]:
  """(the checkpoint's config with overrides applied, its step, its progress)."""
  ckpts = checkpoint.RunCheckpoints(workdir, read_only=True)
  try:  # without --step: the newest step that reads (damaged newer ones are logged)
    step, progress = ckpts.newest_intact(ckpts.restore_progress, step)
  finally:
    ckpts.close()
  return _config_of(progress, overrides), step, progress


def _config_of(progress: dict, overrides: Optional[dict]) -> ml_collections.ConfigDict:
  # Fields added to aah_jax after the run was saved take the values that reproduce the run
  # (checkpoint.ADDED_FIELDS), or else their defaults.
  config = defaults.get_config()
  for dotted, value in checkpoint.saved_fields(progress['config']).items():
    _set(config, dotted, tuple(value) if isinstance(value, list) else value)
  for dotted, value in (overrides or {}).items():
    _set(config, dotted, value)
  return config


def read_packed_codes(ckpts: checkpoint.RunCheckpoints, step: int,
                      num_rows: int) -> ranking.PackedCodes:
  """The first num_rows rows of the saved B of step, packed (k/8 bytes a row) as they are
  read a block of rows at a time: the only N-sized array made is the packed one."""
  words, start = None, 0
  for rows in ckpts.saved_rows(step, 'B', num_rows):
    block = ranking.pack_codes(rows)
    if words is None:
      words = np.empty((num_rows, block.words.shape[1]), np.uint8)
    words[start:start + len(rows)] = block.words
    start += len(rows)
  return ranking.PackedCodes(words, block.bits)


def restore_run(workdir: str, step: Optional[int] = None,
                overrides: Optional[dict] = None) -> RestoredRun:
  """The run of workdir at step (default: the newest that reads), its network and data set
  up again. B comes packed from ``read_packed_codes``: no process holds it as float32 (4k
  bytes a row) whole, nor U or the optimiser state, whatever N."""
  ckpts = checkpoint.RunCheckpoints(workdir, read_only=True)

  def read(s):
    progress = ckpts.restore_progress(s)  # the grouped form's B has padding rows past N
    return (progress, ckpts.restore_network(s),
            read_packed_codes(ckpts, s, progress['num_database']))

  try:
    step, (progress, variables, B) = ckpts.newest_intact(read, step)
  finally:
    ckpts.close()
  run = run_lib.prepare(_config_of(progress, overrides))
  return RestoredRun(run=run, variables=variables, B=B, step=step, progress=progress)


def overrides_from_flags() -> dict:
  return dict(config_flags.get_override_values(flags.FLAGS['config']))
