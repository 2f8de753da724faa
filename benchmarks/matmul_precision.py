"""What XLA's default matmul precision would do to the hash term and the DCC sweep on a TPU,
emulated on this CPU: the products of the losses and the DCC at full precision (what runs now,
``precision.precise_matmul``) against the same products with their float32 operands rounded
to bfloat16 and summed in float32 (what ``Precision.DEFAULT`` does with float32 on TPU; TF32 on
recent NVIDIA GPUs keeps 3 more bits), both measured against float64 in the same run.

    .venv/bin/python benchmarks/matmul_precision.py [--sizes=6000,75000,1000000] [--bits=12,48]

Data near the end of training: N database items in G classes, each class a random ±1 code;
B: the item's class code with 10 % of its bits flipped; the batch's F (n = 64) and Ω's U
(|Ω| = 2,000): tanh(3·(class code + 0.3·noise)). Printed per (N, k): the label-grouped hash
loss's relative error, the largest error of its gradient with respect to F relative to the
gradient's largest entry, and the share of B's bits that one grouped DCC sweep sets
differently from the float64 sweep.
"""

import argparse
import contextlib

import jax

jax.config.update('jax_enable_x64', True)  # the float64 reference; float32 inputs stay float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aah_jax.training import adsh, grouped  # noqa: E402


def bfloat16_operands(a, b):
  """a @ b as TPU's default precision computes float32: operands rounded to bfloat16, products
  summed in float32."""
  return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


@contextlib.contextmanager
def products(matmul):
  """grouped's and adsh's products made with matmul while inside."""
  saved = grouped.precise_matmul, adsh.precise_matmul
  grouped.precise_matmul = adsh.precise_matmul = matmul
  try:
    yield
  finally:
    grouped.precise_matmul, adsh.precise_matmul = saved


def data(N: int, G: int, k: int, n: int, omega_size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  classes = rng.integers(0, G, N).astype(np.int32)
  codes = np.sign(rng.standard_normal((G, k)))
  B = codes[classes] * np.where(rng.random((N, k)) < 0.1, -1.0, 1.0)
  near = lambda labels: np.tanh(3 * (codes[labels] + 0.3 * rng.standard_normal(
      (len(labels), k))))
  batch_labels = rng.integers(0, G, n).astype(np.int32)
  omega = rng.choice(N, omega_size, replace=False).astype(np.int32)
  return dict(B=B, F=near(batch_labels), U=near(classes[omega]), omega=omega,
              labels=batch_labels, groups=grouped.LabelGroups.of(classes),
              omega_labels=classes[omega])


def measure(x: dict, dtype, k: int):
  """(hash loss, its gradient w.r.t. F, B after one DCC sweep) in dtype."""
  B, F, U = (jnp.asarray(x[name], dtype) for name in ('B', 'F', 'U'))
  groups = jax.tree.map(jnp.asarray, x['groups'])
  N = B.shape[0]

  @jax.jit
  def loss_and_grad(B, F):
    summary = grouped.summarize(B, groups, x['omega'], num_database=N)
    h = grouped.membership(x['labels'], groups.rows)
    r = grouped.negative_weight(h, groups.counts)
    return jax.value_and_grad(lambda F: grouped.hash_loss(F, h, r, summary, code_length=k))(F)

  dcc = jax.jit(lambda B, U: grouped.update_database_codes(
      B, U, x['omega'], x['omega_labels'], groups, gamma=200.0, soft=True))
  loss, grad = loss_and_grad(B, F)
  return float(loss), np.asarray(grad, np.float64), np.asarray(dcc(B, U))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='6000,75000,1000000')
  parser.add_argument('--bits', default='12,48')
  parser.add_argument('--classes', type=int, default=200)
  args = parser.parse_args()
  print('N, k | form | hash loss rel. error | gradient error / max | DCC bits differing')
  for N in (int(s) for s in args.sizes.split(',')):
    for k in (int(b) for b in args.bits.split(',')):
      x = data(N, args.classes, k, n=64, omega_size=2000)
      loss64, grad64, B64 = measure(x, jnp.float64, k)
      for name, matmul in (('full precision (now)', grouped.precise_matmul),
                           ('bfloat16 operands (TPU default)', bfloat16_operands)):
        with products(matmul):
          loss, grad, B = measure(x, jnp.float32, k)
        print(f'{N:,}, {k} | {name} | {abs(loss - loss64) / abs(loss64):.1e} | '
              f'{np.max(np.abs(grad - grad64)) / np.max(np.abs(grad64)):.1e} | '
              f'{np.mean(B != B64):.2e} ({int(np.sum(B != B64)):,} of {B.size:,})', flush=True)


if __name__ == '__main__':
  main()
