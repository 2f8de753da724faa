"""Stopping at a step boundary on the preemption notice (SIGTERM) or Ctrl-C (SIGINT).

Single process: a SIGTERM or SIGINT handler sets a flag that the train loop reads after each
step; a second Ctrl-C stops at once (KeyboardInterrupt), as a user pressing it twice means.
Several processes: every host must save the same step, so the decision goes through
JAX's preemption sync point (the coordination service turns a SIGTERM on any host into
the same answer on all of them at the same step). A Ctrl-C there is turned into a SIGTERM
to its own process, so it takes the same path; a second Ctrl-C stops that process at once.
"""

import os
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


SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
  """Context manager: inside it, SIGTERM or SIGINT asks the run to stop at the next step
  boundary (a second SIGINT interrupts at once)."""

  def __init__(self):
    self._requested = threading.Event()
    self._previous = {}

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self._requested.is_set():
      raise KeyboardInterrupt  # the second Ctrl-C
    self._requested.set()

  def _on_sigint_of_several(self, signum, frame):
    del signum, frame
    if self._requested.is_set():
      raise KeyboardInterrupt  # the second Ctrl-C
    self._requested.set()
    os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption notifier tells every process

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self
    if jax.process_count() == 1:
      self._previous = {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}
    else:  # SIGTERM stays with JAX's preemption notifier
      self._previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._on_sigint_of_several)}
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def requested(self, step: int) -> bool:
    """Whether to save and stop after ``step`` (the same answer on every process)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()
