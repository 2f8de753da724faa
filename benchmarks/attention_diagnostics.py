"""What the attention path of trained runs does: part-map diversity, where u's signal comes from,
W's blocks, and the hash and quantisation terms over the outer iterations.

    .venv/bin/python benchmarks/attention_diagnostics.py --workdirs=RUN[,RUN…] [--images=256]

For each run (its newest checkpoint), on the first --images images of the query split, eval mode:

- attention maps A (n, h, w, M): each map as a distribution over the h·w positions,
  p_m = A_m / Σ A_m. ``entropy``: H(p_m) / log(h·w), averaged over images and maps (1: spread
  evenly, no part localised; 0: one position); ``overlap``: Σ min(p_m, p_m') over the positions,
  averaged over images and pairs m ≠ m' (1: the M maps are the same map); ``dead``: the share
  of (image, map) pairs whose map is all zero.
- v = (x_1 … x_M, g): ``local share of ‖v‖²``: ‖x‖² / ‖v‖²; and of u's pre-activation
  z = v Wᵀ = Σ_blocks v_b W_bᵀ: ``local share of var z``: the variance over images of the local
  blocks' sum, over the variance of z (per bit, averaged), with ``global`` the same for g's block.
- W's blocks (x_1 … x_M, g; C4 columns each): each block's Frobenius norm over the norm W's
  initialisation U(±1/√D) has in expectation (√(k·C4 / (3D))).
- from the run's results.json: hash and quant at each outer iteration (means over its steps).
- W over the outer iterations, from every checkpoint the run kept (`--config.checkpoint.keep`
  at least the outer iterations keeps them all): per checkpoint, the parts' and g's blocks'
  norms over their initial expectation, and the update since the previous kept checkpoint,
  ‖ΔW_block‖ / ‖W_block‖ (the parts' blocks taken together).
"""

import argparse
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from aah_jax.cli import common
from aah_jax.data import datasets, input_pipeline


def attention_numbers(maps: np.ndarray) -> dict:
  """maps (n, h, w, M) ≥ 0 → entropy, overlap and dead share (see the module docstring)."""
  n, h, w, m = maps.shape
  flat = maps.reshape(n, h * w, m).astype(np.float64)
  mass = flat.sum(axis=1, keepdims=True)
  alive = mass[:, 0, :] > 0
  p = np.where(mass > 0, flat / np.where(mass > 0, mass, 1.0), 0.0)
  with np.errstate(divide='ignore', invalid='ignore'):
    entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / np.log(h * w)
  overlaps = [np.minimum(p[:, :, a], p[:, :, b]).sum(axis=1)[alive[:, a] & alive[:, b]]
              for a in range(m) for b in range(a + 1, m)]
  overlaps = np.concatenate(overlaps) if overlaps else np.zeros(0)
  return {'entropy': float(entropy[alive].mean()) if alive.any() else float('nan'),
          'overlap': float(overlaps.mean()) if overlaps.size else float('nan'),
          'dead': float(1.0 - alive.mean())}


def init_block_norm(W: np.ndarray, c4: int) -> float:
  """The Frobenius norm one C4-column block of W has in expectation under U(±1/√D)."""
  return np.sqrt(W.shape[0] * c4 / (3.0 * W.shape[1]))


def feature_numbers(local: np.ndarray, g: np.ndarray, W: np.ndarray) -> dict:
  """Shares of ‖v‖² and of var(z) from the local blocks and from g; W's block norms."""
  v = np.concatenate([local, g], axis=1) if local is not None else g
  c4 = g.shape[1]
  var_z = (v @ W.T).var(0)
  numbers = {'global share of var z': float(np.mean((g @ W[:, -c4:].T).var(0) / var_z))}
  blocks = W.reshape(W.shape[0], -1, c4)  # (k, M + 1, C4)
  block_norms = np.linalg.norm(blocks, axis=(0, 2)) / init_block_norm(W, c4)
  numbers['W block norm / init, g'] = float(block_norms[-1])
  if local is not None:
    numbers['local share of ‖v‖²'] = float((local ** 2).sum() / (v ** 2).sum())
    z_local = local @ W[:, :-c4].T
    numbers['local share of var z'] = float(np.mean(z_local.var(0) / var_z))
    numbers['W block norm / init, parts (mean)'] = float(block_norms[:-1].mean())
  return numbers


