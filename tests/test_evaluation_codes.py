"""The evaluation's database codes reach the host packed (k/8 bytes a row): packing on the
devices, the chance baseline drawn in chunks and the report's bit statistics equal their
whole-array NumPy forms."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from aah_jax.analysis import report
from aah_jax.common import mesh as mesh_lib
from aah_jax.retrieval import ranking
from aah_jax.retrieval.codes import packed_hash_codes
from aah_jax.training import evaluation

# bit_statistics: sums of ±1 products are exact integers in float64; the correlation is a few
# float64 operations on them, so it differs from np.corrcoef's by some eps64 ≈ 1e-16 a step.
CORRELATION_ATOL = 1e-12


def _codes_with_zeros(rng, n, bits):
  return rng.choice(np.float32([-1.5, -0.0, 0.0, 2.0]), (n, bits))  # sign(±0) = +1


@pytest.mark.parametrize('bits', [1, 7, 8, 12, 13, 64, 100])
def test_packed_hash_codes_is_numpy_packbits(bits):
  u = _codes_with_zeros(np.random.default_rng(bits), 9, bits)
  words = np.asarray(jax.jit(packed_hash_codes)(u))
  assert words.dtype == np.uint8
  np.testing.assert_array_equal(words, np.packbits(u >= 0, axis=1))


@pytest.mark.parametrize('num_devices', [8, 3, 1])
def test_packed_rows_of_codes_split_over_the_devices(num_devices):
  n, bits = 75, 12
  rows = mesh_lib.padded_rows(n, num_devices)
  B = np.zeros((rows, bits), np.float32)
  B[:n] = _codes_with_zeros(np.random.default_rng(num_devices), n, bits)
  mesh = Mesh(np.array(jax.devices()[:num_devices]), ('data',))
  for spec in (P('data'), P()):  # the grouped form's layout, the explicit form's
    placed = jax.device_put(B, NamedSharding(mesh, spec))
    codes = evaluation.packed_rows_to_host(placed, n)
    assert isinstance(codes, ranking.PackedCodes) and codes.bits == bits
    np.testing.assert_array_equal(codes.words, np.packbits(B[:n] >= 0, axis=1))


@pytest.mark.parametrize('num_database', [0, 1, 7, 50])
def test_random_codes_drawn_in_chunks_are_one_draw(monkeypatch, num_database):
  rng = np.random.default_rng(3)
  want_query, want_db = rng.choice([-1, 1], (4, 13)), rng.choice([-1, 1], (num_database, 13))
  for chunk in (7, evaluation.RANDOM_CODE_ROWS):  # 7 rows: chunks that do not divide 50
    monkeypatch.setattr(evaluation, 'RANDOM_CODE_ROWS', chunk)
    query, db = evaluation.random_codes(3, 4, num_database, 13)
    np.testing.assert_array_equal(query, want_query)
    assert db.bits == 13 and db.words.shape == (num_database, 2)
    np.testing.assert_array_equal(db.words, ranking.pack_codes(want_db).words
                                  if num_database else np.zeros((0, 2), np.uint8))


def test_bit_statistics_are_numpy_mean_and_corrcoef(monkeypatch):
  codes = np.random.default_rng(0).choice([-1, 1], (40, 12))
  codes[:, 3] = 1  # a constant bit: np.corrcoef gives nan there, shown as 0
  codes[:, 5] = -codes[:, 4]
  with np.errstate(divide='ignore', invalid='ignore'):
    want = np.nan_to_num(np.corrcoef(codes.T))
  for chunk in (6, report.BIT_STATISTICS_ROWS):
    monkeypatch.setattr(report, 'BIT_STATISTICS_ROWS', chunk)
    for form in (codes, ranking.pack_codes(codes)):
      mean, correlation = report.bit_statistics(form)
      np.testing.assert_array_equal(mean, codes.mean(axis=0))  # k/40 sums of ±1: exact
      np.testing.assert_allclose(correlation, want, rtol=0, atol=CORRELATION_ATOL)
  assert correlation[4, 5] == pytest.approx(-1.0, abs=CORRELATION_ATOL)
  np.testing.assert_array_equal(report.bit_statistics(codes[:1])[1], np.eye(12))
