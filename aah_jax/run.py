"""The run: the outer iterations of ``aah_jax.training.algorithm`` with checkpoints, logs,
evaluation and preemption around them, then results.json and the report.

``prepare(config)`` builds what training and the tools (aah-eval, aah-index, …) share:
the mesh, the network, the data and the compiled encoder. ``train_and_evaluate`` runs
(or continues, from WORKDIR/checkpoints) the outer iterations and writes
WORKDIR/results.json.

Continuing is exact: Ω, the epoch orders and the augmentation derive from the seed and
the step count, so a run restored from a checkpoint at any step computes what the
uninterrupted run computes from there.
"""

import dataclasses
import functools
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from aah_jax.analysis import report
from aah_jax.common import files, init_compile, mesh as mesh_lib, preemption, workdir_lock
from aah_jax.common.mesh import to_host
from aah_jax.data import datasets, input_pipeline
from aah_jax.models import A2NetPlusPlus, convert, precision, pretrained
from aah_jax.retrieval import ranking
from aah_jax.training import algorithm, checkpoint, evaluation, grouped, losses, run_log, train

RESULTS_FILE = 'results.json'


NonFiniteLoss = algorithm.NonFiniteLoss


@dataclasses.dataclass
class Run:
  """A config made concrete: mesh, network, optimiser and the compiled encoder; the data
  (the database is the training split, the queries the test split) open on first use,
  so that tools that only encode images never need the dataset."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: A2NetPlusPlus
  schedule: train.Schedule
  tx: optax.GradientTransformation

  @functools.cached_property
  def builder(self):
    """The config's prepared tfds builder (prepared or generated on first use; with several
    processes, process 0 first, so that hosts sharing a data_dir never build at once)."""
    data = self.config.data
    load = functools.partial(datasets.load_builder, self.config.dataset, data.builder_config,
                             data.data_dir, data.manual_dir)
    if jax.process_count() == 1:
      return load()
    builder = load() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices('aah_jax dataset prepared')
    return builder or load()

  @functools.cached_property
  def splits(self) -> evaluation.Splits:
    """The queries (the test split) and the database (the training split)."""
    entry, builder = datasets.dataset_entry(self.config.dataset), self.builder
    return evaluation.Splits(
        query_source=builder.as_data_source(entry.query_split),
        db_source=builder.as_data_source(entry.database_split),
        query_labels=datasets.read_labels(builder, entry.query_split),
        db_labels=datasets.read_labels(builder, entry.database_split))

  db_source = property(lambda self: self.splits.db_source)
  query_source = property(lambda self: self.splits.query_source)
  db_labels = property(lambda self: self.splits.db_labels)
  query_labels = property(lambda self: self.splits.query_labels)

  @property
  def num_database(self) -> int:
    return len(self.db_source)

  @functools.cached_property
  def similarity_form(self) -> str:
    """'explicit', 'grouped' or 'chunked' (docs/method.md §8): config.train.similarity,
    where 'grouped' runs 'chunked' if the database has more label groups than
    config.train.max_group_fraction of its items."""
    tc = self.config.train
    if (tc.similarity == 'grouped'
        and self.label_groups.num_groups > tc.max_group_fraction * self.num_database):
      return 'chunked'
    return tc.similarity

  @property
  def rows_split(self) -> bool:
    """Whether B and the database's labels (or group ids) are split over the devices by rows."""
    return self.similarity_form != 'explicit'

  @functools.cached_property
  def label_groups(self) -> grouped.LabelGroups:
    """The database's label groups (host arrays), for the grouped form."""
    return grouped.LabelGroups.of(self.db_labels)

  def init_state(self) -> train.TrainState:
    """The initial state, laid out by train.state_sharding; with config.model.pretrained,
    the trunk and both last-stage copies start from that converted file (aah-convert) or
    named weights (aah_jax.models.pretrained)."""
    replicated = mesh_lib.replicated(self.mesh)
    layout = train.state_sharding(self.mesh, self.rows_split)
    key = jax.random.key(self.config.seed)
    state = init_compile.compile_init(jax.jit(self._init, out_shardings=layout), key)(key)
    if not self.config.model.get('pretrained'):
      return state
    path = pretrained.resolve(self.config.model.pretrained)
    variables = convert.load_pretrained(
        jax.tree.map(to_host, {'params': state.params, 'batch_stats': state.batch_stats}), path)
    variables = jax.device_put(variables, replicated)
    return state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                         opt_state=jax.jit(self.tx.init, out_shardings=replicated)(
                             variables['params']))

  def abstract_state(self) -> train.TrainState:
    """Shapes, dtypes and shardings of the state, for restoring into."""
    shapes = jax.eval_shape(self._init, jax.random.key(self.config.seed))
    return train.abstract_state(shapes, self.mesh, self.rows_split)

  def _init(self, rng):
    labels = self.label_groups.group_of if self.similarity_form == 'grouped' else self.db_labels
    padded = mesh_lib.padded_rows(self.num_database, self.mesh.size) if self.rows_split else None
    return train.init_state(rng, self.model, self.tx, image_size=self.config.image_size,
                            db_labels=labels, num_samples=self.config.train.num_samples,
                            padded_rows=padded)

  def database_codes(self, state: train.TrainState) -> ranking.PackedCodes:
    """B's N real rows on the host, packed: each device packs its rows of B (k/8 bytes a
    row), and only those bytes are gathered, never B's floats."""
    return evaluation.packed_rows_to_host(state.B, self.num_database)

  @functools.cached_property
  def _encoder(self):
    return evaluation.make_encoder(self.model, self.mesh)

  @functools.cached_property
  def _packing_encoder(self):
    return evaluation.make_encoder(self.model, self.mesh, packed=True)

  def encode(self, variables: dict, source) -> np.ndarray:
    """u (len(source), k) of every item of source with the network's variables."""
    return self._encode_with(self._encoder, variables, source)

  def encode_packed(self, variables: dict, source) -> ranking.PackedCodes:
    """The codes sign(u) of every item of source, packed on the devices (k/8 bytes a row
    reach the host)."""
    return ranking.PackedCodes(self._encode_with(self._packing_encoder, variables, source),
                               int(self.config.bits))

  def _encode_with(self, encoder, variables: dict, source) -> np.ndarray:
    data = self.config.data
    return evaluation.encode_split(
        encoder, variables, source, global_batch=self.config.eval.batch_size,
        image_size=self.config.image_size, num_threads=data.num_threads,
        num_workers=data.num_workers, dtype=input_pipeline.IMAGE_DTYPES[data.image_dtype],
        sharding=mesh_lib.batch_sharded(self.mesh))

  def evaluate(self, state: train.TrainState) -> tuple[dict, tuple]:
    """(the mAPs of evaluation.evaluate, (query u, packed database codes)). The database's
    codes, learned and encoded, reach the host packed."""
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    query_u = self.encode(variables, self.query_source)
    db_codes = self.encode_packed(variables, self.db_source)
    return evaluation.evaluate(query_u, db_codes, self.database_codes(state), self.query_labels,
                               self.db_labels, self.config.seed), (query_u, db_codes)