def w_history(workdir: str, c4: int) -> list:
  """(step, parts' norm / init, g's norm / init, parts' ‖ΔW‖/‖W‖, g's) per kept checkpoint."""
  root = os.path.join(workdir, 'checkpoints')
  steps = sorted(int(name) for name in os.listdir(root) if name.isdigit())
  rows, previous = [], None
  with ocp.StandardCheckpointer() as checkpointer:
    for step in steps:
      W = np.asarray(checkpointer.restore(os.path.join(root, str(step), 'state'))['params']
                     ['attribute_codec']['W'], np.float64)
      blocks = (W[:, :-c4], W[:, -c4:])
      norms = [np.linalg.norm(b) / (init_block_norm(W, c4) * np.sqrt(b.shape[1] // c4))
               for b in blocks]
      updates = ([np.linalg.norm(b - p) / np.linalg.norm(b) for b, p in zip(blocks, previous)]
                 if previous is not None else [float('nan')] * 2)
      rows.append((step, *norms, *updates))
      previous = blocks
  return rows


def run_numbers(workdir: str, num_images: int) -> dict:
  restored = common.restore_run(workdir)
  run = restored.run
  split = datasets.dataset_entry(run.config.dataset).query_split
  source = run.builder.as_data_source(split)
  count = min(num_images, len(source))
  images = input_pipeline.normalize(np.stack([
      input_pipeline.resize_center_crop(np.asarray(source[i]['image']), run.config.image_size)
      for i in range(count)]))
  variables = jax.device_get(restored.variables)
  _, state = jax.jit(lambda v, x: run.model.apply(v, x, train=False, mutable=['intermediates']))(
      variables, images)
  inter = {name: np.asarray(value[0]) for name, value in state['intermediates'].items()}
  numbers = {'step': restored.step}
  if 'attention_maps' in inter:
    numbers.update(attention_numbers(inter['attention_maps']))
  numbers.update(feature_numbers(inter.get('local_features'), inter['global_feature'],
                                 np.asarray(variables['params']['attribute_codec']['W'])))
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  numbers['map_learned_db'] = results['map_learned_db']
  numbers['history'] = [(h['iteration'], h['hash'], h['quant']) for h in results['history']]
  if 'local_features' in inter:
    numbers['w_history'] = w_history(workdir, inter['global_feature'].shape[1])
  return numbers


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdirs', required=True, help='comma-separated run folders')
  parser.add_argument('--images', type=int, default=256)
  args = parser.parse_args()
  workdirs = args.workdirs.split(',')
  for workdir in workdirs:
    if not os.path.isfile(os.path.join(workdir, 'results.json')):
      raise SystemExit(f'--workdirs: {workdir} has no results.json (not a finished run)')
  runs = {workdir: run_numbers(workdir, args.images) for workdir in workdirs}
  names = sorted({name for numbers in runs.values() for name in numbers}
                 - {'history', 'w_history'})
  width = max(len(os.path.basename(w.rstrip('/'))) for w in workdirs) + 2
  print(' ' * 36 + ''.join(f'{os.path.basename(w.rstrip("/")):>{width}}' for w in workdirs))
  for name in names:
    cells = ''.join(f'{runs[w].get(name, float("nan")):>{width}.3f}' for w in workdirs)
    print(f'{name:36s}{cells}')
  print('\nhash / quant per outer iteration:')
  for workdir in workdirs:
    history = runs[workdir]['history']
    print(f'{os.path.basename(workdir.rstrip("/"))}: ' + ' '.join(
        f'{i}:{h:.2f}/{q:.2f}' for i, h, q in history))
  for workdir in workdirs:
    rows = runs[workdir].get('w_history')
    if rows:
      print(f'\nW of {os.path.basename(workdir.rstrip("/"))} per kept checkpoint: step, norm / '
            'init (parts, g), ‖ΔW‖/‖W‖ since the previous one (parts, g)')
      for row in rows:
        print(f'{row[0]:6d}  {row[1]:.3f} {row[2]:.3f}  {row[3]:.4f} {row[4]:.4f}')


if __name__ == '__main__':
  main()
