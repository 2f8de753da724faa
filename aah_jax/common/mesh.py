"""How arrays are laid out over devices and processes: one 1-D 'data' mesh of every device;
batches sharded on it, everything else replicated."""

import collections
from typing import Iterable, Iterator

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh named 'data' over all devices of all processes."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def rows_sharded(mesh, num_rows: int) -> NamedSharding:
  """Rows split over 'data' where they divide evenly over the devices, else replicated."""
  return batch_sharded(mesh) if num_rows % mesh.size == 0 else replicated(mesh)


def global_batch_array(local_batch: dict, sharding) -> dict:
  """This process's rows of a global batch → global arrays sharded on 'data'."""
  def to_global(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)
  return jax.tree.map(to_global, local_batch)


def prefetch_to_device(local_batches: Iterable[dict], sharding, size: int = 2) -> Iterator[dict]:
  """Global batch arrays of local_batches, ``size`` ahead: their host-to-device copies
  (asynchronous) overlap the steps that run before them."""
  queue = collections.deque()
  for local in local_batches:
    queue.append(global_batch_array(local, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def to_host(x) -> np.ndarray:
  """A replicated global array as a NumPy array, also where it spans several processes."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))
