"""One writer per run folder.

A training run, ``aah-eval`` and ``aah-explain`` write checkpoints, logs and reports into
their ``--workdir``; two of them at once garbage-collect each other's checkpoints and
interleave the logs. ``hold(workdir, what)`` takes an exclusive OS lock (``flock``) on
``WORKDIR/.aah.lock`` for as long as the writer runs: the OS releases it when the holder
exits or dies, so a killed run never leaves a stale lock. The file records the holder (host,
pid, what, since) for the message a second writer gets. In a multi-process run process 0
takes the lock once and tells the others whether it got it, so that every process stops
with the same message. Folders on object stores (``gs://…``) cannot be locked this way and
are not (logged).
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

LOCK_FILE = '.aah.lock'


class WorkdirBusy(RuntimeError):
  """Another process writes into the run folder (the message names it)."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      held = json.load(f)
    return (f'{held["what"]} (pid {held["pid"]} on {held["host"]}, since {held["since"]})')
  except (OSError, ValueError, KeyError):
    return 'another process (its details are not written yet)'


def _try_lock(workdir: str, what: str):
  """(file descriptor holding the lock, None) or (None, who holds it)."""
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None, _holder(path)
  record = {'what': what, 'pid': os.getpid(), 'host': socket.gethostname(),
            'since': datetime.datetime.now().isoformat(timespec='seconds')}
  os.ftruncate(fd, 0)
  os.write(fd, json.dumps(record).encode())
  return fd, None


@contextlib.contextmanager
def hold(workdir: str, what: str, create: bool = True):
  """Holds the run folder's lock for the block; WorkdirBusy at once if another holds it.
  create: make the folder if it is missing (else a missing folder is left to the caller's
  own error, unlocked: there is nothing in it to protect)."""
  if '://' in workdir:
    logging.info('%s is not a local folder: no lock against a second writer', workdir)
    yield
    return
  if create:
    os.makedirs(workdir, exist_ok=True)
  elif not os.path.isdir(workdir):
    yield
    return
  fd, holder = (None, None)
  if jax.process_index() == 0:
    fd, holder = _try_lock(workdir, what)
  got = fd is not None
  if jax.process_count() > 1:
    got = bool(multihost_utils.broadcast_one_to_all(np.int32(got)))
  if not got:
    raise WorkdirBusy(f'{os.path.abspath(workdir)} is in use by '
                      f'{holder or "a process that process 0 named in its log"}: one writer '
                      f'per run folder; wait for it to end, or use another --workdir')
  try:
    yield
  finally:
    if fd is not None:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
