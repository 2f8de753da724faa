"""Checkpoints of the label-grouped layout (B and the group ids split over the devices by rows,
padded to a multiple of the devices) restore onto another number of devices."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import pytest

from aah_jax.common import mesh as mesh_lib
from aah_jax.training import checkpoint, train

N, K = 75, 12  # 75 rows: 80 on 8 devices, 78 on 3, 75 on 1


def _state(num_devices: int, seed: int = 0) -> train.TrainState:
  """A grouped-layout state with B's padding rows for num_devices (0, as init_state makes)."""
  rng = np.random.default_rng(seed)
  rows = mesh_lib.padded_rows(N, num_devices)
  pad = lambda x: np.pad(x, [(0, rows - N)] + [(0, 0)] * (x.ndim - 1))
  return train.TrainState(
      step=np.int32(7), params={'w': rng.normal(size=(3, 4)).astype(np.float32)},
      batch_stats={}, opt_state={'trace': np.ones((3, 4), np.float32)},
      B=pad(rng.choice(np.float32([-1, 1]), (N, K))),
      U=rng.normal(size=(16, K)).astype(np.float32),
      db_labels=pad(rng.integers(0, 5, N).astype(np.int32)), negative_weight=np.float32(0.25))


def _placed(state, devices):
  mesh = Mesh(np.array(devices), ('data',))
  return jax.device_put(state, train.state_sharding(mesh, True)), mesh


def _abstract(state, mesh):
  return train.abstract_state(state, mesh, grouped_form=True)


@pytest.mark.parametrize('num_devices', [3, 1, 8])
def test_a_grouped_state_saved_on_8_devices_restores_on_others(tmp_path, num_devices):
  saved, _ = _placed(_state(8), jax.devices())
  assert saved.B.addressable_shards[0].data.shape == (10, K)  # 80 rows over 8 devices
  ckpts = checkpoint.RunCheckpoints(tmp_path, async_save=False)
  ckpts.save(7, saved, {'history': []})
  target, mesh = _placed(_state(num_devices, seed=1), jax.devices()[:num_devices])
  restored = ckpts.restore_state(_abstract(target, mesh))
  ckpts.close()
  rows = mesh_lib.padded_rows(N, num_devices)
  assert restored.B.shape == (rows, K) and restored.db_labels.shape == (rows,)
  assert restored.B.sharding.is_equivalent_to(mesh_lib.batch_sharded(mesh), 2)
  want = jax.device_get(saved)
  np.testing.assert_array_equal(np.asarray(restored.B)[:N], want.B[:N])
  np.testing.assert_array_equal(np.asarray(restored.B)[N:], 0)  # padding rows stay 0
  np.testing.assert_array_equal(np.asarray(restored.db_labels)[:N], want.db_labels[:N])
  for name in ('step', 'U', 'negative_weight'):
    np.testing.assert_array_equal(np.asarray(getattr(restored, name)), getattr(want, name))
  np.testing.assert_array_equal(np.asarray(restored.params['w']), want.params['w'])


def test_a_state_of_another_shape_is_refused_naming_the_field(tmp_path):
  saved, mesh = _placed(_state(8), jax.devices())
  ckpts = checkpoint.RunCheckpoints(tmp_path, async_save=False)
  ckpts.save(7, saved, {'history': []})
  other = saved.replace(U=jnp.zeros((16, K + 1)))  # another code length: not padding
  # (a ValueError, not DamagedCheckpoint: the step is intact, and no fallback should hide it)
  with pytest.raises(ValueError, match=r'U: saved \(16, 12\), expected '
                                                          r'\(16, 13\)'):
    ckpts.restore_state(_abstract(other, mesh))
  ckpts.close()


def test_the_tools_read_b_a_block_of_rows_at_a_time_and_the_network_alone(tmp_path):
  """What aah-eval, aah-index and aah-explain read (cli.common.restore_run): B's first N
  rows in blocks, from the state saved on 8 devices with its padding, and the network's
  variables without B, U or the optimiser state."""
  saved, _ = _placed(_state(8), jax.devices())
  ckpts = checkpoint.RunCheckpoints(tmp_path, async_save=False)
  ckpts.save(7, saved, {'history': []})
  want = jax.device_get(saved)
  blocks = list(ckpts.saved_rows(7, 'B', N, block_rows=16))
  assert [len(block) for block in blocks] == [16, 16, 16, 16, 11]
  np.testing.assert_array_equal(np.concatenate(blocks), want.B[:N])
  with pytest.raises(ValueError, match='B has 80 rows, not the 81 asked for'):
    list(ckpts.saved_rows(7, 'B', 81))
  network = ckpts.restore_network(7)
  assert sorted(network) == ['batch_stats', 'params']
  np.testing.assert_array_equal(np.asarray(network['params']['w']), want.params['w'])
  ckpts.close()


def test_a_damaged_array_file_is_named_when_b_is_read_by_rows(tmp_path):
  saved, _ = _placed(_state(8), jax.devices())
  ckpts = checkpoint.RunCheckpoints(tmp_path, async_save=False)
  ckpts.save(7, saved, {'history': []})
  state = tmp_path / checkpoint.CHECKPOINT_DIR / '7' / 'state'
  for data in state.rglob('d/*'):  # the arrays' bytes, in OCDBT's data files
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  with pytest.raises(checkpoint.DamagedCheckpoint, match=f'step 7 cannot be read: {state}/B'):
    list(ckpts.saved_rows(7, 'B', N))
  ckpts.close()