def prepare(config: ml_collections.ConfigDict) -> Run:
  """Checks the config and builds the mesh, network and optimiser (no data read yet); the
  run's config has its 'auto' dtypes decided for the platform of this host's devices."""
  config = precision.resolve_config(config, jax.devices()[0].platform)
  num_devices = jax.device_count()
  train.validate_config(config, num_devices)
  datasets.dataset_entry(config.dataset)  # an unknown dataset fails here
  model, schedule, tx = train.network_and_optimizer(config, num_devices)
  return Run(config=config, mesh=mesh_lib.make_mesh(), model=model, schedule=schedule, tx=tx)


def new_progress(config, num_database: int) -> dict:
  return {'config': config.to_dict(), 'num_database': num_database, 'history': [],
          'step_metrics': [], 'wall_time_seconds': 0.0}


def check_resumable(progress: dict, config, num_database: int, workdir: str):
  """A checkpoint continues only the run that wrote it: a clear error otherwise."""
  fields = checkpoint.incompatible_fields(progress['config'], config)
  if progress['num_database'] != num_database:
    fields.append(f'database size ({progress["num_database"]} saved, {num_database} now)')
  if fields:
    saved = checkpoint.saved_fields(progress['config'])
    now = checkpoint.flat_config(config.to_dict())
    shown = [f'{f}: {saved.get(f)!r} saved, {now.get(f)!r} now' if f in saved or f in now else f
             for f in fields]
    raise ValueError(f'{workdir} holds checkpoints of a different run; differing: '
                     f'{"; ".join(shown)}. Use another --workdir, or the saved config.')


