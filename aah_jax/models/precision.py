"""Number formats of the network: the compute dtypes a config names, and the dtype that
parameters, BatchNorm statistics, pooled features, the tanh head and the losses keep."""

import copy

import jax
import jax.numpy as jnp

# config.model.dtype → compute dtype of convolutions and matmuls. 'float64' is a CPU
# reference mode (needs JAX_ENABLE_X64=1): the equivalence tests run in it so that
# layout-dependent summation orders differ far below their tolerances.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}


# 'auto' (config.model.dtype and config.data.image_dtype) → the dtype for the platform the
# programs are compiled for: bfloat16 on TPU, where aah-plan measured the paper's CUB-200
# step at 0.65× the float32 one in an HBM-bound roofline estimate and 0.61× its memory per
# chip (README, "Before renting a pod"); float32 elsewhere (CPU: the reference; GPU: XLA's
# default precision already runs float32 convolutions as TF32). Decided once, at the start,
# and stored in the run's config, so that a resumed run checks the dtype it computed in.
AUTO = 'auto'
AUTO_DTYPES = {'tpu': 'bfloat16'}


def resolve_config(config, platform: str):
  """config with its 'auto' dtypes decided for platform ('cpu', 'gpu', 'tpu'); the same
  config object when nothing is 'auto'."""
  if AUTO not in (config.model.dtype, config.data.image_dtype):
    return config
  config = copy.deepcopy(config)
  chosen = AUTO_DTYPES.get(platform, 'float32')
  if config.model.dtype == AUTO:
    config.model.dtype = chosen
  if config.data.image_dtype == AUTO:
    config.data.image_dtype = chosen
  return config


def compute_dtype(name: str):
  """The dtype config.model.dtype names; float64 only with 64-bit JAX enabled."""
  if name == AUTO:
    raise ValueError("config.model.dtype='auto' is decided for the platform by "
                     'precision.resolve_config (run.prepare and aah-plan call it) first')
  if name not in DTYPES:
    raise ValueError(f'config.model.dtype={name!r}; choose one of {sorted(DTYPES) + [AUTO]}')
  if name == 'float64' and not jax.config.jax_enable_x64:
    raise ValueError("config.model.dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 "
                     "(or jax.config.update('jax_enable_x64', True)) before anything runs")
  return DTYPES[name]


def accumulation_dtype(dtype):
  """float32 under bfloat16 or float32 compute, float64 under float64."""
  return jnp.promote_types(dtype, jnp.float32)


def precise_matmul(a, b):
  """a @ b with its operands kept in their dtype on every platform (Precision.HIGHEST).

  XLA's default precision rounds float32 operands to bfloat16 on TPU (one MXU pass) and to
  TF32 on NVIDIA GPUs since Ampere; CPU computes in float32 either way. The losses and the
  DCC form their products with this (group counts and K = BᵀB up to N, −r in S, UᵀU), so
  that those sums keep about float32's accuracy on a pod, and so that the TPU compiler keeps no
  bfloat16 copy of a chip's rows of B for a loop over them. Each has a k-wide side (k bits),
  so it is memory-bound on an accelerator and the extra passes cost little (not measured on
  a TPU; the network's products keep config.model.dtype and the default precision).
  """
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
