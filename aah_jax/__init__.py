"""aah_jax: attribute-aware deep hashing with self-consistency (A²-Net++) in JAX/Flax."""

__version__ = '0.1.0'
