"""Compile-only plans for accelerators this host does not have.

libtpu's compile-only devices (``jax.experimental.topologies``) let the real TPU compiler
build a config's programs for a named topology on a CPU machine; the CUDA plugin does the
same for NVIDIA GPUs described by a ``GpuTargetConfigProto`` (``gpu_targets/``). ``plan``
compiles the train step, the DCC update and the encoder over a 1-D 'data' mesh of those
devices, with the shardings the run uses, and reports per device (a chip or GPU, or a
TensorCore where libtpu lists cores): memory against the device's HBM, flops and bytes
accessed (the compiler's counts), a roofline estimate of the step time, the compile time and
the collectives of the optimised HLO. Every number but the estimate is compiler output; the
estimate is max(flops / peak, bytes / bandwidth), not a measurement.
"""

import dataclasses
import functools
import importlib.resources
import importlib.util
import math
import os
import re
import time
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from aah_jax.common import mesh as mesh_lib
from aah_jax.data import datasets
from aah_jax.data.datasets.synthetic_birds import AahSyntheticBirds
from aah_jax.models import precision
from aah_jax.training import chunked, evaluation, grouped, train

GiB = 2 ** 30


class PlanError(ValueError):
  """A topology, config or environment the plan cannot be made for (the message says which)."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: what the roofline estimate and the fit check need."""

  name: str
  hbm_bytes: int
  peak_flops: float  # bf16 dense, per chip
  peak_flops_float32: float  # what float32 convolutions and matmuls run at by default
  hbm_bytes_per_second: float
  source: str
  target_config: Optional[str] = None  # GPUs: the GpuTargetConfigProto in gpu_targets/


# Per-chip figures from Google's Cloud TPU system-architecture pages (checked 2026-12):
# HBM capacity, HBM bandwidth, peak bf16 compute. XLA runs float32 matmuls and convolutions
# on TPU at its default precision as single bf16 passes, so the bf16 peak is the ceiling
# for both dtypes.
TPU_CHIPS = {
    name: Chip(f'TPU {name}', hbm_gib * GiB, peak, peak, bandwidth,
               f'https://cloud.google.com/tpu/docs/{name}')
    for name, hbm_gib, peak, bandwidth in [('v4', 32, 275e12, 1200e9),
                                           ('v5e', 16, 197e12, 819e9),
                                           ('v5p', 95, 459e12, 2765e9),
                                           ('v6e', 32, 918e12, 1640e9)]
}

# NVIDIA data sheets (A100: nvidia.com/en-us/data-center/a100, H100 and H200:
# nvidia.com/en-us/data-center/h100, /h200; dense, without sparsity): peak bf16 tensor-core
# FLOP/s, and TF32 for float32 (XLA's default precision lets cuBLAS/cuDNN use TF32 on these
# GPUs). Memory size and bandwidth as in each GPU's target config (openxla/xla's specs).
GPU_CHIPS = {
    'a100': Chip('NVIDIA A100 SXM 80GB', 85_100_068_864, 312e12, 156e12, 2039e9,
                 'https://www.nvidia.com/en-us/data-center/a100/', 'a100_sxm_80.txtpb'),
    'h100': Chip('NVIDIA H100 SXM 80GB', 84_942_979_072, 989e12, 495e12, 3352e9,
                 'https://www.nvidia.com/en-us/data-center/h100/', 'h100_sxm.txtpb'),
    'h200': Chip('NVIDIA H200 141GB', 151_397_597_184, 989e12, 495e12, 4800e9,
                 'https://www.nvidia.com/en-us/data-center/h200/', 'h200.txtpb'),
}

PROGRAMS = ('train_step', 'dcc_update', 'encoder')
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
                'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_SHAPE = re.compile(r'\b(' + '|'.join(_DTYPE_BYTES) + r')\[([0-9,]*)\]')


# ----------------------------------------------------------------------------- devices


