"""Compile-only plans for accelerators this host does not have.

libtpu's compile-only devices (``jax.experimental.topologies``) let the real TPU compiler
build a config's programs for a named topology on a CPU machine. ``plan`` compiles the
train step, the DCC update and the encoder over a 1-D 'data' mesh of those devices, with
the shardings the run uses, and reports per device (a chip, or a TensorCore where libtpu
lists cores): memory against the device's HBM, flops and
bytes accessed (the compiler's counts), a roofline estimate of the step time, the compile
time and the collectives of the optimised HLO. Every number but the estimate is compiler
output; the estimate is max(flops / peak, bytes / bandwidth), not a measurement.
"""

import dataclasses
import functools
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

from aah_jax import datasets, evaluation, train
from aah_jax import mesh as mesh_lib
from aah_jax.datasets.synthetic_birds import AahSyntheticBirds

GiB = 2 ** 30


class PlanError(ValueError):
  """A topology, config or environment the plan cannot be made for (the message says which)."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: what the roofline estimate and the fit check need."""

  name: str
  hbm_bytes: int
  peak_flops: float  # bf16 dense, per chip
  hbm_bytes_per_second: float
  source: str


# Per-chip figures from Google's Cloud TPU system-architecture pages (checked 2026-12):
# HBM capacity, HBM bandwidth, peak bf16 compute. XLA runs float32 matmuls and convolutions
# on TPU at its default precision as single bf16 passes, so the bf16 peak is the ceiling
# for both dtypes.
TPU_CHIPS = {
    'v4': Chip('TPU v4', 32 * GiB, 275e12, 1200e9, 'https://cloud.google.com/tpu/docs/v4'),
    'v5e': Chip('TPU v5e', 16 * GiB, 197e12, 819e9, 'https://cloud.google.com/tpu/docs/v5e'),
    'v5p': Chip('TPU v5p', 95 * GiB, 459e12, 2765e9, 'https://cloud.google.com/tpu/docs/v5p'),
    'v6e': Chip('TPU v6e', 32 * GiB, 918e12, 1640e9, 'https://cloud.google.com/tpu/docs/v6e'),
}

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
                'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_SHAPE = re.compile(r'\b(' + '|'.join(_DTYPE_BYTES) + r')\[([0-9,]*)\]')


# ----------------------------------------------------------------------------- devices


def topology_devices(name: str):
  """(compile-only devices, Chip) of a TPU topology name such as 'v5e:2x2' or 'v4:2x2x1'.
  A device is a chip, or one TensorCore of it where libtpu lists cores (v4: two per chip)."""
  generation = name.split(':')[0]
  if generation not in TPU_CHIPS or ':' not in name:
    raise PlanError(f'--topology={name!r}: expected GENERATION:SHAPE with GENERATION one of '
                    f'{sorted(TPU_CHIPS)} (e.g. v5e:2x2, v4:2x2x1, v5p:2x2x1)')
  if importlib.util.find_spec('libtpu') is None:
    raise PlanError('compiling for TPU needs libtpu on this host: pip install -e ".[tpu]"')
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


# ----------------------------------------------------------------------------- programs


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _programs(config, mesh, per_device_batch: int, per_device_eval_batch: int,
              num_database: int, label_shape: tuple[int, ...]) -> dict:
  """name → (jitted function, abstract arguments, images per call) of what a run compiles."""
  devices = mesh.size
  model, schedule, tx = train.network_and_optimizer(config, devices)
  tc = config.train
  replicated, rows = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
  labels = jnp.zeros((num_database,) + label_shape, jnp.int32)
  state = _abstract(jax.eval_shape(functools.partial(
      train.init_state, model=model, tx=tx, image_size=config.image_size, db_labels=labels,
      num_samples=tc.num_samples), jax.random.key(0)), replicated)

  def batch_of(n):
    return jax.ShapeDtypeStruct((n, config.image_size, config.image_size, 3),
                                jnp.dtype(config.data.image_dtype), sharding=rows)

  n = per_device_batch * devices
  ints = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows)
  batch = {'image': batch_of(n), 'label': ints((n,) + label_shape), 'index': ints((n,)),
           'position': ints((n,))}
  step = train.compile_train_step(mesh, model=model, tx=tx, schedule=schedule,
                                  weights=train.loss_weights(config), gamma=config.loss.gamma)
  update = train.make_database_update(mesh, num_database, config.loss.gamma,
                                      config.loss.soft_similarity)
  sampled = lambda shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=replicated)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return {
      'train_step': (step, (state, batch), n),
      'dcc_update': (update, (state.B, state.U, sampled((tc.num_samples,)),
                              sampled((tc.num_samples,) + label_shape), state.db_labels), None),
      'encoder': (evaluation.make_encoder(model, mesh),
                  (variables, batch_of(per_device_eval_batch * devices)),
                  per_device_eval_batch * devices),
  }


