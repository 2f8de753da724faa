"""aah-plan: the tiny config's programs compiled for a TPU topology by libtpu's compiler and
for GPU nodes by the CUDA plugin's, on this CPU host (compile-only devices), and the HLO
collective counting it reports."""

import importlib.util
import re

import jax
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np
import pytest

from aah_jax.analysis import plan
from aah_jax.cli import aah_plan
from aah_jax.models import precision
from configs import default_pretrained, tiny

TOPOLOGY, PER_CHIP_BATCH = 'v5e:2x2', 8
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason="libtpu is not installed (pip install -e '.[plan]')")
needs_cuda_plugin = pytest.mark.skipif(
    importlib.util.find_spec('jax_plugins.xla_cuda12') is None,
    reason="the CUDA plugin is not installed (pip install -e '.[plan]')")
GPU_TOPOLOGY = 'h100:1x2x4'  # 2 hosts of 4 H100s


def _tiny(topology: str) -> dict:
  return plan.plan(tiny.get_config(), topology, PER_CHIP_BATCH, per_chip_eval_batch=16,
                   keep_compiled=True)


@pytest.fixture(scope='module')
def tiny_plan():
  return _tiny(TOPOLOGY)


@needs_libtpu
def test_tiny_step_compiles_for_a_tpu_topology_and_fits(tiny_plan):
  assert tiny_plan['chips'] == tiny_plan['devices'] == 4
  assert tiny_plan['device_kind'] == 'TPU v5 lite' and tiny_plan['global_batch'] == 32
  for name in ('train_step', 'dcc_update', 'encoder'):
    program = tiny_plan['programs'][name]
    memory = program['memory_per_device']
    assert 0 < memory['arguments'] and 0 < memory['total'] < plan.TPU_CHIPS['v5e'].hbm_bytes
    assert program['fits'] and program['flops_per_device'] > 0, name
  step = tiny_plan['programs']['train_step']
  assert step['estimated_images_per_second'] > 0
  # The gradients are combined across chips: the step all-reduces.
  assert step['collectives']['all-reduce']['count'] >= 1


@pytest.fixture(scope='module')
def tiny_gpu_plan():
  return _tiny(GPU_TOPOLOGY)


@needs_cuda_plugin
def test_tiny_step_compiles_for_gpu_nodes_and_fits(tiny_gpu_plan):
  assert tiny_gpu_plan['chips'] == tiny_gpu_plan['devices'] == 8
  assert tiny_gpu_plan['devices_per_chip'] == 1 and tiny_gpu_plan['global_batch'] == 64
  assert tiny_gpu_plan['device_kind'] == 'NVIDIA H100 80GB HBM3'
  for name in ('train_step', 'dcc_update', 'encoder'):
    program = tiny_gpu_plan['programs'][name]
    assert 0 < program['memory_per_device']['total'] < plan.GPU_CHIPS['h100'].hbm_bytes, name
    # The GPU compiler counts nothing: flops come from the unoptimised HLO, no bytes, and
    # the estimate says it is a lower bound.
    assert program['flops_counted_by'] == 'unoptimised HLO' and program['flops_per_device'] > 0
    assert program['bytes_accessed_per_device'] is None and program['estimate_is_lower_bound']
  step = tiny_gpu_plan['programs']['train_step']
  assert step['collectives']['all-reduce']['count'] >= 1


@needs_libtpu
def test_an_estimate_over_a_loop_is_called_a_lower_bound(tiny_plan):
  """The TPU compiler's cost analysis counts a while loop's body once, whatever its trip
  count (a 10- and a 100-step loop of the same matmul count the same flops), so the
  estimate of the DCC sweep, a loop over the k bits, is a lower bound and aah-plan says so;
  the train step has no loop."""
  devices, _ = plan.topology_devices(TOPOLOGY)
  x = jax.ShapeDtypeStruct((256, 256), np.float32,
                           sharding=jax.sharding.SingleDeviceSharding(devices[0]))

  def flops(steps):
    loop = jax.jit(lambda x: jax.lax.fori_loop(0, steps, lambda i, x: x @ x * 0.5, x))
    cost = loop.lower(x).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']

  assert flops(10) == flops(100) == 2 * 256**3 + 256**2  # one body: a matmul and a scale
  programs = tiny_plan['programs']
  assert programs['dcc_update']['while_loops'] >= 1
  assert programs['dcc_update']['estimate_is_lower_bound']
  assert programs['train_step']['while_loops'] == 0
  assert not programs['train_step']['estimate_is_lower_bound']
  printed = aah_plan.summary(tiny_plan)
  dcc_line = printed.split('  dcc_update:')[1].splitlines()[1]
  assert 'once, whatever the trip count: a lower bound, not a measurement)' in dcc_line
  step_line = printed.split('  train_step:')[1].splitlines()[1]
  assert step_line.endswith('images/s (roofline estimate, not a measurement)'), step_line


