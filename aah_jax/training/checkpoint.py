"""Run checkpoints: the train state plus the run's progress, with orbax.

A checkpoint step directory (``WORKDIR/checkpoints/<step>``) holds two items:
``state``, the whole ``TrainState`` (parameters, BatchNorm statistics, optimiser state,
B, U, database labels, r), and ``progress``, JSON: the finished outer iterations'
records, the per-step metrics of the current one so far, and the config of the run.
Everything else a step needs (Ω, the epoch order, augmentation) derives from the seed
and the step count, so state + progress continue a run bit for bit.

orbax writes each step into a temporary directory and renames it when complete, so a
run killed mid-save leaves the previous checkpoints intact and no partial step behind.
Kept: the latest ``keep`` steps plus the one with the best ``map_learned_db``. Arrays are
saved in chunks of at most ``CHUNK_BYTES``, so the tools can read B a block of rows at a
time (``saved_rows``) without the rest of the state (``restore_network``).

A step that cannot be read (damaged on disk: random bytes, a truncated array file) raises
``DamagedCheckpoint`` naming the step and the file or item; ``newest_intact`` falls back to
the newest step that reads, saying so in the log. A training run then moves the damaged
step to ``WORKDIR/damaged_checkpoints/<step>`` (kept for inspection, out of the way of the
steps it saves next); the read-only tools leave it where it is.
"""

import json
import logging as py_logging
import os
from typing import Any, Callable, Iterator, Optional, TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies
import tensorstore as ts

CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'damaged_checkpoints'
T = TypeVar('T')
NETWORK_FIELDS = ('params', 'batch_stats')  # what restore_network reads of the state
ROW_BLOCK = 1 << 18  # rows saved_rows reads at a time (12 MiB of B at k = 12 as float32)
# Arrays are saved in chunks of at most this many bytes (else one chunk per device's shard),
# so that saved_rows decompresses a block's chunks, not B's whole shard for every block.
CHUNK_BYTES = 4 << 20


class DamagedCheckpoint(RuntimeError):
  """A checkpoint step on disk that cannot be read (the message names the step and file)."""

# Config fields that may change between a run and its resumption: they do not change
# what the run computes, only where it reads and writes and how often it reports.
RESUMABLE_CHANGES = ('checkpoint', 'eval', 'log', 'data.num_threads', 'data.num_workers',
                     'data.prefetch', 'data.data_dir', 'data.manual_dir')

# Config fields added after runs were saved, with the value that reproduces what those runs
# did (flat_config's form): a run saved before the field existed continues under it.
ADDED_FIELDS = {'loss.phase_boundaries': [0.5], 'loss.term_modules': [],
                'train.similarity': 'explicit',
                'train.max_group_fraction': 1.0,  # grouped runs before it never chunked
                'train.chunk_rows': 16384, 'model.codec_init': 'uniform'}


class _OrbaxInfoFilter(py_logging.Filter):
  """Drops orbax's INFO records (dozens per save); its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def quiet_orbax_info():
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
    handler.addFilter(_OrbaxInfoFilter())


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def flat_config(tree: Any, prefix: str = '') -> dict:
  """A config dict as {'dotted.field': value} (tuples as lists, as JSON keeps them; an
  empty dict is a value of its own)."""
  if isinstance(tree, dict) and tree:
    out = {}
    for key, value in tree.items():
      out.update(flat_config(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def saved_fields(saved_config: dict) -> dict:
  """A saved run's config as flat_config gives it, with the fields added since it was saved
  at the values that reproduce it (ADDED_FIELDS)."""
  return dict(ADDED_FIELDS, **flat_config(saved_config))


def incompatible_fields(saved_config: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields (dotted) where config differs from the saved one, outside RESUMABLE_CHANGES
  (a field added since the run was saved counts with the value ADDED_FIELDS gives it)."""
  saved = saved_fields(saved_config)
  now = flat_config(config.to_dict())
  allowed = lambda key: any(key == f or key.startswith(f + '.') for f in RESUMABLE_CHANGES)
  return sorted(key for key in set(saved) | set(now)
                if not allowed(key) and saved.get(key) != now.get(key))


