"""The losses of A²-Net++ (docs/method.md §3), as pure functions, and the registry of the
terms the train step sums.

Symbols follow the spec: a batch of n images with network outputs F = u (n × k)
and database indices ω; B (N × k) the database codes; S_batch (n × N) the
similarity rows of the batch against the whole database; γ the quantisation
weight; k the code length.

A loss term is a function of ``LossInputs`` registered under a name with default weights,
one per training phase (``register_term``); ``TERMS`` holds them in order. The step
computes the terms ``config.loss.weights`` gives a non-zero weight and sums them
(``weighted_total``); the logs, the console and the report show whatever terms it
computed. A new term is one function, one ``register_term`` call, its weights in a config
and the module that registers it in ``config.loss.term_modules``:
``configs/variants/bit_balance.py`` does all four in one file.
"""

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from aah_jax.models.precision import precise_matmul
from aah_jax.training import grouped as grouped_lib


def _scale(code_length: int, n: int, num_database: int) -> float:
  """The reference code's 12/k · 1/(n·N) normalisation."""
  return 12.0 / code_length / (n * num_database)


def hash_loss(F, B, S_batch, *, code_length: int):
  """hash = (12/k) · Σ_i Σ_j (k·S_ij − F_i·B_j)² / (n·N), asymmetric against B."""
  n, num_database = S_batch.shape
  # k·S not rounded to S's float32
  residual = code_length * S_batch.astype(F.dtype) - precise_matmul(F, B.T)
  return jnp.sum(jnp.square(residual)) * _scale(code_length, n, num_database)


def quantization_loss(F, B, omega, *, gamma: float, code_length: int,
                      num_database: Optional[int] = None):
  """quant = (12/k) · γ · Σ_i ‖F_i − B_ωi‖² / (n·N). omega None: B holds the batch's rows
  B[ω] only, and num_database gives N (else N is B's rows)."""
  n, num_database = F.shape[0], num_database or B.shape[0]
  targets = B if omega is None else B[omega]
  return gamma * jnp.sum(jnp.square(F - targets)) * _scale(code_length, n, num_database)


def decorrelation_loss(F):
  """dec = mean over the k×k entries of (FᵀF − n·I)², divided by n and by k."""
  n, k = F.shape
  gram = precise_matmul(F.T, F) - n * jnp.eye(k, dtype=F.dtype)
  return jnp.mean(jnp.square(gram)) / n / k


def reconstruction_loss(v, v_hat):
  """rec = mean((v̂ − v)²): the attribute decoder's reconstruction of v."""
  return jnp.mean(jnp.square(v_hat - v))


def image_loss(images_pred: Sequence, images_target):
  """img = Σ over the reconstructed images of mean((image − x)²), x in [0, 1]."""
  return sum(jnp.mean(jnp.square(image - images_target)) for image in images_pred)


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """What a batch gives the loss terms.

  Attributes:
    output: the network's ``A2NetOutput`` (u = F, v, v̂, decoded images, attention).
    B: (N, k) database codes in the explicit form; None in the grouped form, where
      ``grouped.codes`` holds the batch's rows B[ω] (B itself is split over the devices).
    S_batch: (n, N) similarity of the batch to every database item (the explicit form), or
      None where ``grouped`` holds it.
    grouped: the same similarity in the label-grouped form (``grouped.BatchSimilarity``,
      docs/method.md §8; ``config.train.similarity='grouped'``), or None.
    omega: (n,) int database indices ω of the batch images.
    images: (n, S, S, 3) the input batch scaled to [0, 1] (the image loss's target).
    gamma: the quantisation weight γ.
    code_length: k.
  """

  output: Any
  B: Optional[jax.Array]
  S_batch: Optional[jax.Array]
  omega: jax.Array
  images: jax.Array
  gamma: float
  code_length: int
  grouped: Optional[grouped_lib.BatchSimilarity] = None


@dataclasses.dataclass(frozen=True)
class Term:
  """A loss term: fn(LossInputs) → scalar, its default weight per phase, and whether it
  needs the self-consistency image path (dropped, whatever its weights, without one)."""

  fn: Callable[[LossInputs], jax.Array]
  weights: tuple[float, ...]
  needs_image_path: bool = False


