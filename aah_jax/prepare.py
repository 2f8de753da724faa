"""`python -m aah_jax.prepare ...`, the documented spelling of aah-prepare
(aah_jax/cli/aah_prepare.py)."""

from aah_jax.cli.aah_prepare import main, run  # noqa: F401  (the command's names)

if __name__ == '__main__':
  run()
