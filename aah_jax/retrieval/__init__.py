"""Binary codes and search: sign codes, Hamming ranking and its metrics (mAP, precision@k),
the on-disk index and the result gallery. May import ``aah_jax.common``."""
