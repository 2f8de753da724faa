"""`python -m aah_jax.main --config=configs/default.py --workdir=DIR`, the documented command
for training: the aah-train program of aah_jax/cli/aah_train.py."""

from aah_jax.cli.aah_train import main, run, summary  # noqa: F401  (the command's names)

if __name__ == '__main__':
  run()
