"""Images in: the tfds builders (``datasets``), image decoding and image files, and the grain
input pipelines. May import ``aah_jax.common``."""
