"""What the tests that start whole runs (python -m aah_jax.main) share: the repository root,
the environment of a one-device run, and the run's saved checkpoints."""

import os
import pathlib

import orbax.checkpoint as ocp

REPO = pathlib.Path(__file__).resolve().parents[1]


def one_device_env() -> dict:
  return {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}


def checkpoint_steps(workdir) -> list[int]:
  root = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


def final_state(workdir) -> dict:
  """The newest checkpoint's state tree, as saved."""
  path = pathlib.Path(workdir) / 'checkpoints' / str(checkpoint_steps(workdir)[-1]) / 'state'
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path)
