"""Every matrix product of the losses and the DCC, forward and backward, asks for full
precision (``precision.precise_matmul``): XLA's default rounds float32 operands to bfloat16 on
TPU and to TF32 on recent NVIDIA GPUs, which would round −r, the group counts and K = BᵀB
(entries up to N) in the hash term's sums over the database. CPU computes in float32 either
way, so this is checked on the programs' jaxprs; ``test_plan`` checks what the TPU compiler
makes of it."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import pytest

from aah_jax.training import adsh, chunked, grouped, losses

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
N, K, OMEGA, BATCH = 40, 12, 16, 8


def _subjaxprs(value):
  if hasattr(value, 'eqns'):  # a Jaxpr
    yield value
  elif hasattr(value, 'jaxpr') and hasattr(value.jaxpr, 'eqns'):  # a ClosedJaxpr
    yield value.jaxpr
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _subjaxprs(item)


def dot_precisions(jaxpr) -> list:
  """The precision of every dot_general in jaxpr and the jaxprs inside it (jit, loops,
  shard_map, custom derivatives)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      found.append(eqn.params['precision'])
    for value in eqn.params.values():
      for inner in _subjaxprs(value):
        found += dot_precisions(inner)
  return found


def _inputs(multi_label: bool):
  rng = np.random.default_rng(0)
  if multi_label:
    db_labels = (rng.random((N, 5)) < 0.4).astype(np.int32)
    labels = (rng.random((BATCH, 5)) < 0.4).astype(np.int32)
  else:
    db_labels, labels = rng.integers(0, 4, N).astype(np.int32), rng.integers(0, 4, BATCH)
  B = np.sign(rng.standard_normal((N, K))).astype(np.float32)
  U = np.tanh(rng.standard_normal((OMEGA, K))).astype(np.float32)
  omega = rng.choice(N, OMEGA, replace=False).astype(np.int32)
  F = np.tanh(rng.standard_normal((BATCH, K))).astype(np.float32)
  return dict(db_labels=db_labels, labels=labels.astype(np.int32), B=B, U=U, omega=omega, F=F)


def _programs(multi_label: bool) -> dict:
  """name → (function, arguments) of the losses' and the DCC's programs."""
  x = _inputs(multi_label)
  groups = grouped.LabelGroups.of(x['db_labels'])
  summary = grouped.summarize(x['B'], groups, x['omega'], num_database=N)
  h = grouped.membership(x['labels'], groups.rows)
  S_batch = adsh.similarity(x['labels'], x['db_labels'])
  S_omega = adsh.similarity(x['db_labels'][x['omega']], x['db_labels'])
  mesh = Mesh(np.array(jax.devices()[:1]), ('data',))
  sizes = dict(mesh=mesh, num_database=N, chunk_rows=16)
  return {
      'explicit hash and its gradient': (jax.value_and_grad(
          lambda F, B, S: losses.hash_loss(F, B, S, code_length=K)), (x['F'], x['B'], S_batch)),
      'decorrelation and its gradient': (jax.value_and_grad(losses.decorrelation_loss),
                                         (x['F'],)),
      'grouped hash and its gradient': (jax.value_and_grad(
          lambda F, h: grouped.hash_loss(F, h, 0.25, summary, code_length=K)), (x['F'], h)),
      'grouped summary': (lambda B: grouped.summarize(B, groups, x['omega'], num_database=N),
                          (x['B'],)),
      'grouped DCC': (lambda B, U: grouped.update_database_codes(
          B, U, x['omega'], x['db_labels'][x['omega']], groups, gamma=200.0, soft=True),
                      (x['B'], x['U'])),
      'explicit similarity': (adsh.similarity, (x['labels'], x['db_labels'])),
      'explicit DCC': (lambda B, U, S: adsh.dcc_update(B, U, x['omega'], S, 200.0),
                       (x['B'], x['U'], S_omega)),
      'chunked sums': (lambda B: chunked.row_sums(x['labels'], 0.25, B, x['db_labels'],
                                                  **sizes), (x['B'],)),
      'chunked DCC': (lambda B, U: chunked.dcc_update(
          B, U, x['omega'], x['db_labels'][x['omega']], x['db_labels'], gamma=200.0,
          soft=True, **sizes), (x['B'], x['U'])),
      'chunked summary': (lambda B: chunked.summarize(B, x['db_labels'], x['omega'],
                                                      num_database=N), (x['B'],)),
  }


@pytest.mark.parametrize('multi_label', [False, True], ids=['single-label', 'multi-label'])
def test_every_product_of_the_losses_and_the_dcc_asks_for_full_precision(multi_label):
  wrong = {}
  for name, (function, arguments) in _programs(multi_label).items():
    precisions = dot_precisions(jax.make_jaxpr(function)(*arguments).jaxpr)
    if not multi_label and name == 'explicit similarity':  # class ids: compared, not multiplied
      assert precisions == [], name
      continue
    assert precisions, f'{name}: no product found (the walk missed it)'
    if any(p != HIGHEST for p in precisions):
      wrong[name] = precisions
  assert not wrong


def test_the_walk_finds_a_product_left_at_the_default_precision():
  jaxpr = jax.make_jaxpr(jax.jit(lambda a: jax.lax.fori_loop(
      0, 2, lambda i, c: c @ a, a)))(jnp.eye(3))
  assert dot_precisions(jaxpr.jaxpr) == [None]
