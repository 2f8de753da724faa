"""The Flax train step against a PyTorch step written the PyTorch way: the same SGD steps from
the same weights on the same batches, and the loss terms of both at every step.

    .venv/bin/python benchmarks/reference_curves.py [--steps=50]

Network: configs/default.py's (the main job's: small CNN, 32 px, k = 12, M = 12, image
decoders on), batch 64. The PyTorch side is tests/torch_reference.py (an independent build from
docs/method.md), its weights copied from the Flax initial variables; its step is
``zero_grad → forward → Σ weight·term → backward → SGD(momentum, weight_decay).step →
LambdaLR.step``, with the attribute codec in its own parameter group at the config's lr
multiplier. The Flax step is ``train.train_step`` (explicit form), jitted.

Both read the same database (1,000 items, 16 classes, k-bit ±1 codes B held fixed: no DCC
sweep, which tests/test_adsh.py checks against NumPy), the same Ω of 320 items and the same
batches (a fixed permutation of Ω per epoch), the same S rows (+1 / −r, r from Ω × database),
and the same schedule: 5 steps an outer iteration and 10 iterations, so that phase 2 (rec on,
img ×10) starts at step 25 and the lr drops ×0.1 at step 45.

Runs it twice: in float32 (the target: every term within 1 % of PyTorch's at every step) and,
in a child process, in float64 in both frameworks, which tells a difference of function (it would
show in float64 too) from float32 rounding that the training dynamics amplify (each float32
curve then strays from the float64 one as far as the two float32 curves from each other).
Prints the total loss of each step and, per term, the largest relative gap over the steps.
"""

import argparse
import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'tests'))

import torch  # noqa: E402
import torch_reference  # noqa: E402  (tests/torch_reference.py)

from aah_jax.common.normalization import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from aah_jax.training import adsh, train  # noqa: E402
from configs import default  # noqa: E402

NUM_DATABASE, NUM_CLASSES, NUM_SAMPLES, STEPS_PER_ITERATION = 1000, 16, 320, 5
# float32's rounding of one value (2⁻²⁴ ≈ 6e-8): the float64 run is repeated from initial
# parameters moved by this relative amount, to measure how the dynamics amplify such a difference.
PERTURBATION = 6e-8


def _config(dtype: str):
  config = default.get_config()
  config.model.dtype = dtype
  config.data.image_dtype = dtype
  config.train.num_samples = NUM_SAMPLES
  config.train.epochs = 1  # 320 / 64 = 5 steps an outer iteration
  config.train.num_iterations = 10
  config.train.similarity = 'explicit'
  return config


def _data(config, rng):
  """Database labels, ±1 codes B, Ω, and per-class images (a class pattern plus noise)."""
  size = config.image_size
  labels = rng.integers(0, NUM_CLASSES, NUM_DATABASE)
  patterns = rng.normal(size=(NUM_CLASSES, size, size, 3))
  omega = rng.choice(NUM_DATABASE, NUM_SAMPLES, replace=False)
  images = patterns[labels[omega]] + rng.normal(size=(NUM_SAMPLES, size, size, 3))
  B = rng.choice([-1.0, 1.0], (NUM_DATABASE, config.bits))
  return labels, B, omega, images


def _batches(num_steps, batch_size, rng):
  """Positions in Ω of each step's batch: a fresh permutation of Ω every epoch."""
  batches = []
  while len(batches) < num_steps:
    order = rng.permutation(NUM_SAMPLES)
    batches += [order[i:i + batch_size] for i in range(0, NUM_SAMPLES, batch_size)]
  return batches[:num_steps]


def _phase_weights(config, phase):
  return {name: weights[phase - 1] for name, weights in train.loss_weights(config).items()}


def flax_curve(config, data, batches, dtype, perturbation: float = 0.0):
  """(initial variables, r, each step's terms); perturbation: every initial parameter times
  1 + perturbation·N(0, 1), to measure how fast the dynamics amplify a small difference."""
  labels, B, omega, images = data
  model, schedule, tx = train.network_and_optimizer(config, 1)
  state = train.init_state(jax.random.key(config.seed), model, tx, image_size=config.image_size,
                           db_labels=labels, num_samples=NUM_SAMPLES)
  if perturbation:
    noise = np.random.default_rng(1)
    state = state.replace(params=jax.tree.map(
        lambda p: p * (1 + perturbation * noise.standard_normal(p.shape)).astype(p.dtype),
        state.params))
  r = adsh.negative_weight(labels[omega], labels, config.loss.soft_similarity)
  state = state.replace(B=np.asarray(B, dtype), negative_weight=np.asarray(r, dtype))
  initial = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   weights=train.loss_weights(config), gamma=config.loss.gamma))
  curve = []
  for positions in batches:
    batch = {'image': images[positions].astype(dtype), 'label': labels[omega[positions]],
             'index': omega[positions], 'position': positions.astype(np.int32)}
    state, metrics = step(state, batch)
    curve.append({name: float(value) for name, value in jax.device_get(metrics).items()
                  if name not in ('lr', 'phase')} | {'phase': int(metrics['phase'])})
  return initial, float(r), curve


