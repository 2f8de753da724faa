"""Asymmetric training of A²-Net++ and its evaluation (method.md, "Training algorithm").

Read top to bottom: state → schedule and optimiser → the train step → database
codes → encoding and evaluation → the outer loop (``train_and_evaluate``).
"""

import dataclasses
import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax.struct
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from aah_jax import adsh, datasets, input_pipeline, losses, retrieval
from aah_jax.codes import hash_codes
from aah_jax.models import A2NetPlusPlus, create_model, init_variables


# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
  """Everything the train step reads and writes; replicated over the mesh.

  Attributes:
    step: optimiser steps taken.
    params, batch_stats, opt_state: the network and its optimiser.
    B: (N, k) database codes, learned state (real-valued N(0, 1) before the
      first DCC sweep, as in the reference).
    U: (|Ω|, k) latest network output u of every sampled image.
    db_labels: (N,) or (N, L) labels of the database, for S rows in the step.
    negative_weight: r, the −r of dissimilar pairs in S for the current Ω.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  B: jax.Array
  U: jax.Array
  db_labels: jax.Array
  negative_weight: jax.Array


# ----------------------------------------------------------------------------- schedule


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Outer iterations, phases and learning rate as functions of the step count."""

  num_iterations: int
  steps_per_iteration: int
  learning_rate: float
  lr_decay_fraction: float
  lr_decay_factor: float

  def iteration(self, step):
    return step // self.steps_per_iteration

  def phase(self, iteration):
    """1 in the first half of the outer iterations, 2 after (rec joins the loss)."""
    return jnp.where(iteration < self.num_iterations / 2, 1, 2)

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


def loss_weights(config) -> dict:
  """term → (phase 1, phase 2) weights; no image term without the image path."""
  weights = {name: tuple(w) for name, w in config.loss.weights.items()}
  if not config.model.use_image_decoder:
    weights.pop('img', None)
  return weights


# ----------------------------------------------------------------------------- the step


def train_step(state: TrainState, batch: dict, *, model: A2NetPlusPlus,
               tx: optax.GradientTransformation, schedule: Schedule, weights: dict,
               gamma: float):
  """One SGD step on a global batch: (state, batch) → (state, metrics).

  batch: 'image' (n, S, S, 3) normalised, 'label', 'index' (database index ω),
  'position' (row of U).
  """
  phase = schedule.phase(schedule.iteration(state.step))

  def loss_fn(params):
    output, mutated = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                  batch['image'], train=True, mutable=['batch_stats'])
    S_batch = adsh.similarity_rows(batch['label'], state.db_labels, state.negative_weight)
    terms = losses.network_loss_terms(
        output, state.B, S_batch, batch['index'], input_pipeline.to_unit_range(batch['image']),
        gamma=gamma, code_length=model.bits)
    loss = losses.total_loss(terms, phase, weights)
    return loss, (terms, output.u, mutated['batch_stats'])

  (loss, (terms, u, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
      U=state.U.at[batch['position']].set(u))
  metrics = dict(terms, loss=loss, lr=schedule.learning_rate_at(state.step), phase=phase)
  return new_state, metrics


def compile_train_step(mesh, **step_kwargs):
  """``train_step`` jitted over a 1-D 'data' mesh: batch sharded, state replicated and donated."""
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  return jax.jit(functools.partial(train_step, **step_kwargs),
                 in_shardings=(replicated, batch_sharding),
                 out_shardings=(replicated, replicated), donate_argnums=0)


# ----------------------------------------------------------------------------- database codes


def update_database_codes(B, U, omega, omega_labels, db_labels, *, gamma: float, soft: bool):
  """B ← one DCC sweep, with S (|Ω| × N) built on device from the labels."""
  S = adsh.similarity(omega_labels, db_labels, soft)
  return adsh.dcc_update(B, U, omega, S, gamma)


def make_database_update(mesh, num_database: int, gamma: float, soft: bool):
  """The jitted DCC update, sharded over database rows when they divide evenly."""
  rows = NamedSharding(mesh, P('data') if num_database % mesh.size == 0 else P())

  def update(B, U, omega, omega_labels, db_labels):
    B, db_labels = jax.lax.with_sharding_constraint((B, db_labels), rows)
    return update_database_codes(B, U, omega, omega_labels, db_labels, gamma=gamma, soft=soft)

  return jax.jit(update, out_shardings=NamedSharding(mesh, P()))


# ----------------------------------------------------------------------------- encoding


def make_encoder(model: A2NetPlusPlus, mesh):
  """Jitted eval-mode forward: (variables, images) → u, batch sharded over the mesh."""
  return jax.jit(lambda variables, images: model.apply(variables, images, train=False),
                 in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))),
                 out_shardings=NamedSharding(mesh, P('data')))


