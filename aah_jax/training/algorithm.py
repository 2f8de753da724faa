"""The asymmetric training algorithm of A²-Net++, read top-down (docs/method.md §4).

One outer iteration t: draw Ω, compute r for Ω × database, train the network for
``train.epochs`` epochs of steps over Ω, then sweep the database codes B once
(``outer_iteration``). Checkpoints, logs, evaluation and preemption are not here:
``aah_jax.run`` calls ``outer_iteration`` once per iteration and passes ``hooks``, which
see every step (``StepHooks``). The position of a run is ``state.step`` alone: the
iteration is ``state.step // steps_per_iteration`` and a resumed iteration skips the steps
it has done.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional, Protocol

import jax
import ml_collections
import numpy as np

from aah_jax.common import mesh as mesh_lib
from aah_jax.common.mesh import to_host
from aah_jax.data import input_pipeline
from aah_jax.training import adsh, chunked, grouped, train


class NonFiniteLoss(FloatingPointError):
  """A train step produced a NaN or infinite loss; no checkpoint holds its state."""


@dataclasses.dataclass(frozen=True)
class Programs:
  """The compiled pieces of an outer iteration, each jitted over the mesh: the train step
  (state, batch, B's summary) → (state, metrics), the DCC sweep of B and r. They read the
  database's labels as ``database_labels`` gives them: state.db_labels (the explicit and
  chunked forms), or in the label-grouped form (``config.train.similarity='grouped'``,
  docs/method.md §8) its ``grouped.LabelGroups``: the group rows and counts here (built
  once), the group ids in the state."""

  train_step: Callable
  update_codes: Callable
  negative_weight: Callable
  summarize: Callable  # (B, database labels, Ω) → B's summary for the step, or None
  omega_labels: Callable  # (database labels, Ω) → Ω's labels, replicated
  column_sums: Callable  # B → Σ_j B_j (k,), for the bit balance
  batch_sharding: Any
  steps_per_iteration: int  # the schedule's, which also places a run (state.step)
  num_database: int
  groups: Optional[grouped.LabelGroups] = None

  @classmethod
  def compile(cls, config: ml_collections.ConfigDict, mesh, model, tx, schedule,
              db_labels, groups: Optional[grouped.LabelGroups] = None,
              form: Optional[str] = None) -> 'Programs':
    """db_labels: the database's labels (host or device); groups: their label groups
    (host), for the grouped form (built from db_labels if not given); form: 'explicit',
    'grouped' or 'chunked' (``Run.similarity_form``; default config.train.similarity)."""
    soft, num_database = config.loss.soft_similarity, len(db_labels)
    form = form or config.train.similarity
    replicated = mesh_lib.replicated(mesh)
    sizes = dict(mesh=mesh, num_database=num_database, chunk_rows=config.train.chunk_rows)
    step = train.compile_train_step(
        mesh, form != 'explicit', model=model, tx=tx, schedule=schedule,
        weights=train.loss_weights(config), gamma=config.loss.gamma,
        row_sums=functools.partial(chunked.row_sums, **sizes) if form == 'chunked' else None)
    programs = dict(
        update_codes=train.make_database_update(
            mesh, num_database, config.loss.gamma, soft, form != 'explicit',
            chunk_rows=config.train.chunk_rows if form == 'chunked' else None),
        column_sums=jax.jit(lambda B: B.sum(axis=0), out_shardings=replicated),
        batch_sharding=mesh_lib.batch_sharded(mesh),
        steps_per_iteration=schedule.steps_per_iteration, num_database=num_database)
    rows_of = jax.jit(lambda labels, omega: labels[omega], out_shardings=replicated)
    if form == 'explicit':
      return cls(train_step=lambda state, batch, summary: step(state, batch),
                 negative_weight=jax.jit(functools.partial(adsh.negative_weight, soft=soft),
                                         out_shardings=replicated),
                 summarize=lambda B, labels, omega: None, omega_labels=rows_of, **programs)
    if form == 'chunked':
      return cls(train_step=step,
                 negative_weight=jax.jit(functools.partial(chunked.negative_weight, soft=soft,
                                                           **sizes), out_shardings=replicated),
                 summarize=jax.jit(functools.partial(chunked.summarize,
                                                     num_database=num_database),
                                   out_shardings=replicated),
                 omega_labels=rows_of, **programs)
    groups = groups if groups is not None else grouped.LabelGroups.of(to_host(db_labels))
    return cls(
        train_step=step,
        negative_weight=jax.jit(functools.partial(grouped.omega_negative_weight, soft=soft),
                                out_shardings=replicated),
        summarize=jax.jit(functools.partial(grouped.summarize, num_database=num_database),
                          out_shardings=replicated),
        omega_labels=jax.jit(lambda groups, omega: groups.rows[groups.group_of[omega]],
                             out_shardings=replicated),
        groups=jax.device_put(groups.replace(group_of=None), replicated), **programs)

  def database_labels(self, state: train.TrainState):
    """The labels the programs read, from this state (each step donates the one before)."""
    if self.groups is None:
      return state.db_labels
    return self.groups.replace(group_of=state.db_labels)

  def bit_balance(self, B) -> float:
    """mean_b |mean_j B_jb| over the N database rows (padding rows are 0)."""
    return float(np.abs(to_host(self.column_sums(B)) / self.num_database).mean())


class StepHooks(Protocol):
  """What the loop around the algorithm does at each step (logging, saving, stopping)."""

  def step_read(self, step: int, iteration: int, metrics: dict):
    """A step's metrics as host floats (read one step late, so dispatch runs ahead)."""

  def after_step(self, step: int, state: train.TrainState, metrics: 'StepMetrics'):
    """After every step but an iteration's last (whose state the DCC sweep changes next);
    may save (``metrics.read_all()`` first) or stop by raising."""