TERMS: dict[str, Term] = {}


def register_term(name: str, fn: Callable[[LossInputs], jax.Array], weights: Sequence[float],
                  *, needs_image_path: bool = False) -> Term:
  """Adds (or replaces) the term ``name``; weights: its default weight per phase."""
  TERMS[name] = Term(fn, tuple(float(w) for w in weights), needs_image_path)
  return TERMS[name]


def import_term_modules(names: Sequence[str]):
  """Imports the modules that register extra terms (``config.loss.term_modules``), so a
  run, a resumed run and the tools that restore it know the same terms."""
  for name in names:
    importlib.import_module(name)


# Phase 1 (the first half of the outer iterations) trains hash + quant + dec + img; phase 2
# adds rec. The image-loss weights and dec being on are OPEN in the spec (§3.3).
def _hash_term(x: LossInputs):
  if x.grouped is None:
    return hash_loss(x.output.u, x.B, x.S_batch, code_length=x.code_length)
  return grouped_lib.hash_loss_of_sums(
      x.output.u, x.grouped.s_squared, x.grouped.s_b, x.grouped.summary.gram,
      num_database=x.grouped.summary.num_database, code_length=x.code_length)


def _quant_term(x: LossInputs):
  if x.grouped is None:
    return quantization_loss(x.output.u, x.B, x.omega, gamma=x.gamma, code_length=x.code_length)
  return quantization_loss(x.output.u, x.grouped.codes, None, gamma=x.gamma,
                           code_length=x.code_length, num_database=x.grouped.summary.num_database)


register_term('hash', _hash_term, (1.0, 1.0))
register_term('quant', _quant_term, (1.0, 1.0))
register_term('dec', lambda x: decorrelation_loss(x.output.u), (1.0, 1.0))
register_term('rec', lambda x: reconstruction_loss(x.output.v, x.output.v_hat), (0.0, 1.0))
register_term('img', lambda x: image_loss((x.output.image_from_v, x.output.image_from_v_hat),
                                          x.images), (0.01, 0.1), needs_image_path=True)

DEFAULT_WEIGHTS = {name: term.weights for name, term in TERMS.items()}


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


def phase_weight(weights: Sequence[float], phase):
  """The weight of phase ``phase`` (1-based; a Python int or a traced int32 scalar: one
  compiled step serves every phase)."""
  weight = weights[-1]
  for index in reversed(range(len(weights) - 1)):
    weight = jnp.where(jnp.asarray(phase) == index + 1, weights[index], weight)
  return weight


def total_loss(terms: Mapping, phase, weights: Mapping = DEFAULT_WEIGHTS):
  """Σ_term weight(term, phase) · term, summed in the order of ``weights``.

  Args:
    terms: loss values by name; a term the weights do not name is an error,
      a weighted term missing from ``terms`` too (unless its weights are 0).
    phase: 1, 2, …: a Python int or a traced int32 scalar.
    weights: term → its weight in each phase.
  """
  unknown = set(terms) - set(weights)
  if unknown:
    raise ValueError(f'total_loss: no weights for terms {sorted(unknown)}')
  total = jnp.float32(0.0)
  for name, term_weights in weights.items():
    if name not in terms:
      if any(term_weights):
        raise ValueError(f'total_loss: term {name!r} has weights {tuple(term_weights)} but was '
                         'not computed')
      continue
    total = total + phase_weight(term_weights, phase) * terms[name]
  return total


def weighted_total(inputs: LossInputs, phase, weights: Mapping) -> tuple[jax.Array, dict]:
  """(total loss, the computed terms by name): every registered term ``weights`` gives a
  non-zero weight in some phase, computed from ``inputs`` and summed (``total_loss``).

  The default objective of ``train.train_step``; a replacement (``loss_fn=``) has this
  signature.
  """
  unknown = set(weights) - set(TERMS)
  if unknown:
    raise ValueError(f'no loss terms named {sorted(unknown)} (registered: {list(TERMS)})')
  # Computed in the registry's order (it sets the order in which the backward pass adds up
  # the terms' gradients), summed in the order of weights.
  terms = {name: term.fn(inputs) for name, term in TERMS.items() if any(weights.get(name, ()))}
  return total_loss(terms, phase, weights), terms
