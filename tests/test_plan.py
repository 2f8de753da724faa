"""aah-plan: the tiny config's programs compiled for a TPU topology by libtpu's compiler on
this CPU host (compile-only devices), and the HLO collective counting it reports."""

import importlib.util
import re

import jax
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np
import pytest

from aah_jax import plan
from configs import default_pretrained, tiny

TOPOLOGY, PER_CHIP_BATCH = 'v5e:2x2', 8
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]')")


@pytest.fixture(scope='module')
def tiny_plan():
  return plan.plan(tiny.get_config(), TOPOLOGY, PER_CHIP_BATCH, per_chip_eval_batch=16,
                   keep_compiled=True)


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


@needs_libtpu
def test_tiny_step_keeps_the_declared_shardings(tiny_plan):
  compiled = tiny_plan['compiled']['train_step']
  (state_in, batch_in), _ = compiled.input_shardings
  state_out, metrics_out = compiled.output_shardings
  for sharding in jax.tree.leaves((state_in, state_out, metrics_out)):
    assert sharding.is_fully_replicated, sharding  # the state and metrics: on every chip
  for name, sharding in batch_in.items():
    assert sharding.spec == P('data'), name  # the batch: split over the chips
  # No chip gathers the image batch: its per-device argument is its own slice, and no
  # all-gather in the optimised HLO has the global image batch's shape.
  hlo = compiled.as_text()
  image = tiny.get_config().image_size
  assert f'f32[32,{image},{image},3]' not in ''.join(
      line for line in hlo.splitlines() if 'all-gather' in line)
  assert f'f32[{PER_CHIP_BATCH},{image},{image},3]' in hlo


HLO = """
  %all-reduce-start = (f32[12,64]{1,0}, f32[64]{0}) all-reduce-start(%a, %b), replica_groups={}
  %all-reduce-done = (f32[12,64]{1,0}, f32[64]{0}) all-reduce-done(%all-reduce-start)
  %ar = bf16[8,8]{1,0} all-reduce(bf16[8,8]{1,0} %c), to_apply=%add
  %all-gather-start = (f32[8,12]{1,0}, f32[32,12]{1,0}) all-gather-start(%u), dimensions={0}
  %all-gather-done = f32[32,12]{1,0} all-gather-done(%all-gather-start)
  %fusion = f32[4]{0} fusion(%all-reduce-done), kind=kLoop, calls=%fused
"""


def test_collectives_count_async_pairs_once_and_sum_result_bytes():
  found = plan.collectives(HLO)
  # all-reduce: (12·64 + 64) float32 once for the async pair, plus 8·8 bf16.
  assert found['all-reduce'] == {'count': 2, 'bytes': (12 * 64 + 64) * 4 + 8 * 8 * 2}
  # all-gather-start's result is (operand, result): the gathered result is 32·12 float32.
  assert found['all-gather'] == {'count': 1, 'bytes': 32 * 12 * 4}
  assert found['reduce-scatter'] == {'count': 0, 'bytes': 0}


def test_bad_topologies_and_missing_libtpu_are_named(monkeypatch):
  with pytest.raises(plan.PlanError, match="'v9x:2x2'"):
    plan.topology_devices('v9x:2x2')
  with pytest.raises(plan.PlanError, match="'v5e'"):
    plan.topology_devices('v5e')
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(plan.PlanError, match=r'\.\[tpu\]'):
    plan.topology_devices('v5e:2x2')


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
    programs = plan._programs(config, Mesh(np.array(devices), ('data',)), 2, 2, 960, ())
    encoder, arguments, _ = programs['encoder']
    return encoder.lower(*arguments).as_text()

  assert grouped.search(lowered_encoder(plan.topology_devices(TOPOLOGY)[0]))
  assert not grouped.search(lowered_encoder(jax.devices()[:1]))