def restore_or_init(run: Run, ckpts: checkpoint.RunCheckpoints, workdir: str):
  """(state, progress): the newest intact checkpoint's if there is one (damaged newer steps
  are logged and set aside), else a fresh start."""
  if ckpts.latest_step() is None:
    return run.init_state(), new_progress(run.config, run.num_database)

  def read(step):  # progress first: a different run is refused before the state is read
    progress = ckpts.restore_progress(step)
    check_resumable(progress, run.config, run.num_database, workdir)
    return ckpts.restore_state(run.abstract_state(), step), progress

  _, (state, progress) = ckpts.newest_intact(read, set_aside=True)
  if jax.process_index() == 0:
    logging.info('continuing %s from step %d', workdir, int(to_host(state.step)))
  return state, progress


# ----------------------------------------------------------------------------- the loop


def _progress_line(record: dict, num_iterations: int, eta: float) -> str:
  shown = ' '.join(f'{name}={record[name]:.4g}' for name in
                   ('loss', *losses.TERMS, 'map_learned_db') if name in record)
  return (f'[{record["iteration"]}/{num_iterations}] phase {record["phase"]} {shown} '
          f'({record["seconds"]:.1f}s, eta {eta:.0f}s)')


class _Session:
  """The loop around the algorithm (``algorithm.StepHooks``): logs each step, saves every
  checkpoint.every_steps and at each iteration's end (``save``, the one save site), and
  on SIGTERM or Ctrl-C saves at the next step boundary and raises Preempted. ``progress``
  is what a checkpoint stores beside the state (see ``new_progress``)."""

  def __init__(self, config, ckpts: checkpoint.RunCheckpoints, log: run_log.RunLog, stop,
               progress: dict, first_iteration: int, start_time: float):
    self.progress, self._config = progress, config
    self._ckpts, self._log, self._stop = ckpts, log, stop
    self._first_iteration, self._start_time = first_iteration, start_time
    self._prior_seconds = progress['wall_time_seconds']

  def wall_time(self) -> float:
    return self._prior_seconds + time.time() - self._start_time

  def step_read(self, step: int, iteration: int, metrics: dict):
    self._log.step(step, iteration, metrics, self._config.train.batch_size)

  def after_step(self, step: int, state, metrics: algorithm.StepMetrics):
    stopping = self._stop.requested(step)
    every = self._config.checkpoint.every_steps
    if stopping or (every and step % every == 0):
      self.save(step, state, metrics.read_all())
    if stopping:
      self._ckpts.wait()
      raise preemption.Preempted(step)

  def save(self, step: int, state, step_metrics: list, map_learned_db=None):
    self.progress = dict(self.progress, step_metrics=step_metrics,
                         wall_time_seconds=self.wall_time())
    self._ckpts.save(step, state, self.progress, map_learned_db)

  def end_iteration(self, step: int, state, record: dict):
    """Logs and saves the finished iteration; stops here if asked to (unless it was the
    last)."""
    self.progress = dict(self.progress, history=self.progress['history'] + [record])
    self._log.iteration(step, record)
    self.save(step, state, [], record.get('map_learned_db'))
    num_iterations, done = self._config.train.num_iterations, record['iteration']
    if jax.process_index() == 0:
      eta = (time.time() - self._start_time) / (done - self._first_iteration) * (
          num_iterations - done)
      print(_progress_line(record, num_iterations, eta), flush=True)
    if done < num_iterations and self._stop.requested(step):
      self._ckpts.wait()
      raise preemption.Preempted(step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or continues training) on config.dataset, evaluates, writes
  workdir/results.json and returns it.

  Raises workdir_lock.WorkdirBusy at once if another process writes into workdir,
  preemption.Preempted after saving when SIGTERM arrives, and NonFiniteLoss on a NaN/inf
  loss (before saving the bad state).
  """
  train.validate_config(config, jax.device_count())  # before the folder is touched
  datasets.dataset_entry(config.dataset)
  with workdir_lock.hold(workdir, 'training'):
    return _train_and_evaluate(config, workdir)


def _train(run: Run, workdir: str, start_time: float):
  """The outer iterations from wherever the workdir's checkpoints are: (final state, the
  run's progress, the last evaluation's (query u, database u) or Nones)."""
  config, spi = run.config, run.schedule.steps_per_iteration
  tc, cc = config.train, config.checkpoint
  ckpts = checkpoint.RunCheckpoints(workdir, keep=cc.keep, async_save=cc.async_save)
  if ckpts.latest_step() is None:  # a fresh start needs the pretrained weights (the tools don't)
    pretrained.check(config.model.get('pretrained'))
  train.validate_num_samples(config, run.num_database)
  state, progress = restore_or_init(run, ckpts, workdir)
  start_step = int(to_host(state.step))
  programs = algorithm.Programs.compile(
      config, run.mesh, run.model, run.tx, run.schedule, run.db_labels,
      run.label_groups if run.similarity_form == 'grouped' else None, form=run.similarity_form)
  log = run_log.RunLog(workdir, enabled=jax.process_index() == 0, start_step=start_step,
                       total_steps=tc.num_iterations * spi,
                       print_every_steps=config.log.every_steps,
                       tensorboard=config.log.tensorboard)
  if jax.process_index() == 0:
    logging.info('%s: N=%d database, %d queries; %d devices; %d outer iterations × %d steps',
                 config.dataset, run.num_database, len(run.query_source), jax.device_count(),
                 tc.num_iterations, spi)
    _log_similarity_form(run)
  final_codes = (None, None)
  try:
    with preemption.StopSignal() as stop:
      session = _Session(config, ckpts, log, stop, progress, start_step // spi, start_time)
      for iteration in range(start_step // spi, tc.num_iterations):
        iteration_start = time.time()
        state, record = algorithm.outer_iteration(state, iteration, config, run.db_source,
                                                  programs, session,
                                                  session.progress['step_metrics'])
        every = config.eval.every_iterations
        if iteration + 1 == tc.num_iterations or (every and (iteration + 1) % every == 0):
          maps, final_codes = run.evaluate(state)
          record.update(maps)
        record['seconds'] = time.time() - iteration_start
        session.end_iteration((iteration + 1) * spi, state, record)
  finally:
    ckpts.wait()
    ckpts.close()
    log.close()
  return state, dict(session.progress, wall_time_seconds=session.wall_time()), final_codes


def _log_similarity_form(run: Run):
  """Says which form of S the run trains with, and what it keeps per device."""
  N, devices, tc = run.num_database, run.mesh.size, run.config.train
  if run.similarity_form == 'explicit':
    logging.info('similarity: explicit (S_batch n × N in the step, S |Ω| × N in the DCC sweep; '
                 'B (N × k) replicated on each of %d devices)', devices)
    return
  rows = mesh_lib.padded_rows(N, devices) // devices
  if run.similarity_form == 'grouped':
    logging.info('similarity: label-grouped, G=%d distinct label rows for N=%d (docs/method.md '
                 '§8); B and the group ids split over %d devices, %d rows each',
                 run.label_groups.num_groups, N, devices, rows)
    return
  why = ('config.train.similarity=chunked' if tc.similarity == 'chunked' else
         f'G={run.label_groups.num_groups} label groups for N={N}, more than '
         f'config.train.max_group_fraction={tc.max_group_fraction} of N')
  logging.info('similarity: explicit, chunked over each device\'s rows (%s; docs/method.md '
               '§8.1); B and the labels split over %d devices, %d rows each, %d rows a chunk',
               why, devices, rows, min(tc.chunk_rows, rows))


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  start_time = time.time()
  run = prepare(config)
  config = run.config  # dtypes decided
  state, progress, final_codes = _train(run, workdir, start_time)
  history = progress['history']
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
      'num_database': run.num_database,
      'num_queries': len(run.query_source),
      'num_devices': jax.device_count(),
      'final_step': config.train.num_iterations * run.schedule.steps_per_iteration,
      'wall_time_seconds': progress['wall_time_seconds'],
      'history': history,
      'config': config.to_dict(),
  }
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    files.write_json(os.path.join(workdir, RESULTS_FILE), results)
  if config.log.report:
    _write_report(run, state, final_codes, workdir)
  return results


def _write_report(run: Run, state: train.TrainState, final_codes: tuple, workdir: str):
  """WORKDIR/report/ of the final state (the last evaluation's query u and packed database
  codes, or encoded again where a finished run was rerun)."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  query_u, db_codes = final_codes
  if query_u is None:
    query_u = run.encode(variables, run.query_source)
    db_codes = run.encode_packed(variables, run.db_source)
  config = run.config
  data = report.collect(run.splits, run.model, variables, query_u, db_codes,
                        run.database_codes(state), workdir, seed=config.seed,
                        image_size=config.image_size,
                        title=f'{config.dataset}, {config.bits} bits: training run '
                              f'{os.path.abspath(workdir)}')
  if jax.process_index() == 0:
    report.write(data, workdir)