# State fields whose rows are padded to a multiple of the devices (train.TrainState's
# grouped-form layout): restored onto another topology, their row count may change.
PADDED_FIELDS = ('B', 'db_labels')


def _shapes_by_name(tree) -> dict:
  """{'field.sub…': shape} of a state tree (a TrainState, or the dicts orbax saved)."""
  leaves = jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))
  name = lambda path: '.'.join(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k))))
                               for k in path)
  return {name(path): tuple(leaf.shape) for path, leaf in leaves}


def _shape_differences(saved: dict, target: dict) -> dict:
  """{name: True if more than the rows differ (or the field is missing)} of the fields whose
  saved shape is not the target's (both as _shapes_by_name gives them)."""
  out = {}
  for name in sorted(set(saved) | set(target)):
    a, b = saved.get(name), target.get(name)
    if a != b:
      out[name] = a is None or b is None or len(a) != len(b) or a[1:] != b[1:]
  return out


class RunCheckpoints:
  """The checkpoints of one workdir (save, find, restore)."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    quiet_orbax_info()
    preserve = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=lambda metrics: metrics['map_learned_db'], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    self._manager = ocp.CheckpointManager(
        checkpoint_dir(workdir),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=preserve, enable_async_checkpointing=async_save,
            read_only=read_only, save_interval_steps=0 if read_only else 1,
            create=not read_only, cleanup_tmp_directories=not read_only))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, progress: dict, map_learned_db: Optional[float] = None):
    """Starts writing step (in the background where async); a step already saved is kept."""
    if step in self._manager.all_steps():
      return
    metrics = None if map_learned_db is None else {'map_learned_db': float(map_learned_db)}
    chunked = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), state)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state, save_args=chunked),
        progress=ocp.args.JsonSave(progress)), metrics=metrics, force=True)

  def restore_state(self, abstract_state, step: Optional[int] = None):
    """The state of step (default: latest), shaped and sharded like abstract_state. The
    fields in PADDED_FIELDS may differ in rows (their padding to a multiple of the devices,
    saved on another topology): the rows past the saved ones read as 0, saved padding rows
    past the target's are dropped; any other difference is an error naming the field."""
    step = self._step(step)
    saved = self._read(step, 'state', lambda: _shapes_by_name(self._saved_metadata(step)))
    target = _shapes_by_name(abstract_state)
    differing = _shape_differences(saved, target)
    if any(name.split('.')[0] not in PADDED_FIELDS or more for name, more in differing.items()):
      shown = '; '.join(f'{name}: saved {saved.get(name)}, expected {target.get(name)}'
                        for name in differing)
      raise ValueError(f'checkpoint step {step} in {self._manager.directory} does not hold '
                       f'this run\'s state: {shown}')
    return self._read(step, 'state', lambda: self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state, strict=not differing)))['state'])

  def _saved_metadata(self, step: int):
    """The saved state's tree of array metadata (shape, dtype), read without the arrays."""
    with ocp.StandardCheckpointer() as reader:
      return reader.metadata(self._manager.directory / str(step) / 'state').item_metadata

  def restore_tree(self, step: Optional[int] = None) -> dict:
    """The saved state of step (default: latest) as a tree of dicts of arrays on this
    process's first device, whatever devices and processes saved it: for tools that read
    parts of it (params, B, …), e.g. on one machine after a pod run."""
    step = self._step(step)
    return self._read(step, 'state', lambda: self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_on_first_device(self._saved_metadata(step)))))['state'])

  def restore_network(self, step: Optional[int] = None) -> dict:
    """{'params', 'batch_stats'} of step (default: latest) on this process's first device,
    read without the rest of the state (B, U, the optimiser's moments): what the tools need
    of the network, whatever the size of the database."""
    step = self._step(step)

    def read():
      saved = self._saved_metadata(step)
      target = _on_first_device({name: saved[name] for name in NETWORK_FIELDS})
      with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(self._manager.directory / str(step) / 'state',
                              args=ocp.args.PyTreeRestore(
                                  item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(
                                      target)))

    return self._read(step, 'state', read)

  def saved_rows(self, step: int, name: str, num_rows: int,
                 block_rows: int = ROW_BLOCK) -> Iterator[np.ndarray]:
    """The first num_rows rows of the state's array `name` (such as B) at step, as NumPy
    arrays of at most block_rows rows, in order, read from the files block by block: no
    more than one block is in memory, whatever N (B of 100 M items at k = 12 is 4.8 GB as
    float32; a tool packs each block to k/8 bytes a row)."""
    step = self._step(step)
    folder = self._manager.directory / str(step) / 'state'
    array = self._read(step, f'state/{name}', lambda: _open_saved_array(folder, name))
    if num_rows > array.shape[0]:
      raise ValueError(f'{folder}: {name} has {array.shape[0]} rows, not the {num_rows} asked for')
    for start in range(0, num_rows, block_rows):
      stop = min(start + block_rows, num_rows)
      yield self._read(step, f'state/{name}', lambda a=start, b=stop: array[a:b].read().result())

  def restore_progress(self, step: Optional[int] = None) -> dict:
    step = self._step(step)
    return self._read(step, 'progress/metadata', lambda: self._manager.restore(
        step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))['progress'])

  def _read(self, step: int, item: str, read: Callable[[], T]) -> T:
    try:
      return read()
    except Exception as error:  # orbax, TensorStore and json each raise their own
      first = (str(error).strip().splitlines() or [''])[0]
      raise DamagedCheckpoint(
          f'checkpoint step {step} cannot be read: {self._manager.directory / str(step) / item}'
          f' ({type(error).__name__}: {first[:300]})') from error

  def newest_intact(self, read: Callable[[int], T], step: Optional[int] = None,
                    set_aside: bool = False) -> tuple[int, T]:
    """(s, read(s)) for the newest step s that read succeeds on, logging each damaged step
    passed over; with step given, that step only (its damage is an error). set_aside:
    move each damaged step to WORKDIR/damaged_checkpoints (a training run does; process 0
    moves, every process then sees the same steps)."""
    if step is not None:
      return step, read(self._step(step))
    damaged = []
    for candidate in sorted(self.all_steps(), reverse=True):
      try:
        result = read(candidate)
      except DamagedCheckpoint as error:
        logging.warning('%s; falling back to the previous step', error)
        damaged.append(candidate)
        continue
      if damaged and set_aside:
        self._set_aside(damaged)
      return candidate, result
    if damaged:
      raise DamagedCheckpoint(f'no checkpoint in {self._manager.directory} can be read: steps '
                              f'{damaged} are damaged (see the log for each)')
    raise FileNotFoundError(f'no checkpoint in {self._manager.directory}')

  def _set_aside(self, steps: list[int]):
    root = self._manager.directory
    target = root.parent / DAMAGED_DIR
    if jax.process_index() == 0:
      os.makedirs(target, exist_ok=True)
      for step in steps:
        name, n = str(step), 1
        while (target / name).exists():
          name, n = f'{step}.{n}', n + 1
        os.replace(root / str(step), target / name)
        logging.warning('moved the damaged checkpoint step %d to %s', step, target / name)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('aah_jax checkpoints set aside')
    self._manager.reload()

  def _step(self, step: Optional[int]) -> int:
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {self._manager.directory}')
    if step is None:
      return max(steps)
    if step not in steps:
      raise FileNotFoundError(f'no checkpoint of step {step} in {self._manager.directory}; '
                              f'saved steps: {sorted(steps)}')
    return step

  def wait(self):
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def _on_first_device(metadata_tree):
  """Restore targets for a tree of saved array metadata: its shapes and dtypes on this
  process's first device."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here),
                      metadata_tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))


def _open_saved_array(folder, name: str):
  """A saved top-level array of an orbax state folder as a TensorStore (read lazily, by
  slices), in the storage format its _METADATA records."""
  with open(folder / '_METADATA') as f:
    metadata = json.load(f)
  use_ocdbt = metadata.get('use_ocdbt', True)
  context = ocp.type_handlers.get_ts_context(use_ocdbt=use_ocdbt)
  info = ocp.type_handlers.ParamInfo(name=name, parent_dir=folder,
                                     use_zarr3=metadata.get('use_zarr3', False),
                                     ts_context=context)
  return ts.open(ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=use_ocdbt),
                 context=context, read=True).result()
