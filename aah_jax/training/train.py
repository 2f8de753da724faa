"""Asymmetric training of A²-Net++ (docs/method.md §4).

Read top to bottom: state → schedule and optimiser → the train step → database
codes → checks and the initial state. The outer iteration that drives them is
``aah_jax.training.algorithm``; checkpoints, logs and evaluation around it are ``aah_jax.run``.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from aah_jax.common import mesh as mesh_lib, normalization
from aah_jax.models import A2NetPlusPlus, create_model, init_variables
from aah_jax.models.precision import accumulation_dtype
from aah_jax.training import adsh, chunked, config_checks, grouped, losses

# (inputs, phase, term → weight per phase) → (loss, terms by name): the step's objective.
LossFn = Callable[[losses.LossInputs, Any, dict], tuple[jax.Array, dict]]


# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
  """Everything the train step reads and writes.

  Attributes:
    step: optimiser steps taken.
    params, batch_stats, opt_state: the network and its optimiser.
    B: (N, k) database codes, learned state (real-valued N(0, 1) before the
      first DCC sweep, as in the reference).
    U: (|Ω|, k) latest network output u of every sampled image.
    db_labels: what the step and the DCC sweep read of the database's labels: in the
      explicit and chunked forms its labels, (N,) or (N, L); in the label-grouped form
      (config.train.similarity='grouped') the group id g(j) of each item (N,) int32.
    negative_weight: r, the −r of dissimilar pairs in S for the current Ω.

  Layout (``state_sharding``): replicated over the mesh, except in the grouped and chunked
  forms B and db_labels, which are split over 'data' by rows, padded with zero rows to a multiple of
  the devices (``init_state``'s padded_rows): per device N/devices rows, never N.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  B: jax.Array
  U: jax.Array
  db_labels: jax.Array
  negative_weight: jax.Array


def state_sharding(mesh, grouped_form: bool) -> TrainState:
  """The state's shardings, a prefix of its tree (for jit and for restoring)."""
  replicated = mesh_lib.replicated(mesh)
  rows = mesh_lib.batch_sharded(mesh) if grouped_form else replicated
  return TrainState(step=replicated, params=replicated, batch_stats=replicated,
                    opt_state=replicated, B=rows, U=replicated, db_labels=rows,
                    negative_weight=replicated)


def abstract_state(shapes: TrainState, mesh, grouped_form: bool) -> TrainState:
  """The state's shapes (``jax.eval_shape`` of ``init_state``) with the shardings of
  ``state_sharding``: what a restore or a compile-only plan takes."""
  return jax.tree.map(
      lambda sharding, tree: jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree),
      state_sharding(mesh, grouped_form), shapes)