# ----------------------------------------------------------------------------- analysis


def collectives(hlo_text: str) -> dict:
  """Count and bytes (of each op's result, per device) of every collective in optimised HLO.
  An asynchronous pair (…-start / …-done) counts once, at its start."""
  found = {name: {'count': 0, 'bytes': 0} for name in COLLECTIVES}
  for line in hlo_text.splitlines():
    if '=' not in line:
      continue
    rhs = line.split('=', 1)[1]
    for name in COLLECTIVES:
      match = re.search(r'\s' + name + r'(-start)?\(', rhs)
      if match:
        result_type = rhs[:match.start()]
        found[name]['count'] += 1
        found[name]['bytes'] += _result_bytes(result_type, started=bool(match.group(1)), op=name)
        break
  return found


def _result_bytes(result_type: str, started: bool, op: str) -> int:
  shapes = [(_DTYPE_BYTES[d], [int(x) for x in dims.split(',') if x])
            for d, dims in _SHAPE.findall(result_type)]
  sizes = [width * int(np.prod(dims)) for width, dims in shapes]
  if started and op != 'all-reduce' and len(sizes) >= 2:
    # An async all-gather/permute's result is (operands…, results…): count the results.
    sizes = sizes[len(sizes) // 2:]
  return int(sum(sizes))


def analyse(compiled, chip: Chip, images: Optional[int]) -> dict:
  """Per-device memory, compiler counts and the roofline estimate of one compiled program
  (chip: the share of a chip one device has)."""
  memory = compiled.memory_analysis()
  arguments, outputs = memory.argument_size_in_bytes, memory.output_size_in_bytes
  aliased, temporaries = memory.alias_size_in_bytes, memory.temp_size_in_bytes
  total = arguments + outputs - aliased + temporaries
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  flops, accessed = float(cost.get('flops', 0.0)), float(cost.get('bytes accessed', 0.0))
  seconds = max(flops / chip.peak_flops, accessed / chip.hbm_bytes_per_second)
  result = {
      'memory_per_device': {'arguments': arguments, 'outputs': outputs, 'aliased': aliased,
                          'temporaries': temporaries, 'total': total,
                          'generated_code': memory.generated_code_size_in_bytes},
      'hbm_per_device': chip.hbm_bytes,
      'fits': total <= chip.hbm_bytes,
      'flops_per_device': flops,
      'bytes_accessed_per_device': accessed,
      'estimated_seconds': seconds,
      'collectives': collectives(compiled.as_text()),
  }
  if images:
    result['images'] = images
    result['estimated_images_per_second'] = images / seconds if seconds else None
  return result


def compile_program(function, arguments):
  start = time.perf_counter()
  compiled = function.lower(*arguments).compile()
  return compiled, time.perf_counter() - start


def plan(config, topology: str, per_chip_batch: int = 16, per_chip_eval_batch: int = 64,
         num_database: Optional[int] = None, only: Optional[tuple[str, ...]] = None,
         keep_compiled: bool = False) -> dict:
  """Compiles the config's programs for the topology and analyses each (see module doc).
  keep_compiled: also return each compiled executable under report['compiled'][name]."""
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
                              hbm_bytes_per_second=chip.hbm_bytes_per_second / per_chip)
  num_database, label_shape = database_shape(config, num_database)
  mesh = Mesh(np.array(devices), ('data',))
  programs = _programs(config, mesh, per_chip_batch // per_chip, per_chip_eval_batch // per_chip,
                       num_database, label_shape)
  report = {'topology': topology, 'chip': dataclasses.asdict(chip), 'chips': chips,
            'devices': len(devices), 'devices_per_chip': per_chip,
            'device_kind': devices[0].device_kind, 'dataset': config.dataset,
            'num_database': num_database, 'per_chip_batch': per_chip_batch,
            'global_batch': per_chip_batch * chips, 'model_dtype': config.model.dtype,
            'image_size': config.image_size, 'programs': {},
            'note': 'estimated_* are roofline estimates from the compiler\'s flop and byte '
                    'counts and the chip\'s peak figures, not measurements'}
  for name, (function, arguments, images) in programs.items():
    if only and name not in only:
      continue
    try:
      compiled, seconds = compile_program(function, arguments)
    except Exception as error:
      raise PlanError(f'{name} of config.dataset={config.dataset!r} did not compile for '
                      f'{topology}: {str(error).splitlines()[0]}') from error
    report['programs'][name] = dict(analyse(compiled, share, images), compile_seconds=seconds)
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
      return plan(config, topology, b, num_database=num_database, only=('train_step',))[
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
