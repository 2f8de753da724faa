"""The main job's default: the embedded synthetic fine-grained birds on 2 CPU cores.

Every field, with its default and what it means, is in aah_jax/training/defaults.py (the
library's defaults, which also complete configs saved before a field existed). Variants
import this file and override a few fields.
"""

from aah_jax.training.defaults import get_config  # noqa: F401  (this file's config)
