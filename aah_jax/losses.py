"""The losses of A²-Net++ (method.md, "Losses"), as pure functions.

Symbols follow the spec: a batch of n images with network outputs F = u (n × k)
and database indices ω; B (N × k) the database codes; S_batch (n × N) the
similarity rows of the batch against the whole database; γ the quantisation
weight; k the code length.
"""

from typing import Mapping, Sequence

import jax.numpy as jnp

TERMS = ('hash', 'quant', 'dec', 'rec', 'img')

# (phase 1 weight, phase 2 weight) per term. Phase 1 (first half of the outer
# iterations) trains hash + quant + dec + img; phase 2 adds rec. The image-loss
# weights and dec being on are OPEN in the spec.
DEFAULT_WEIGHTS = {
    'hash': (1.0, 1.0),
    'quant': (1.0, 1.0),
    'dec': (1.0, 1.0),
    'rec': (0.0, 1.0),
    'img': (0.01, 0.1),
}


def _scale(code_length: int, n: int, num_database: int) -> float:
  """The reference code's 12/k · 1/(n·N) normalisation."""
  return 12.0 / code_length / (n * num_database)


def hash_loss(F, B, S_batch, *, code_length: int):
  """hash = (12/k) · Σ_i Σ_j (k·S_ij − F_i·B_j)² / (n·N), asymmetric against B."""
  n, num_database = S_batch.shape
  residual = code_length * S_batch - F @ B.T
  return jnp.sum(jnp.square(residual)) * _scale(code_length, n, num_database)


def quantization_loss(F, B, omega, *, gamma: float, code_length: int):
  """quant = (12/k) · γ · Σ_i ‖F_i − B_ωi‖² / (n·N)."""
  n, num_database = F.shape[0], B.shape[0]
  return gamma * jnp.sum(jnp.square(F - B[omega])) * _scale(code_length, n, num_database)


def decorrelation_loss(F):
  """dec = mean over the k×k entries of (FᵀF − n·I)², divided by n and by k."""
  n, k = F.shape
  gram = F.T @ F - n * jnp.eye(k, dtype=F.dtype)
  return jnp.mean(jnp.square(gram)) / n / k


def reconstruction_loss(v, v_hat):
  """rec = mean((v̂ − v)²): the attribute decoder's reconstruction of v."""
  return jnp.mean(jnp.square(v_hat - v))


def image_loss(images_pred: Sequence, images_target):
  """img = Σ over the reconstructed images of mean((image − x)²), x in [0, 1]."""
  return sum(jnp.mean(jnp.square(image - images_target)) for image in images_pred)


def loss_terms(F, B, S_batch, omega, v, v_hat, *, gamma: float, code_length: int) -> dict:
  """The four code and feature terms: {'hash', 'quant', 'dec', 'rec'}.

  Args:
    F: (n, k) network outputs u of the batch.
    B: (N, k) database codes.
    S_batch: (n, N) similarity of the batch to every database item.
    omega: (n,) int database indices of the batch images.
    v: (n, D) visual representation; v_hat: (n, D) its reconstruction.
    gamma: quantisation weight γ.
    code_length: k.
  """
  return {
      'hash': hash_loss(F, B, S_batch, code_length=code_length),
      'quant': quantization_loss(F, B, omega, gamma=gamma, code_length=code_length),
      'dec': decorrelation_loss(F),
      'rec': reconstruction_loss(v, v_hat),
  }


def total_loss(terms: Mapping, phase, weights: Mapping = DEFAULT_WEIGHTS):
  """Σ_term weight(term, phase) · term.

  Args:
    terms: loss values by name; a term the weights do not name is an error,
      a weighted term missing from ``terms`` too (unless its weights are 0).
    phase: 1 or 2, a Python int or a traced int32 scalar (one compiled step
      serves both phases).
    weights: term → (phase 1 weight, phase 2 weight).
  """
  unknown = set(terms) - set(weights)
  if unknown:
    raise ValueError(f'total_loss: no weights for terms {sorted(unknown)}')
  total = jnp.float32(0.0)
  for name, (w1, w2) in weights.items():
    if name not in terms:
      if w1 or w2:
        raise ValueError(f'total_loss: term {name!r} has weights ({w1}, {w2}) but was not computed')
      continue
    weight = jnp.where(jnp.asarray(phase) == 1, w1, w2)
    total = total + weight * terms[name]
  return total


def network_loss_terms(output, B, S_batch, omega, images_target, *, gamma: float,
                       code_length: int) -> dict:
  """All terms for a network output (``A2NetOutput``); 'img' only with the image path.

  ``images_target`` is the input batch scaled to [0, 1].
  """
  terms = loss_terms(output.u, B, S_batch, omega, output.v, output.v_hat, gamma=gamma,
                     code_length=code_length)
  if output.image_from_v is not None:
    terms['img'] = image_loss((output.image_from_v, output.image_from_v_hat), images_target)
  return terms