def global_batch_array(local_batch: dict, sharding) -> dict:
  """This process's rows of a global batch → global arrays sharded on 'data'."""
  def to_global(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)
  return jax.tree.map(to_global, local_batch)


def encode_split(encoder, variables, source, *, global_batch: int, image_size: int,
                 num_threads: int, sharding) -> np.ndarray:
  """u (len(source), k) of a whole split, in order, every item exactly once."""
  outputs = []
  for local in input_pipeline.eval_batches(source, global_batch=global_batch,
                                           image_size=image_size, num_threads=num_threads,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
    batch = global_batch_array({'image': local['image'], 'mask': local['mask']}, sharding)
    u = encoder(variables, batch['image'])
    u, mask = multihost_utils.process_allgather((u, batch['mask']), tiled=True)
    outputs.append(np.asarray(u)[np.asarray(mask)])
  return np.concatenate(outputs).astype(np.float32)


def evaluate(query_u, db_u, B, query_labels, db_labels, seed: int) -> dict:
  """mAP@all of the query codes against the learned B, the encoded database, and random codes
  (and, against B, the tie-aware mAP: the expected AP over orderings of equidistant items)."""
  query_codes = np.asarray(hash_codes(query_u))
  rng = np.random.default_rng(seed)
  return {
      'map_learned_db': retrieval.mean_average_precision(query_codes, B, query_labels, db_labels),
      'map_tie_aware_learned_db': retrieval.tie_aware_mean_average_precision(
          query_codes, B, query_labels, db_labels),
      'map_encoded_db': retrieval.mean_average_precision(
          query_codes, np.asarray(hash_codes(db_u)), query_labels, db_labels),
      'map_random': retrieval.mean_average_precision(
          rng.choice([-1, 1], query_codes.shape), rng.choice([-1, 1], np.shape(B)),
          query_labels, db_labels),
  }


# ----------------------------------------------------------------------------- the run


def validate_config(config, num_devices: int):
  """Start-up checks that need no data, before any compute."""
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


def init_state(rng, model: A2NetPlusPlus, tx, *, image_size: int, db_labels, num_samples: int):
  """Fresh network, optimiser, B ~ N(0, 1) real-valued, U = 0."""
  params_rng, codes_rng = jax.random.split(rng)
  variables = init_variables(model, params_rng, image_size)
  return TrainState(
      step=jnp.int32(0),
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      opt_state=tx.init(variables['params']),
      B=jax.random.normal(codes_rng, (db_labels.shape[0], model.bits), jnp.float32),
      U=jnp.zeros((num_samples, model.bits), jnp.float32),
      db_labels=jnp.asarray(db_labels),
      negative_weight=jnp.float32(1.0))


def to_host(x) -> np.ndarray:
  """A replicated global array as a NumPy array, also where it spans several processes."""
  return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def _mean_metrics(metrics: list) -> dict:
  return {name: float(np.mean([to_host(m[name]) for m in metrics])) for name in metrics[0]}


def _progress_line(record: dict, num_iterations: int, eta: float) -> str:
  shown = ' '.join(f'{name}={record[name]:.4g}' for name in
                   ('loss', 'hash', 'quant', 'dec', 'rec', 'img', 'map_learned_db') if name in record)
  return (f'[{record["iteration"]}/{num_iterations}] phase {record["phase"]} {shown} '
          f'({record["seconds"]:.1f}s, eta {eta:.0f}s)')


def _write_json(path: str, payload: dict):
  """Write atomically: a reader sees the old file or the whole new one."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains on config.dataset, evaluates, writes workdir/results.json and returns it."""
  start_time = time.time()
  is_main = jax.process_index() == 0
  tc = config.train

  # Checks, mesh and model: bad settings fail here, before any data or compute.
  num_devices = jax.device_count()
  validate_config(config, num_devices)
  entry = datasets.dataset_entry(config.dataset)
  mesh = jax.make_mesh((num_devices,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  model = create_model(config.model)
  if config.train.per_device_batch_norm:
    model = model.clone(bn_groups=num_devices)

  # Data: the database is the training split, queries the test split.
  builder = datasets.load_builder(config.dataset, config.data.builder_config, config.data.data_dir)
  db_source = builder.as_data_source(entry.database_split)
  query_source = builder.as_data_source(entry.query_split)
  db_labels = input_pipeline.read_labels(db_source)
  query_labels = input_pipeline.read_labels(query_source)
  num_database = len(db_source)
  validate_num_samples(config, num_database)

  # State and compiled functions.
  steps_per_iteration = tc.epochs * tc.num_samples // tc.batch_size
  schedule = Schedule(tc.num_iterations, steps_per_iteration, config.optim.learning_rate,
                      config.optim.lr_decay_fraction, config.optim.lr_decay_factor)
  tx = make_optimizer(config.optim, schedule)
  state = jax.jit(
      functools.partial(init_state, model=model, tx=tx, image_size=config.image_size,
                        db_labels=db_labels, num_samples=tc.num_samples),
      out_shardings=replicated)(jax.random.key(config.seed))
  step_fn = compile_train_step(mesh, model=model, tx=tx, schedule=schedule,
                               weights=loss_weights(config), gamma=config.loss.gamma)
  update_codes = make_database_update(mesh, num_database, config.loss.gamma,
                                      config.loss.soft_similarity)
  negative_weight = jax.jit(functools.partial(adsh.negative_weight,
                                              soft=config.loss.soft_similarity),
                            out_shardings=replicated)
  encode = functools.partial(encode_split, make_encoder(model, mesh),
                             global_batch=config.eval.batch_size, image_size=config.image_size,
                             num_threads=config.data.num_threads, sharding=batch_sharding)

  def evaluate_now(state):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    query_u, db_u = encode(variables, query_source), encode(variables, db_source)
    return evaluate(query_u, db_u, to_host(state.B), query_labels, db_labels, config.seed)

  def train_on_omega(state, iteration: int, omega: np.ndarray):
    """train.epochs epochs over Ω, each in a fresh order; returns the state and step metrics."""
    metrics = []
    for epoch in range(tc.epochs):
      seeds = np.random.SeedSequence([config.seed, iteration, epoch])
      order = np.random.default_rng(seeds).permutation(tc.num_samples)
      for local in input_pipeline.train_epoch(
          db_source, omega, order, global_batch=tc.batch_size, image_size=config.image_size,
          crop_scale=config.data.train_crop_scale, seed=int(seeds.generate_state(1)[0]),
          num_threads=config.data.num_threads, process_index=jax.process_index(),
          process_count=jax.process_count()):
        state, step_metrics = step_fn(state, global_batch_array(local, batch_sharding))
        metrics.append(step_metrics)
    return state, metrics

  if is_main:
    logging.info('%s: N=%d database, %d queries; %d devices; %d outer iterations × %d steps',
                 config.dataset, num_database, len(query_source), num_devices, tc.num_iterations,
                 steps_per_iteration)

  # Outer iterations: sample Ω, train the network on it, one DCC sweep of B.
  history = []
  for iteration in range(tc.num_iterations):
    iteration_start = time.time()
    omega = np.random.default_rng([config.seed, iteration]).permutation(num_database)
    omega = omega[:tc.num_samples]
    state = state.replace(negative_weight=negative_weight(db_labels[omega], db_labels))
    state, step_metrics = train_on_omega(state, iteration, omega)
    state = state.replace(
        B=update_codes(state.B, state.U, omega, db_labels[omega], state.db_labels))

    record = {'iteration': iteration + 1, **_mean_metrics(step_metrics)}
    record['phase'] = int(record['phase'])
    record['bit_balance'] = float(np.abs(to_host(state.B).mean(axis=0)).mean())
    every = config.eval.every_iterations
    if iteration + 1 == tc.num_iterations or (every and (iteration + 1) % every == 0):
      record.update(evaluate_now(state))
    record['seconds'] = time.time() - iteration_start
    history.append(record)
    if is_main:
      elapsed = time.time() - start_time
      print(_progress_line(record, tc.num_iterations,
                           eta=elapsed / (iteration + 1) * (tc.num_iterations - iteration - 1)),
            flush=True)

  # Results.
  final = history[-1]
  results = {
      'dataset': config.dataset,
      'bits': int(config.bits),
      'map_learned_db': final['map_learned_db'],
      'map_tie_aware_learned_db': final['map_tie_aware_learned_db'],
      'map_encoded_db': final['map_encoded_db'],
      'map_random': final['map_random'],
      # Selection on the test set, as the reference code reports it: logged, not a result.
      'best_map_learned_db_over_iterations': max(h.get('map_learned_db', -1.0) for h in history),
      'num_database': num_database,
      'num_queries': len(query_source),
      'num_devices': num_devices,
      'wall_time_seconds': time.time() - start_time,
      'history': history,
      'config': config.to_dict(),
  }
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, 'results.json'), results)
  return results
