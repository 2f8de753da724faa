"""Number formats of the network: the compute dtypes a config names, and the dtype that
parameters, BatchNorm statistics, pooled features, the tanh head and the losses keep."""

import jax
import jax.numpy as jnp

# config.model.dtype → compute dtype of convolutions and matmuls. 'float64' is a CPU
# reference mode (needs JAX_ENABLE_X64=1): the equivalence tests run in it so that
# layout-dependent summation orders differ far below their tolerances.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}


def compute_dtype(name: str):
  """The dtype config.model.dtype names; float64 only with 64-bit JAX enabled."""
  if name not in DTYPES:
    raise ValueError(f'config.model.dtype={name!r}; choose one of {sorted(DTYPES)}')
  if name == 'float64' and not jax.config.jax_enable_x64:
    raise ValueError("config.model.dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 "
                     "(or jax.config.update('jax_enable_x64', True)) before anything runs")
  return DTYPES[name]


def accumulation_dtype(dtype):
  """float32 under bfloat16 or float32 compute, float64 under float64."""
  return jnp.promote_types(dtype, jnp.float32)