@needs_libtpu
@needs_cuda_plugin
def test_gpu_flops_agree_with_the_tpu_compilers_count(tiny_plan, tiny_gpu_plan):
  """Same per-device batch, same program: the flops taken from the unoptimised HLO for the
  GPU plan match libtpu's count. 5 %: the two analyses count convolutions and matmuls alike
  and differ only in elementwise ops (measured 1.6 % apart here), while a wrong batch (2×)
  or a lost backward pass (÷3) would be far outside."""
  gpu = tiny_gpu_plan['programs']['train_step']['flops_per_device']
  tpu = tiny_plan['programs']['train_step']['flops_per_device']
  assert abs(gpu - tpu) <= 0.05 * tpu, (gpu, tpu)


@pytest.mark.parametrize('which', [
    pytest.param('tiny_plan', marks=needs_libtpu),
    pytest.param('tiny_gpu_plan', marks=needs_cuda_plugin)])
def test_tiny_step_keeps_the_declared_shardings(which, request):
  planned = request.getfixturevalue(which)
  compiled = planned['compiled']['train_step']
  assert planned['similarity'] == 'grouped' and planned['num_groups'] == 48  # the default
  (state_in, batch_in, summary_in), _ = compiled.input_shardings
  state_out, metrics_out = compiled.output_shardings
  for state in (state_in, state_out):  # B and the group ids: split over the chips by rows
    assert state.B.spec == state.db_labels.spec == P('data')
    for sharding in jax.tree.leaves(state.replace(B=None, db_labels=None)):
      assert sharding.is_fully_replicated, sharding  # the rest of the state: on every chip
  for sharding in jax.tree.leaves((summary_in, metrics_out)):
    assert sharding.is_fully_replicated, sharding
  # The batch: split over the chips. 'index' (ω) is not read by the grouped step (quant takes
  # B_Ω by position), so jit drops it and reports no sharding.
  assert batch_in['index'] is None
  for name, sharding in batch_in.items():
    assert name == 'index' or sharding.spec == P('data'), name
  # Each chip holds N/chips rows of B (960 over 4 or 8: no padding), and no program array
  # has all N rows (the step never reads B: it takes the summary).
  N, k = planned['num_database'], tiny.get_config().bits
  hlo_text = compiled.as_text()
  assert f'f32[{N // planned["devices"]},{k}]' in hlo_text
  assert f'[{N},{k}]' not in hlo_text and f'[{N}]' not in hlo_text
  # No chip gathers the image batch: its per-device argument is its own slice, and no
  # all-gather in the optimised HLO has the global image batch's shape.
  image = tiny.get_config().image_size
  pixel = {'bfloat16': 'bf16', 'float32': 'f32'}[planned['model_dtype']]  # image_dtype 'auto'
  assert f'{pixel}[{planned["global_batch"]},{image},{image},3]' not in ''.join(
      line for line in hlo_text.splitlines() if 'all-gather' in line)
  assert f'{pixel}[{PER_CHIP_BATCH},{image},{image},3]' in hlo_text


@needs_libtpu
@needs_cuda_plugin
def test_auto_dtypes_follow_the_planned_platform(tiny_plan, tiny_gpu_plan):
  """configs/default.py's model.dtype and data.image_dtype are 'auto': the TPU plan is
  compiled in bfloat16 (the trunk's convolutions are bf16 in its HLO; the head and losses
  stay float32 by design), the GPU plan in float32."""
  assert tiny.get_config().model.dtype == 'auto'
  assert tiny_plan['model_dtype'] == 'bfloat16' and tiny_gpu_plan['model_dtype'] == 'float32'
  trunk = [line.split('=', 1)[1].split()[0] for line in
           tiny_plan['compiled']['train_step'].as_text().splitlines()
           if ' convolution(' in line and '/trunk/' in line]
  assert trunk and all(result.startswith('bf16[') for result in trunk), trunk
  assert tiny_gpu_plan['programs']['train_step']['peak_flops_per_device'] == (
      plan.GPU_CHIPS['h100'].peak_flops_float32)


HLO = """
  %all-reduce-start = (f32[12,64]{1,0}, f32[64]{0}) all-reduce-start(%a, %b), replica_groups={}
  %all-reduce-done = (f32[12,64]{1,0}, f32[64]{0}) all-reduce-done(%all-reduce-start)
  %ar = bf16[8,8]{1,0} all-reduce(bf16[8,8]{1,0} %c), to_apply=%add
  %all-gather-start = (f32[8,12]{1,0}, f32[32,12]{1,0}) all-gather-start(%u), dimensions={0}
  %all-gather-done = f32[32,12]{1,0} all-gather-done(%all-gather-start)
  %fusion = f32[4]{0} fusion(%all-reduce-done), kind=kLoop, calls=%fused
  %all-gather.8 = f32[128,12]{1,0} all-gather(%p0), channel_id=284, dimensions={0}
  %all-gather.10 = f32[128,12]{1,0} all-gather(%p1), channel_id=284, dimensions={0}
  %all-gather.12 = f32[128,12]{1,0} all-gather(%p2), channel_id=284, dimensions={0}
"""


