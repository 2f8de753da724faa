"""Joining a multi-process run: ``jax.distributed.initialize`` before any computation.

On a Cloud TPU pod, under SLURM, or with Open MPI, JAX finds the coordinator, the number
of processes and this process's id itself; elsewhere (e.g. several processes on one
machine) they are given. On CPU the processes' collectives go over gloo.
"""

from typing import Optional

from absl import logging
import jax


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None):
  """Connects this process to the others; afterwards jax.devices() spans all of them."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('process %d of %d: %d local devices, %d in all', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