# ----------------------------------------------------------------------------- schedule


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Outer iterations, phases and learning rate as functions of the step count."""

  num_iterations: int
  steps_per_iteration: int
  learning_rate: float
  lr_decay_fraction: float
  lr_decay_factor: float
  phase_boundaries: tuple[float, ...] = (0.5,)

  def iteration(self, step):
    return step // self.steps_per_iteration

  @property
  def num_phases(self) -> int:
    return len(self.phase_boundaries) + 1

  def phase(self, iteration):
    """1 + the number of phase boundaries (fractions of the outer iterations) reached:
    with (0.5,), 1 in the first half and 2 after (rec joins the loss)."""
    phase = jnp.int32(1)
    for boundary in self.phase_boundaries:
      phase = phase + (iteration >= boundary * self.num_iterations).astype(jnp.int32)
    return phase

  @property
  def lr_decay_iteration(self) -> int:
    return int(self.lr_decay_fraction * self.num_iterations)

  def learning_rate_at(self, step):
    """lr, ×lr_decay_factor from outer iteration ⌊fraction · T⌋ on: stepped per outer iteration."""
    decayed = self.iteration(step) >= self.lr_decay_iteration
    return self.learning_rate * jnp.where(decayed, self.lr_decay_factor, 1.0)


def scale_parameter_groups(multipliers: dict) -> optax.GradientTransformation:
  """Multiplies the updates of top-level parameter groups: per-group learning rates."""

  def init_fn(params):
    unknown = set(multipliers) - set(params)
    if unknown:
      raise ValueError(f'config.optim.lr_multipliers names {sorted(unknown)}, which are not '
                       f'parameter groups of the network: {sorted(params)}')
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return {name: jax.tree.map(lambda x, m=multipliers.get(name, 1.0): x * m, group)
            for name, group in updates.items()}, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(optim_config, schedule: Schedule) -> optax.GradientTransformation:
  """SGD with momentum and coupled L2 weight decay (PyTorch's SGD(weight_decay=…)),
  with optional per-group learning-rate multipliers."""
  return optax.chain(
      optax.add_decayed_weights(optim_config.weight_decay),
      optax.sgd(schedule.learning_rate_at, momentum=optim_config.momentum),
      scale_parameter_groups(dict(optim_config.lr_multipliers)))


def network_and_optimizer(config, num_devices: int):
  """(model, schedule, tx) of a config for a mesh of num_devices devices."""
  model = create_model(config.model)
  if config.train.per_device_batch_norm:
    model = model.clone(bn_groups=num_devices)
  tc = config.train
  schedule = Schedule(tc.num_iterations, tc.epochs * tc.num_samples // tc.batch_size,
                      config.optim.learning_rate, config.optim.lr_decay_fraction,
                      config.optim.lr_decay_factor, tuple(config.loss.phase_boundaries))
  return model, schedule, make_optimizer(config.optim, schedule)


def loss_weights(config) -> dict:
  """term → its weight per phase, from config.loss.weights; without the image path, the
  terms that need it are left out."""
  weights = {name: tuple(w) for name, w in config.loss.weights.items()}
  if not config.model.use_image_decoder:
    weights = {name: w for name, w in weights.items()
               if not (name in losses.TERMS and losses.TERMS[name].needs_image_path)}
  return weights


# ----------------------------------------------------------------------------- the step


def batch_objective(params, *, batch_stats, batch: dict, similarity: dict, phase,
                    model: A2NetPlusPlus, gamma: float, weights: dict,
                    loss_fn: LossFn = losses.weighted_total):
  """The loss the step differentiates: (loss, (terms, u, new batch_stats)).

  The network in train mode on batch['image'] (BatchNorm with batch statistics), then
  loss_fn on its outputs. similarity: the ``LossInputs`` fields of the database side
  ('B', 'S_batch' and, in the grouped and chunked forms, 'grouped').
  """
  output, mutated = model.apply({'params': params, 'batch_stats': batch_stats},
                                batch['image'], train=True, mutable=['batch_stats'])
  inputs = losses.LossInputs(
      output=output, omega=batch['index'], images=normalization.to_unit_range(batch['image']),
      gamma=gamma, code_length=model.bits, **similarity)
  loss, terms = loss_fn(inputs, phase, weights)
  return loss, (terms, output.u, mutated['batch_stats'])


def train_step(state: TrainState, batch: dict, summary=None, *, model: A2NetPlusPlus,
               tx: optax.GradientTransformation, schedule: Schedule, weights: dict,
               gamma: float, loss_fn: LossFn = losses.weighted_total,
               row_sums: Optional[Callable] = None):
  """One SGD step on a global batch: (state, batch) → (state, metrics).

  batch: 'image' (n, S, S, 3) normalised, 'label', 'index' (database index ω),
  'position' (row of U). summary: B's ``grouped.DatabaseSummary`` for the label-grouped
  hash and quantisation terms (docs/method.md §8; the step then reads neither state.B nor
  state.db_labels), or None for the explicit ones (S_batch from state.db_labels, B[ω]).
  row_sums: with summary, the chunked form (docs/method.md §8.1; ``chunked.row_sums`` with
  its mesh and sizes bound): the hash term's sums over the database come from state.B and
  state.db_labels, chunk by chunk on each device's rows, instead of the summary's groups.
  loss_fn(LossInputs, phase, weights) → (loss, terms) is the objective (default: the
  registered terms, weighted per phase); metrics holds its terms.
  """
  phase = schedule.phase(schedule.iteration(state.step))
  r = state.negative_weight
  if summary is None:
    similarity = {'B': state.B,
                  'S_batch': adsh.similarity_rows(batch['label'], state.db_labels, r)}
  elif row_sums is None:
    similarity = {'B': None, 'S_batch': None, 'grouped': grouped.BatchSimilarity.of(
        batch['label'], batch['position'], r, summary)}
  else:
    similarity = {'B': None, 'S_batch': None, 'grouped': grouped.BatchSimilarity(
        *row_sums(batch['label'], r, state.B, state.db_labels), summary=summary,
        codes=summary.omega_codes[batch['position']])}

  objective = functools.partial(batch_objective, batch_stats=state.batch_stats, batch=batch,
                                similarity=similarity, phase=phase, model=model, gamma=gamma,
                                weights=weights, loss_fn=loss_fn)
  (loss, (terms, u, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
      U=state.U.at[batch['position']].set(u))
  metrics = dict(terms, loss=loss, lr=schedule.learning_rate_at(state.step), phase=phase)
  return new_state, metrics


def compile_train_step(mesh, grouped_form: bool = False, **step_kwargs):
  """``train_step`` jitted over a 1-D 'data' mesh: batch sharded, the state laid out by
  ``state_sharding`` and donated; with grouped_form, (state, batch, B's summary) → …, the
  summary replicated."""
  replicated, state = mesh_lib.replicated(mesh), state_sharding(mesh, grouped_form)
  in_shardings = (state, mesh_lib.batch_sharded(mesh))
  return jax.jit(functools.partial(train_step, **step_kwargs),
                 in_shardings=in_shardings + ((replicated,) if grouped_form else ()),
                 out_shardings=(state, replicated), donate_argnums=0)


# ----------------------------------------------------------------------------- database codes


def update_database_codes(B, U, omega, omega_labels, db_labels, *, gamma: float, soft: bool):
  """B ← one DCC sweep, with S (|Ω| × N) built on device from the labels."""
  S = adsh.similarity(omega_labels, db_labels, soft)
  return adsh.dcc_update(B, U, omega, S, gamma)


def make_database_update(mesh, num_database: int, gamma: float, soft: bool,
                         grouped_form: bool = False, chunk_rows: Optional[int] = None):
  """The jitted DCC update (B, U, Ω, Ω's labels, the database's labels) → B. Explicit: B
  and labels sharded over database rows inside the sweep when they divide evenly, B out
  replicated. grouped_form: the database's labels are its ``grouped.LabelGroups`` (group
  ids split by rows like B, padding rows past num_database), B stays split by rows. B is
  donated: the new B takes the old one's memory (a device holds one B, not two; the array
  passed in is deleted, as the train step deletes the state it is given). chunk_rows
  (with grouped_form): the chunked form (``chunked.dcc_update``; the labels are the
  database's own, split by rows like B)."""
  if chunk_rows is not None:
    return jax.jit(functools.partial(chunked.dcc_update, gamma=gamma, soft=soft, mesh=mesh,
                                     num_database=num_database, chunk_rows=chunk_rows),
                   out_shardings=mesh_lib.batch_sharded(mesh), donate_argnums=0)
  if grouped_form:
    rows = mesh_lib.batch_sharded(mesh)
    return jax.jit(functools.partial(grouped.update_database_codes, gamma=gamma, soft=soft,
                                     num_database=num_database), out_shardings=rows,
                   donate_argnums=0)
  rows = mesh_lib.rows_sharded(mesh, num_database)

  def update(B, U, omega, omega_labels, db_labels):
    B = jax.lax.with_sharding_constraint(B, rows)
    db_labels = jax.lax.with_sharding_constraint(db_labels, rows)
    return update_database_codes(B, U, omega, omega_labels, db_labels, gamma=gamma, soft=soft)

  return jax.jit(update, out_shardings=mesh_lib.replicated(mesh), donate_argnums=0)


# ----------------------------------------------------------------------------- checks and initial state


def validate_config(config, num_devices: int):
  """Start-up checks that need no data, before any compute: every field's type and range
  (config_checks), then how they fit together and on num_devices."""
  config_checks.check(config)
  batch, samples = config.train.batch_size, config.train.num_samples
  if batch % num_devices:
    raise ValueError(f'config.train.batch_size={batch} does not divide over {num_devices} devices')
  if config.eval.batch_size % num_devices:
    raise ValueError(f'config.eval.batch_size={config.eval.batch_size} does not divide over '
                     f'{num_devices} devices')
  if samples % batch:
    raise ValueError(f'config.train.num_samples={samples} is not a multiple of '
                     f'config.train.batch_size={batch}')
  if config.model.bn_groups != 1 and config.train.per_device_batch_norm:
    raise ValueError('set either config.model.bn_groups or config.train.per_device_batch_norm')


def validate_num_samples(config, num_database: int):
  samples = config.train.num_samples
  if not 0 < samples <= num_database:
    raise ValueError(f'config.train.num_samples={samples} must be in [1, N={num_database}] '
                     f'(the database size of {config.dataset!r})')


def init_state(rng, model: A2NetPlusPlus, tx, *, image_size: int, db_labels, num_samples: int,
               padded_rows: Optional[int] = None):
  """Fresh network, optimiser, B ~ N(0, 1) real-valued, U = 0 (float32; float64 under the
  float64 reference mode). db_labels: what the state keeps of the labels (``TrainState``);
  padded_rows: B and db_labels with zero rows appended up to that many (the grouped form's
  layout), B's first N rows the same as without."""
  params_rng, codes_rng = jax.random.split(rng)
  variables = init_variables(model, params_rng, image_size)
  dtype = accumulation_dtype(model.dtype)
  num_database = db_labels.shape[0]
  B = jax.random.normal(codes_rng, (num_database, model.bits), jnp.float32).astype(dtype)
  db_labels = jnp.asarray(db_labels)
  if padded_rows is not None:
    pad = lambda x: jnp.pad(x, [(0, padded_rows - num_database)] + [(0, 0)] * (x.ndim - 1))
    B, db_labels = pad(B), pad(db_labels)
  return TrainState(
      step=jnp.int32(0),
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      opt_state=tx.init(variables['params']),
      B=B,
      U=jnp.zeros((num_samples, model.bits), dtype),
      db_labels=db_labels,
      negative_weight=jnp.float32(1.0))