class StepMetrics:
  """An iteration's per-step metrics on the host, each read one step after it is
  dispatched, checked to be finite, and handed to ``hooks.step_read``."""

  def __init__(self, iteration: int, done: list, hooks: StepHooks):
    self.iteration, self.done, self._hooks, self._pending = iteration, list(done), hooks, None

  def add(self, step: int, metrics: dict):
    self.read_all()
    self._pending = (step, metrics)

  def read_all(self) -> list[dict]:
    if self._pending is not None:
      step, metrics = self._pending
      self._pending = None
      host = {name: float(to_host(value)) for name, value in metrics.items()}
      bad = {name: value for name, value in host.items() if not np.isfinite(value)}
      if bad:
        terms = ', '.join(f'{name}={value}' for name, value in bad.items())
        raise NonFiniteLoss(f'non-finite loss at step {step} (outer iteration '
                            f'{self.iteration + 1}): {terms}; stopped without saving it, the '
                            'last checkpoint is intact')
      self.done.append(host)
      self._hooks.step_read(step, self.iteration + 1, host)
    return self.done


def sample_omega(seed: int, iteration: int, num_database: int, num_samples: int) -> np.ndarray:
  """Ω of an outer iteration: num_samples database indices, the same on every process."""
  return np.random.default_rng([seed, iteration]).permutation(num_database)[:num_samples]


def outer_iteration(state: train.TrainState, iteration: int, config: ml_collections.ConfigDict,
                    db_source, programs: Programs, hooks: StepHooks,
                    done_metrics: list) -> tuple[train.TrainState, dict]:
  """One outer iteration (docs/method.md §4) from wherever ``state.step`` is in it: (the
  state after the DCC sweep, the iteration's record: mean step metrics and bit balance).
  done_metrics: the metrics of the steps a resumed iteration has already taken."""
  tc = config.train
  omega = sample_omega(config.seed, iteration, programs.num_database, tc.num_samples)  # 1. Ω
  omega_labels = programs.omega_labels(programs.database_labels(state), omega)
  state = state.replace(  # 2. r for Ω × database
      negative_weight=programs.negative_weight(omega_labels, programs.database_labels(state)))
  metrics = StepMetrics(iteration, done_metrics, hooks)
  summary = programs.summarize(state.B, programs.database_labels(state), omega)  # explicit: None
  state = train_on_omega(state, iteration, omega, config, db_source, programs, hooks, metrics,
                         summary)  # 3. epochs of steps over Ω
  state = state.replace(  # 4. one DCC sweep of B
      B=programs.update_codes(state.B, state.U, omega, omega_labels,
                              programs.database_labels(state)))
  record = {'iteration': iteration + 1, **_mean(metrics.read_all())}
  record['phase'] = int(record['phase'])
  record['bit_balance'] = programs.bit_balance(state.B)
  return state, record


def train_on_omega(state: train.TrainState, iteration: int, omega: np.ndarray,
                   config: ml_collections.ConfigDict, db_source, programs: Programs,
                   hooks: StepHooks, metrics: StepMetrics, summary=None) -> train.TrainState:
  """The iteration's remaining steps: train.epochs epochs over Ω, each in a fresh order
  drawn from (seed, iteration, epoch); U keeps the latest u of every sampled image.
  summary: B's, for the grouped form's step (None in the explicit form)."""
  tc, data = config.train, config.data
  batches_per_epoch = tc.num_samples // tc.batch_size
  first = iteration * programs.steps_per_iteration
  last = first + programs.steps_per_iteration
  done = int(to_host(state.step)) - first  # steps a resumed iteration has taken
  for epoch in range(tc.epochs):
    start_batch = max(0, done - epoch * batches_per_epoch)
    if start_batch >= batches_per_epoch:
      continue
    seeds = np.random.SeedSequence([config.seed, iteration, epoch])
    order = np.random.default_rng(seeds).permutation(tc.num_samples)
    batches = input_pipeline.train_epoch(
        db_source, omega, order, global_batch=tc.batch_size, image_size=config.image_size,
        crop_scale=data.train_crop_scale, seed=int(seeds.generate_state(1)[0]),
        num_threads=data.num_threads, num_workers=data.num_workers,
        dtype=input_pipeline.IMAGE_DTYPES[data.image_dtype],
        process_index=jax.process_index(), process_count=jax.process_count(),
        start_batch=start_batch)
    on_device = mesh_lib.prefetch_to_device(batches, programs.batch_sharding, data.prefetch)
    for batch_index, batch in enumerate(on_device, start=start_batch):
      state, step_metrics = programs.train_step(state, batch, summary)
      step = first + epoch * batches_per_epoch + batch_index + 1
      metrics.add(step, step_metrics)
      if step < last:
        hooks.after_step(step, state, metrics)
  return state


def _mean(metrics: list[dict]) -> dict:
  return {name: float(np.mean(np.asarray([m[name] for m in metrics], np.float64)))
          for name in metrics[0]}
