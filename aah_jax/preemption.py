"""Stopping at a step boundary on the preemption notice (SIGTERM).

Single process: a SIGTERM handler sets a flag that the train loop reads after each step.
Several processes: every host must save the same step, so the decision goes through
JAX's preemption sync point (the coordination service turns a SIGTERM on any host into
the same answer on all of them at the same step).
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run saved a checkpoint at ``step`` and stopped on a preemption notice."""

  def __init__(self, step: int):
    super().__init__(f'preempted: saved the checkpoint of step {step} and stopped; rerun the '
                     f'same command to continue')
    self.step = step


class StopSignal:
  """Context manager: inside it, SIGTERM asks the run to stop at the next step boundary."""

  def __init__(self):
    self._requested = threading.Event()
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self._requested.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def requested(self, step: int) -> bool:
    """Whether to save and stop after ``step`` (the same answer on every process)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()