def topology_devices(name: str):
  """(compile-only devices, Chip) of a topology name: a TPU one such as 'v5e:2x2' or
  'v4:2x2x1' (a device is a chip, or one TensorCore of it where libtpu lists cores: v4 has
  two per chip), or a GPU one, GPU:PARTITIONSxHOSTSxDEVICES such as 'h100:1x1x8' (a device is
  a GPU)."""
  generation = name.split(':')[0]
  if ':' not in name or generation not in {**TPU_CHIPS, **GPU_CHIPS}:
    raise PlanError(f'--topology={name!r}: expected GENERATION:SHAPE with GENERATION one of '
                    f'{sorted(TPU_CHIPS)} (e.g. v5e:2x2, v4:2x2x1, v5p:2x2x1) or of '
                    f'{sorted(GPU_CHIPS)} (partitions x hosts x GPUs per host, e.g. h100:1x1x8)')
  if generation in GPU_CHIPS:
    return _gpu_devices(name, GPU_CHIPS[generation]), GPU_CHIPS[generation]
  if importlib.util.find_spec('libtpu') is None:
    raise PlanError('compiling for TPU needs libtpu on this host: pip install -e ".[plan]"')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # Compile-only use needs no exclusive hold on a TPU: without this, libtpu's lock file lets
  # one process on the host plan at a time.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  try:
    description = topologies.get_topology_desc(platform='tpu', topology_name=name)
  except Exception as error:  # libtpu's own message says what it did not accept
    raise PlanError(f'--topology={name!r} is not a topology libtpu can compile for: '
                    f'{str(error).splitlines()[0]}') from error
  return list(description.devices), TPU_CHIPS[generation]


def _gpu_devices(name: str, chip: Chip):
  shape = name.split(':', 1)[1]
  if not re.fullmatch(r'[1-9][0-9]*x[1-9][0-9]*x[1-9][0-9]*', shape):
    raise PlanError(f'--topology={name!r}: a GPU topology is PARTITIONSxHOSTSxGPUS_PER_HOST, '
                    f'e.g. h100:1x1x8 (one host of 8) or h100:1x4x8 (4 hosts of 8)')
  if importlib.util.find_spec('jax_plugins.xla_cuda12') is None:
    raise PlanError('compiling for NVIDIA GPUs needs the CUDA plugin on this host (no GPU or '
                    'CUDA libraries needed): pip install -e ".[plan]"')
  # The plugin registers itself only if its CUDA version check passes or is skipped; on a
  # planning host without CUDA it must be skipped (JAX_PLATFORMS=cpu also skips it).
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  target = importlib.resources.files('aah_jax.analysis') / 'gpu_targets' / chip.target_config
  try:
    description = topologies.get_topology_desc(platform='cuda', topology_name='',
                                               topology=shape, target_config=target.read_text())
  except NotImplementedError as error:
    raise PlanError(f'--topology={name!r}: JAX started before the CUDA plugin could register '
                    f'for compile-only use; run with JAX_PLATFORMS=cpu') from error
  except Exception as error:
    raise PlanError(f'--topology={name!r} is not a topology the CUDA plugin can compile for: '
                    f'{str(error).splitlines()[0]}') from error
  return list(description.devices)


# ----------------------------------------------------------------------------- the database


def database_shape(config, num_database: Optional[int] = None) -> tuple[int, tuple[int, ...]]:
  """(N, shape of one label) of the config's database, without building the dataset."""
  entry = datasets.dataset_entry(config.dataset)
  builder = entry.builder_cls
  if num_database is None:
    if builder is AahSyntheticBirds:
      name = config.data.builder_config or builder.DEFAULT_CONFIG_NAME
      spec = {c.name: c for c in builder.BUILDER_CONFIGS}[name]
      num_database = spec.num_classes * spec.train_per_class
    else:
      num_database = getattr(builder, 'SPLITS', {}).get(entry.database_split)
  if not num_database:
    raise PlanError(f'the database size of config.dataset={config.dataset!r} is not fixed by '
                    f'the dataset: pass --num_database')
  num_labels = getattr(builder, 'NUM_LABELS', None)
  return int(num_database), ((num_labels,) if num_labels else ())