def torch_curve(config, data, batches, initial, r, dtype):
  labels, B, omega, images = data
  torch_dtype = getattr(torch, dtype)
  mc = config.model
  net = torch_reference.A2NetPlusPlus(
      mc.backbone, config.bits, config.image_size, num_maps=mc.num_attention_maps,
      use_attention=mc.use_attention, use_image_decoder=mc.use_image_decoder,
      embed_dim=mc.embed_dim, base_channels=mc.generator_base_channels).to(torch_dtype)
  torch_reference.load_flax_variables(net, initial)
  oc = config.optim
  groups = {}
  for name, parameter in net.named_parameters():
    groups.setdefault(name.split('.')[0], []).append(parameter)
  optimizer = torch.optim.SGD(
      [{'params': p, 'lr': oc.learning_rate * oc.lr_multipliers.get(name, 1.0)}
       for name, p in groups.items()],
      lr=oc.learning_rate, momentum=oc.momentum, weight_decay=oc.weight_decay)
  decay_step = int(oc.lr_decay_fraction * config.train.num_iterations) * STEPS_PER_ITERATION
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda step: oc.lr_decay_factor if step >= decay_step else 1.0)
  phase_start = int(config.loss.phase_boundaries[0] * config.train.num_iterations) * \
      STEPS_PER_ITERATION
  mean = torch.tensor(IMAGENET_MEAN, dtype=torch_dtype)[:, None, None]
  std = torch.tensor(IMAGENET_STD, dtype=torch_dtype)[:, None, None]
  B = torch.tensor(B, dtype=torch_dtype)
  db_labels = torch.tensor(labels)
  net.train()
  curve = []
  for step, positions in enumerate(batches):
    x = torch.tensor(images[positions].transpose(0, 3, 1, 2), dtype=torch_dtype)
    index = torch.tensor(omega[positions])
    S = torch.where(db_labels[index][:, None] == db_labels[None, :], 1.0, -r).to(torch_dtype)
    phase = 2 if step >= phase_start else 1
    weights = _phase_weights(config, phase)
    optimizer.zero_grad()
    out = net(x)
    terms = torch_reference.loss_terms(out, B, S, index, x * std + mean, gamma=config.loss.gamma,
                                       bits=config.bits)
    loss = sum(weights[name] * terms[name] for name in weights)
    loss.backward()
    optimizer.step()
    scheduler.step()
    curve.append({name: float(value.detach()) for name, value in terms.items()} |
                 {'loss': float(loss.detach()), 'phase': phase})
  return curve


def curves(dtype: str, num_steps: int, perturbation: float = 0.0) -> dict:
  """{'flax': [...], 'torch': [...], 'r': r}: each step's terms and loss from both frameworks;
  with perturbation, also 'flax_perturbed' (``flax_curve``'s)."""
  config = _config(dtype)
  rng = np.random.default_rng(0)
  data = _data(config, rng)
  batches = _batches(num_steps, config.train.batch_size, rng)
  initial, r, flax = flax_curve(config, data, batches, dtype)
  result = {'flax': flax, 'torch': torch_curve(config, data, batches, initial, r, dtype), 'r': r}
  if perturbation:
    result['flax_perturbed'] = flax_curve(config, data, batches, dtype, perturbation)[2]
  return result


def _gaps(a, b, names):
  """term → [|a − b| / |b| at each step]."""
  return {name: [abs(x[name] - y[name]) / abs(y[name]) for x, y in zip(a, b)] for name in names}


def _worst(values):
  worst = int(np.argmax(values))
  first_over = next((i + 1 for i, v in enumerate(values) if v >= 0.01), None)
  return f'{values[worst]:.1e} (step {worst + 1}; over 1 % from step {first_over or "-"})'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--float64_json', action='store_true',
                      help='internal: print the float64 curves as JSON (a child process, since '
                      '64-bit JAX is process-wide)')
  args = parser.parse_args()
  if args.float64_json:
    jax.config.update('jax_enable_x64', True)
    print(json.dumps(curves('float64', args.steps, PERTURBATION)))
    return
  f32 = curves('float32', args.steps)
  child = subprocess.run([sys.executable, __file__, f'--steps={args.steps}', '--float64_json'],
                         check=True, capture_output=True, text=True)
  f64 = json.loads(child.stdout.strip().splitlines()[-1])
  for a, b in zip(f32['flax'], f32['torch']):
    assert a['phase'] == b['phase']

  names = ['loss'] + [name for name in f32['torch'][0] if name not in ('loss', 'phase')]
  print(f'{args.steps} steps, r = {f32["r"]:.4f}. Total loss: Flax and PyTorch in float32, '
        'and the float64 trajectory (Flax; PyTorch equal to it, see below)')
  print('step phase   Flax f32  PyTorch f32    float64   f32 gap   f64 perturbed gap')
  for step, (a, b, c, d) in enumerate(zip(f32['flax'], f32['torch'], f64['flax'],
                                          f64['flax_perturbed'])):
    print(f'{step + 1:4d} {a["phase"]:5d} {a["loss"]:10.6f} {b["loss"]:12.6f} {c["loss"]:10.6f} '
          f'{abs(a["loss"] - b["loss"]) / abs(b["loss"]):9.1e} '
          f'{abs(d["loss"] - c["loss"]) / abs(c["loss"]):9.1e}')
  comparisons = {
      'Flax f32 vs PyTorch f32': _gaps(f32['flax'], f32['torch'], names),
      'Flax f64 vs PyTorch f64': _gaps(f64['flax'], f64['torch'], names),
      'Flax f32 vs float64': _gaps(f32['flax'], f64['torch'], names),
      'PyTorch f32 vs float64': _gaps(f32['torch'], f64['torch'], names),
      f'float64 (Flax) from parameters ×(1 + {PERTURBATION:g}·N(0, 1)) vs float64':
          _gaps(f64['flax_perturbed'], f64['flax'], names),
  }
  print('\nlargest relative gap |a − b| / |b| per term over the steps (target: < 1 % in f32)')
  for title, gaps in comparisons.items():
    print(f'{title}:')
    for name in names:
      print(f'  {name:6s} {_worst(gaps[name])}')
  met = all(max(v) < 0.01 for v in comparisons['Flax f32 vs PyTorch f32'].values())
  print('float32 target ' + ('met' if met else 'NOT met'))


if __name__ == '__main__':
  main()
