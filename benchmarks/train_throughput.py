"""Train-step and encoding throughput: the jitted JAX step against the same network in
PyTorch eager, same config, same machine, alternated in one run.

    python benchmarks/train_throughput.py [--configs=small,r50_112,r50_224] [--steps=3]

The PyTorch network is tests/torch_reference.py's independent build, in the reference group's
layout: a torchvision-style ResNet trunk (stem + stages 1–3), two copies of stage 4 (global and
local path), the attention branch and W (no image decoders: ``use_image_decoder=False`` on both
sides), with hash + quant + dec + rec losses and SGD with momentum and weight decay. Needs the
torch CPU wheel (``pip install torch``); it is a benchmark-only dependency.

Each side first runs one untimed step (JAX compiles there); then the sides alternate,
``--steps`` timed steps at a time, ``--rounds`` times; the medians are compared. On a
GPU the same script also prints the JAX step's model FLOP utilisation (XLA's FLOP count
of the compiled step over the device's peak, ``--peak_tflops``).
"""

import functools
import os
import platform
import statistics
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))
from aah_jax.training import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from aah_jax.models import create_model, precision  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import cub200, default  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('configs', ['small', 'r50_112', 'r50_224'], 'Settings to measure.')
flags.DEFINE_integer('steps', 2, 'Timed steps per round.')
flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')
flags.DEFINE_integer('batch', 16, 'Batch size.')
flags.DEFINE_float('peak_tflops', 0.0, 'Device peak TFLOP/s for the MFU estimate (GPU).')

SETTINGS = {  # name → (backbone, image size, bits)
    'small': ('small_cnn', 32, 12),
    'r50_112': ('resnet50', 112, 12),
    'r50_224': ('resnet50', 224, 12),
}
NUM_DB, GAMMA = 2000, 200.0


# ----------------------------------------------------------------------------- PyTorch


def torch_step_fn(backbone: str, bits: int, batch: int, size: int):
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference  # pylint: disable=g-import-not-at-top  (tests/torch_reference.py)
  torch.manual_seed(0)
  net = torch_reference.A2NetPlusPlus(backbone, bits, size, use_image_decoder=False)
  net.train()
  optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
  images = torch.randn(batch, 3, size, size)
  B = torch.sign(torch.randn(NUM_DB, bits))
  S = torch.where(torch.rand(batch, NUM_DB) < 0.05, 1.0, -1.0)
  omega = torch.randint(0, NUM_DB, (batch,))

  def step():
    terms = torch_reference.loss_terms(net(images), B, S, omega, None, gamma=GAMMA, bits=bits)
    loss = sum(terms.values())  # hash + quant + dec + rec, all weighted 1
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()

  @torch.no_grad()
  def encode():
    net.eval()
    u = net(images)['u']
    net.train()
    return float(u.sum())

  return step, encode


# ----------------------------------------------------------------------------- JAX


def jax_step_fn(backbone: str, bits: int, batch: int, size: int):
  config = cub200.get_config() if backbone == 'resnet50' else default.get_config()
  config.bits = bits
  config.model.backbone = backbone
  config.model.use_image_decoder = False
  config = precision.resolve_config(config, jax.devices()[0].platform)
  model = create_model(config.model)
  schedule = train.Schedule(40, 100, 1e-4, 0.9, 0.1)
  tx = train.make_optimizer(config.optim, schedule)
  db_labels = np.arange(NUM_DB) % 20
  state = jax.jit(functools.partial(train.init_state, model=model, tx=tx, image_size=size,
                                    db_labels=db_labels, num_samples=batch))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch_data = {'image': jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32),
                'label': jnp.asarray(db_labels[:batch]), 'index': jnp.arange(batch, dtype=jnp.int32),
                'position': jnp.arange(batch, dtype=jnp.int32)}
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                   weights=train.loss_weights(config), gamma=config.loss.gamma),
                 donate_argnums=0)
  encoder = jax.jit(lambda variables, images: model.apply(variables, images, train=False))
  holder = {'state': state}
  flops = None
  if FLAGS.peak_tflops:
    cost = step.lower(state, batch_data).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = cost.get('flops')

  def run_step():
    holder['state'], metrics = step(holder['state'], batch_data)
    return float(metrics['loss'])

  def run_encode():
    s = holder['state']
    return float(encoder({'params': s.params, 'batch_stats': s.batch_stats},
                         batch_data['image']).sum())

  return run_step, run_encode, flops


def timed(fn, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return (time.perf_counter() - start) / steps


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  print(f'{platform.platform()}, {os.cpu_count()} CPUs; jax {jax.__version__} '
        f'({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} '
        f'threads); batch {FLAGS.batch}, k = M = 12, no image decoders')
  print('| setting | JAX step | PyTorch step | step ratio | JAX encode | PyTorch encode | '
        'encode ratio |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for name in FLAGS.configs:
    backbone, size, bits = SETTINGS[name]
    j_step, j_encode, flops = jax_step_fn(backbone, bits, FLAGS.batch, size)
    t_step, t_encode = torch_step_fn(backbone, bits, FLAGS.batch, size)
    for fn in (j_step, j_encode, t_step, t_encode):
      fn()  # warm-up (JAX compiles here)
    times = {key: [] for key in ('j_step', 't_step', 'j_encode', 't_encode')}
    for _ in range(FLAGS.rounds):
      times['j_step'].append(timed(j_step, FLAGS.steps))
      times['t_step'].append(timed(t_step, FLAGS.steps))
      times['j_encode'].append(timed(j_encode, FLAGS.steps))
      times['t_encode'].append(timed(t_encode, FLAGS.steps))
    m = {key: statistics.median(v) for key, v in times.items()}
    rate = lambda seconds: f'{FLAGS.batch / seconds:.1f} img/s ({seconds:.2f} s)'
    print(f'| {name} ({backbone}, {size} px) | {rate(m["j_step"])} | {rate(m["t_step"])} | '
          f'{m["t_step"] / m["j_step"]:.2f}× | {rate(m["j_encode"])} | {rate(m["t_encode"])} | '
          f'{m["t_encode"] / m["j_encode"]:.2f}× |', flush=True)
    if flops and FLAGS.peak_tflops:
      print(f'  MFU of the JAX step: {flops / m["j_step"] / (FLAGS.peak_tflops * 1e12):.1%} '
            f'({flops / 1e9:.0f} GFLOP per step)')


if __name__ == '__main__':
  app.run(main)
