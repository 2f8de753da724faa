"""How arrays are laid out over devices and processes: one 1-D 'data' mesh of every device;
batches sharded on it, and in the label-grouped form the database's codes and group ids
(rows padded to a multiple of the devices); everything else replicated."""

import collections
from typing import Iterable, Iterator

import jax
from jax.experimental import multihost_utils
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


def padded_rows(num_rows: int, num_devices: int) -> int:
  """num_rows rounded up to a multiple of num_devices: the rows of an array split evenly over
  'data' (JAX shards only even splits), the last ones padding."""
  return -(-num_rows // num_devices) * num_devices


def rows_to_host(x, num_rows: int) -> np.ndarray:
  """The first num_rows rows of a global array, replicated or split over devices (of one
  process or several: then every process gathers them), as a NumPy array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.sharding.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))[:num_rows]
  return to_host(x)[:num_rows]


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