def database_groups(config) -> int:
  """G of the config's database where the dataset fixes it (its classes), else PlanError."""
  builder = datasets.dataset_entry(config.dataset).builder_cls
  if builder is AahSyntheticBirds:
    name = config.data.builder_config or builder.DEFAULT_CONFIG_NAME
    return {c.name: c for c in builder.BUILDER_CONFIGS}[name].num_classes
  classes = getattr(builder, 'NUM_CLASSES', None)
  if not classes:
    raise PlanError(f'the label groups of config.dataset={config.dataset!r} are not fixed by '
                    f'the dataset: pass --num_groups')
  return int(classes)


# ----------------------------------------------------------------------------- programs


def _programs(config, mesh, per_device_batch: int, per_device_eval_batch: int,
              num_database: int, label_shape: tuple[int, ...],
              num_groups: Optional[int] = None) -> dict:
  """name → (jitted function, abstract arguments, images per call) of what a run compiles.
  In the label-grouped form (config.train.similarity='grouped') the step takes B's
  summary for num_groups label groups, and B and the group ids are split by rows; in the
  chunked form (§8.1) B and the labels are split by rows and the summary has no groups."""
  devices = mesh.size
  model, schedule, tx = train.network_and_optimizer(config, devices)
  tc, form = config.train, config.train.similarity
  grouped_form = form != 'explicit'  # B and the labels (or group ids) split by rows
  replicated, rows = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
  if grouped_form:
    init = functools.partial(
        train.init_state, padded_rows=mesh_lib.padded_rows(num_database, devices),
        db_labels=jnp.zeros((num_database,) + (() if form == 'grouped' else label_shape),
                            jnp.int32))
  else:
    init = functools.partial(train.init_state,
                             db_labels=jnp.zeros((num_database,) + label_shape, jnp.int32))
  shapes = jax.eval_shape(functools.partial(init, model=model, tx=tx,
                                            image_size=config.image_size,
                                            num_samples=tc.num_samples), jax.random.key(0))
  state = train.abstract_state(shapes, mesh, grouped_form)

  def batch_of(n):
    return jax.ShapeDtypeStruct((n, config.image_size, config.image_size, 3),
                                jnp.dtype(config.data.image_dtype), sharding=rows)

  n = per_device_batch * devices
  ints = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows)
  batch = {'image': batch_of(n), 'label': ints((n,) + label_shape), 'index': ints((n,)),
           'position': ints((n,))}
  chunk_rows = tc.chunk_rows if form == 'chunked' else None
  row_sums = (functools.partial(chunked.row_sums, mesh=mesh, num_database=num_database,
                                chunk_rows=chunk_rows) if chunk_rows else None)
  step = train.compile_train_step(mesh, grouped_form, model=model, tx=tx, schedule=schedule,
                                  weights=train.loss_weights(config), gamma=config.loss.gamma,
                                  row_sums=row_sums)
  update = train.make_database_update(mesh, num_database, config.loss.gamma,
                                      config.loss.soft_similarity, grouped_form, chunk_rows)
  sampled = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=replicated)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  step_arguments, db_labels = (state, batch), state.db_labels
  k, dtype = model.bits, state.B.dtype
  floats = lambda shape: jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)
  if form == 'chunked':
    step_arguments += (grouped.DatabaseSummary(
        gram=floats((k, k)), group_sums=None, group_rows=None, counts=None,
        omega_codes=floats((tc.num_samples, k)), num_database=num_database),)
  elif grouped_form:
    G = num_groups
    summary = grouped.DatabaseSummary(
        gram=floats((k, k)), group_sums=floats((G, k)), group_rows=sampled((G,) + label_shape),
        counts=floats((G,)), omega_codes=floats((tc.num_samples, k)), num_database=num_database)
    step_arguments += (summary,)
    db_labels = grouped.LabelGroups(rows=summary.group_rows, group_of=state.db_labels,
                                    counts=sampled((G,)))
  return {
      'train_step': (step, step_arguments, n),
      'dcc_update': (update, (state.B, state.U, sampled((tc.num_samples,)),
                              sampled((tc.num_samples,) + label_shape), db_labels), None),
      'encoder': (evaluation.make_encoder(model, mesh),
                  (variables, batch_of(per_device_eval_batch * devices)),
                  per_device_eval_batch * devices),
  }


