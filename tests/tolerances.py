"""Float tolerances derived from the rounding error of the computation a test checks.

A float32 sum of n terms, in any order and with each term a rounded product, is off by at most
n·eps·Σ|termᵢ| (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2:
γ_{n−1}·Σ|xᵢ| with γ_k = k·u/(1 − k·u), u = eps/2; the product roundings add u·Σ|termᵢ|).
Tests that compare two layouts or two frameworks whose reductions are larger than that bound
can honestly allow run in float64 instead (``jax.enable_x64`` in that test only).
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2⁻²³ ≈ 1.19e-7


def summation_bound(num_terms: int, abs_sum, eps: float = EPS32):
  """Worst-case rounding error of a sum of num_terms rounded products whose absolute values
  add up to abs_sum (elementwise when abs_sum is an array)."""
  return num_terms * eps * np.asarray(abs_sum, np.float64)