def test_collectives_count_async_pairs_once_and_sum_result_bytes():
  found = plan.collectives(HLO)
  # all-reduce: (12·64 + 64) float32 once for the async pair, plus 8·8 bf16.
  assert found['all-reduce'] == {'count': 2, 'bytes': (12 * 64 + 64) * 4 + 8 * 8 * 2}
  # all-gather-start's result is (operand, result): the gathered result is 32·12 float32;
  # the three pieces of channel 284 (one all-gather the TPU compiler chained in collective
  # fusions, as it does on v5e:4x4) are one all-gather of 128·12 float32.
  assert found['all-gather'] == {'count': 2, 'bytes': 32 * 12 * 4 + 128 * 12 * 4}
  assert found['reduce-scatter'] == {'count': 0, 'bytes': 0}


def test_bad_topologies_and_missing_libtpu_are_named(monkeypatch):
  with pytest.raises(plan.PlanError, match="'v9x:2x2'"):
    plan.topology_devices('v9x:2x2')
  with pytest.raises(plan.PlanError, match="'v5e'"):
    plan.topology_devices('v5e')
  with pytest.raises(plan.PlanError, match='PARTITIONSxHOSTSxGPUS_PER_HOST'):
    plan.topology_devices('h100:8')
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(plan.PlanError, match=r'libtpu.*\.\[plan\]'):
    plan.topology_devices('v5e:2x2')
  with pytest.raises(plan.PlanError, match=r'CUDA plugin.*\.\[plan\]'):
    plan.topology_devices('h100:1x1x8')


@needs_libtpu
def test_a_shape_libtpu_rejects_is_named():
  with pytest.raises(plan.PlanError, match="'v5e:3x7'"):
    plan.topology_devices('v5e:3x7')


def test_database_shape_without_building_the_dataset():
  config = tiny.get_config()
  assert plan.database_shape(config) == (960, ())
  config.dataset = 'cub200'
  assert plan.database_shape(config) == (5994, ())
  config.dataset = 'nuswide'
  with pytest.raises(plan.PlanError, match='--num_database'):
    plan.database_shape(config)
  assert plan.database_shape(config, 193_734) == (193_734, (21,))


@needs_libtpu
def test_the_tpu_plan_of_an_efficientnet_uses_grouped_convolutions():
  """The depthwise convolution follows the platform a program is lowered for: shifted
  slices on CPU, XLA's grouped convolution in the TPU program planned on this CPU host."""
  config = default_pretrained.get_config()
  grouped = re.compile(r'feature_group_count = (?!1\b)\d+')

  def lowered_encoder(devices):
    decided = precision.resolve_config(config, devices[0].platform)
    programs = plan._programs(decided, Mesh(np.array(devices), ('data',)), 2, 2, 960, ())
    encoder, arguments, _ = programs['encoder']
    return encoder.lower(*arguments).as_text()

  assert grouped.search(lowered_encoder(plan.topology_devices(TOPOLOGY)[0]))
  assert not grouped.search(lowered_encoder(jax.devices()[:1]))


def test_label_groups_of_the_paper_datasets_without_building_them():
  """The grouped form's G for aah-plan: each single-label dataset's class count; where the
  dataset does not fix it (multi-label NUS-WIDE), the error says to pass --num_groups."""
  import importlib  # pylint: disable=g-import-not-at-top
  want = {'cub200': 200, 'aircraft': 100, 'food101': 101, 'nabirds': 555, 'vegfru': 292,
          'stanford_dogs': 120, 'cifar10': 10, 'inat2021': 10_000, 'tiny': 48}
  for name, groups in want.items():
    assert plan.database_groups(importlib.import_module(f'configs.{name}').get_config()) == groups
  with pytest.raises(plan.PlanError, match='--num_groups'):
    plan.database_groups(importlib.import_module('configs.nuswide').get_config())


@needs_libtpu
def test_the_chunked_step_and_dcc_hold_no_array_of_a_chips_rows_beyond_b_at_100_million():
  """The chunked form (docs/method.md §8.1) walks each chip's rows of B 16,384 at a time.
  - Step: its products ask for full precision (``precision.precise_matmul``); at XLA's
    default the TPU compiler rounded S and B to bfloat16 for them and converted the chip's 25
    million rows of B once, before the loop: 763 MiB of temporaries (25 M × 12 bits,
    lane-padded to 16, × 2 bytes).
  - DCC: it sweeps each chunk's rows through all bits before the next chunk; built for all
    the chip's rows first, Q (25 M × 16 × 4 bytes) was 1.49 GiB of 1.86 GiB of temporaries.
  The bound is 64 MiB: a 480 × 16,384 float32 block of S (30 MiB) and four 16,384-row
  float32 chunks lane-padded to 128 (8 MiB each)."""
  config = tiny.get_config()
  config.train.similarity = 'chunked'
  planned = plan.plan(config, TOPOLOGY, PER_CHIP_BATCH, num_database=100_000_000,
                      only=('train_step', 'dcc_update'), keep_compiled=True)
  rows = 100_000_000 // planned['devices']
  for name in ('train_step', 'dcc_update'):
    memory = planned['programs'][name]['memory_per_device']
    assert memory['temporaries'] < 64 * 2**20, (name, memory)
  assert f'bf16[{rows},' not in planned['compiled']['train_step'].as_text()