# ----------------------------------------------------------------------------- analysis


def collectives(hlo_text: str) -> dict:
  """Count and bytes (of each op's result, per device) of every collective in optimised HLO.
  An asynchronous pair (…-start / …-done) counts once, at its start; so does one collective
  the TPU compiler splits into a chain of pieces inside collective fusions (the pieces share
  its channel_id; counted once, at the largest piece's bytes)."""
  found = {name: {'count': 0, 'bytes': 0} for name in COLLECTIVES}
  channels = {}  # (name, channel_id) → bytes of the largest piece seen
  for line in hlo_text.splitlines():
    if '=' not in line:
      continue
    rhs = line.split('=', 1)[1]
    for name in COLLECTIVES:
      match = re.search(r'\s' + name + r'(-start)?\(', rhs)
      if match:
        size = _result_bytes(rhs[:match.start()], started=bool(match.group(1)), op=name)
        channel = re.search(r'\bchannel_id=(\d+)', rhs)
        if channel is None:
          found[name]['count'] += 1
          found[name]['bytes'] += size
        else:
          key = (name, channel.group(1))
          channels[key] = max(channels.get(key, 0), size)
        break
  for (name, _), size in channels.items():
    found[name]['count'] += 1
    found[name]['bytes'] += size
  return found


def _result_bytes(result_type: str, started: bool, op: str) -> int:
  shapes = [(_DTYPE_BYTES[d], [int(x) for x in dims.split(',') if x])
            for d, dims in _SHAPE.findall(result_type)]
  sizes = [width * int(np.prod(dims)) for width, dims in shapes]
  if started and op != 'all-reduce' and len(sizes) >= 2:
    # An async all-gather/permute's result is (operands…, results…): count the results.
    sizes = sizes[len(sizes) // 2:]
  return int(sum(sizes))


def analyse(compiled, chip: Chip, images: Optional[int], dtype: str,
            fallback_cost: Optional[dict] = None) -> dict:
  """Per-device memory, compiler counts and the roofline estimate of one compiled program
  (chip: the share of a chip one device has; dtype: the network's compute dtype, which
  picks the peak). The GPU compiler counts nothing: fallback_cost then gives the flops (of
  the same program at the per-device batch, from XLA's cost analysis before optimisation),
  no bytes are known and the estimate is flops / peak alone, a lower bound. A program with
  while loops (the DCC's over the k bits, the chunked form's over chunks) has its flops and
  bytes counted with each loop body once, whatever its trip count: a lower bound as well."""
  memory = compiled.memory_analysis()
  arguments, outputs = memory.argument_size_in_bytes, memory.output_size_in_bytes
  aliased, temporaries = memory.alias_size_in_bytes, memory.temp_size_in_bytes
  total = arguments + outputs - aliased + temporaries
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  counted_by = 'compiler'
  if not cost:
    cost, counted_by = {'flops': (fallback_cost or {}).get('flops', 0.0)}, 'unoptimised HLO'
  flops = float(cost.get('flops', 0.0))
  accessed = cost.get('bytes accessed')
  peak = chip.peak_flops if dtype == 'bfloat16' else chip.peak_flops_float32
  seconds = max(flops / peak, float(accessed or 0.0) / chip.hbm_bytes_per_second)
  text = compiled.as_text()
  # XLA's cost analysis (TPU and CPU alike) counts a while loop's body once, whatever its trip
  # count: the DCC's loop over k bits, the chunked form's loop over chunks.
  loops = len(re.findall(r'\bwhile\(', text))
  result = {
      'memory_per_device': {'arguments': arguments, 'outputs': outputs, 'aliased': aliased,
                          'temporaries': temporaries, 'total': total,
                          'generated_code': memory.generated_code_size_in_bytes},
      'hbm_per_device': chip.hbm_bytes,
      'fits': total <= chip.hbm_bytes,
      'flops_per_device': flops,
      'flops_counted_by': counted_by,
      'bytes_accessed_per_device': None if accessed is None else float(accessed),
      'peak_flops_per_device': peak,
      'estimated_seconds': seconds,
      'while_loops': loops,
      'estimate_is_lower_bound': accessed is None or loops > 0,
      'collectives': collectives(text),
  }
  if images:
    result['images'] = images
    result['estimated_images_per_second'] = images / seconds if seconds else None
  return result


def one_device_costs(config, per_device_batch: int, per_device_eval_batch: int,
                     num_database: int, label_shape: tuple[int, ...],
                     num_groups: Optional[int] = None) -> dict:
  """name → XLA's cost analysis of each program lowered for one CPU device at the per-device
  batch (unoptimised HLO; flops are those of the data-parallel program per device)."""
  mesh = Mesh(np.array(jax.devices('cpu')[:1]), ('data',))
  programs = _programs(config, mesh, per_device_batch, per_device_eval_batch, num_database,
                       label_shape, num_groups)
  return {name: function.lower(*arguments).cost_analysis() or {}
          for name, (function, arguments, _) in programs.items()}


def compile_program(function, arguments):
  start = time.perf_counter()
  compiled = function.lower(*arguments).compile()
  return compiled, time.perf_counter() - start


def plan(config, topology: str, per_chip_batch: int = 16, per_chip_eval_batch: int = 64,
         num_database: Optional[int] = None, only: Optional[tuple[str, ...]] = None,
         keep_compiled: bool = False, num_groups: Optional[int] = None) -> dict:
  """Compiles the config's programs for the topology and analyses each (see module doc).
  keep_compiled: also return each compiled executable under report['compiled'][name].
  num_groups: G, the database's distinct label rows, for the label-grouped form
  (config.train.similarity='grouped'; default: the class count where the dataset fixes it)."""
  if per_chip_batch < 1 or per_chip_eval_batch < 1:
    raise PlanError(f'per-chip batches must be ≥ 1 (got {per_chip_batch}, {per_chip_eval_batch})')
  devices, chip = topology_devices(topology)
  chips = len({tuple(d.coords) for d in devices})
  per_chip = len(devices) // chips  # devices per chip
  if per_chip_batch % per_chip or per_chip_eval_batch % per_chip:
    raise PlanError(f'{topology} has {per_chip} devices per chip: per-chip batches must be '
                    f'multiples of {per_chip} (got {per_chip_batch}, {per_chip_eval_batch})')
  share = dataclasses.replace(chip, hbm_bytes=chip.hbm_bytes // per_chip,
                              peak_flops=chip.peak_flops / per_chip,
                              peak_flops_float32=chip.peak_flops_float32 / per_chip,
                              hbm_bytes_per_second=chip.hbm_bytes_per_second / per_chip)
  unknown = set(only or ()) - set(PROGRAMS)
  if unknown:
    raise PlanError(f'--programs: {sorted(unknown)} not among {list(PROGRAMS)}')
  num_database, label_shape = database_shape(config, num_database)
  if config.train.similarity == 'grouped':
    num_groups = num_groups or database_groups(config)
  config = precision.resolve_config(config, devices[0].platform)  # as the pod's run decides
  mesh = Mesh(np.array(devices), ('data',))
  programs = _programs(config, mesh, per_chip_batch // per_chip, per_chip_eval_batch // per_chip,
                       num_database, label_shape, num_groups)
  report = {'topology': topology, 'chip': dataclasses.asdict(chip), 'chips': chips,
            'devices': len(devices), 'devices_per_chip': per_chip,
            'device_kind': devices[0].device_kind, 'dataset': config.dataset,
            'num_database': num_database, 'similarity': config.train.similarity,
            'num_groups': num_groups, 'per_chip_batch': per_chip_batch,
            'global_batch': per_chip_batch * chips, 'model_dtype': config.model.dtype,
            'image_size': config.image_size, 'programs': {},
            'note': 'estimated_* are roofline estimates from the compiler\'s flop and byte '
                    'counts and the chip\'s peak figures, not measurements'}
  fallback = None
  for name, (function, arguments, images) in programs.items():
    if only and name not in only:
      continue
    try:
      compiled, seconds = compile_program(function, arguments)
    except Exception as error:
      raise PlanError(f'{name} of config.dataset={config.dataset!r} did not compile for '
                      f'{topology}: {str(error).splitlines()[0]}') from error
    if not compiled.cost_analysis() and fallback is None:  # the GPU compiler counts nothing
      fallback = one_device_costs(config, per_chip_batch // per_chip,
                                  per_chip_eval_batch // per_chip, num_database, label_shape,
                                  num_groups)
    report['programs'][name] = dict(
        analyse(compiled, share, images, config.model.dtype, (fallback or {}).get(name)),
        compile_seconds=seconds)
    if keep_compiled:
      report.setdefault('compiled', {})[name] = compiled
  return report


def largest_fitting_batch(config, topology: str, report: dict, num_database=None,
                          max_compiles: int = 4) -> tuple[Optional[int], bool]:
  """(the largest per-chip train batch found to fit in HBM, whether it is the largest).

  Memory grows about linearly with the batch once it is past the small sizes the compiler
  keeps on chip, so the line through the planned batch b and 4b predicts the limit; each
  prediction (at most 8× the largest batch compiled so far, to bound compile times) is
  compiled to check it, then bisected; at most max_compiles compiles of the step. A batch
  the compiler refuses for lack of memory does not fit. The second value is False when the
  search stopped before finding a batch that does not fit (the first is then a lower bound).
  """
  step = report['programs']['train_step']
  b0, m0 = report['per_chip_batch'], step['memory_per_device']['total']
  hbm, unit = step['hbm_per_device'], report['devices_per_chip']

  def total(b):
    try:
      return plan(config, topology, b, num_database=num_database, only=('train_step',),
                  num_groups=report.get('num_groups'))[
          'programs']['train_step']['memory_per_device']['total']
    except PlanError as error:
      if 'RESOURCE_EXHAUSTED' in str(error) or 'memory' in str(error).lower():
        return math.inf
      raise

  if m0 > hbm:
    return None, True
  b1 = 4 * b0
  m1 = total(b1)
  if m1 <= hbm and m1 > m0:
    guess = b1 + (hbm - m1) * (b1 - b0) / (m1 - m0)
  else:  # b1 does not fit (or memory did not grow): bisect between b0 and b1
    guess = (b0 + b1) / 2
  low, high = (b1, math.inf) if m1 <= hbm else (b0, b1)
  for _ in range(max_compiles - 1):
    guess = int(min(guess, high - unit, 8 * max(low, b1))) // unit * unit
    if guess <= low:
      break
    if total(guess) <= hbm:
      low = guess
      guess = guess * 1.1 if high == math.inf else (guess + high) / 2
    else:
      high = guess
      guess = (low + guess) / 2 if high - low > unit else low
  return low, high - low <= unit
