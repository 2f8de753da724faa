"""What a run reports while it trains: a JSON-lines log, TensorBoard scalars, the console.

``WORKDIR/metrics.jsonl`` gets one line per optimiser step (``"kind": "step"``: every loss
term, lr, phase, step time, images/s) and one per outer iteration (``"kind":
"iteration"``: the iteration's means, bit balance, mAPs where evaluated). TensorBoard
event files (tensorboardX: no TensorFlow) go to ``WORKDIR/tensorboard``. Only process 0
writes. A resumed run first drops the lines and events past its checkpoint, so the
logs read as one uninterrupted run.
"""

import json
import math
import os
import time
from typing import Optional

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _complete_lines(path: str) -> list[str]:
  """The file's whole lines: a run killed mid-write leaves its last line unterminated."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [line for line in f if line.endswith('\n') and line.strip()]


def read_metrics(workdir: str, kind: Optional[str] = None) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl (of one kind, if given), in order."""
  records = [json.loads(line) for line in _complete_lines(os.path.join(workdir, METRICS_FILE))]
  return [r for r in records if kind is None or r['kind'] == kind]


def _truncate_after(path: str, step: int):
  """Keeps the records of steps ≤ step (a resumed run rewrites the rest)."""
  if not os.path.exists(path):
    return
  keep = [line for line in _complete_lines(path) if json.loads(line)['step'] <= step]
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.writelines(keep)
  os.replace(tmp, path)


class RunLog:
  """Writes the step and iteration records; a no-op on processes other than 0."""

  def __init__(self, workdir: str, *, enabled: bool, start_step: int, total_steps: int,
               print_every_steps: int, tensorboard: bool = True):
    self._enabled = enabled
    self._total_steps = total_steps
    self._print_every = print_every_steps
    self._start_step, self._start_time = start_step, time.time()
    self._last_time = None
    self._file = self._writer = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    _truncate_after(path, start_step)
    self._file = open(path, 'a')
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # purge_step drops the events a killed run wrote past the checkpoint.
      self._writer = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                   purge_step=start_step + 1 if start_step else None)

  def step(self, step: int, iteration: int, metrics: dict, batch_size: int):
    """One optimiser step's metrics (host floats); prints a progress line now and then."""
    now = time.time()
    seconds = now - (self._last_time or now)
    self._last_time = now
    if not self._enabled:
      return
    record = {'kind': 'step', 'step': step, 'iteration': iteration, **metrics,
              'step_seconds': seconds,
              'images_per_second': batch_size / seconds if seconds > 0 else None}
    self._write(record, 'train')
    if self._print_every and (step % self._print_every == 0 or step == self._total_steps):
      done = step - self._start_step
      eta = (now - self._start_time) / max(done, 1) * (self._total_steps - step)
      rate = f'{record["images_per_second"]:.1f} img/s' if record['images_per_second'] else ''
      print(f'step {step}/{self._total_steps} ({100 * step / self._total_steps:.0f}%) '
            f'loss={metrics["loss"]:.4g} {rate} eta {_duration(eta)}', flush=True)

  def iteration(self, step: int, record: dict):
    if self._enabled:
      self._write({'kind': 'iteration', 'step': step, **record}, 'iteration')

  def _write(self, record: dict, group: str):
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    if self._writer is not None:
      for name, value in record.items():
        if name not in ('kind', 'step') and isinstance(value, (int, float)) and math.isfinite(value):
          self._writer.add_scalar(f'{group}/{name}', value, record['step'])

  def close(self):
    if self._file is not None:
      self._file.close()
    if self._writer is not None:
      self._writer.close()


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'
