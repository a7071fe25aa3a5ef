"""`layernorm.fused_lstm`, the path `unroll` takes for LSTMCell, LNLSTMCell and RMSLSTMCell: the same function as the
generic scan of the cell's `__call__` (values and gradients, against a float64 reference), its native step kernels
against their jnp reference, the padding rule, and when `unroll` takes it."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fused_checks import (
  LENGTHS,
  B,
  D,
  H,
  T,
  check_forward_mode_needs_the_scan,
  check_padding,
  check_step_kernels,
  check_vmap,
  dot_generals,
  fused_and_scan_errors,
  jnp_and_native_paths,
  max_error,
  randn,
)

from layernorm import LNLSTMCell, LSTMCell, RMSLSTMCell, fused_lstm, unroll
from layernorm.normalization import RMSNorm

CELLS = [LSTMCell, LNLSTMCell, RMSLSTMCell]
NORMALIZED = [LNLSTMCell, RMSLSTMCell]


def make_cell(cell_type, seed=0):
  cell = cell_type(D, H, rngs=nnx.Rngs(seed))
  # Gains and biases away from 1 and 0, so their gradients are all exercised (the RMS norms have gains only).
  norms = {LNLSTMCell: ('ln_i', 'ln_h', 'ln_c'), RMSLSTMCell: ('rms_i', 'rms_h', 'rms_c')}.get(cell_type, ())
  for i, name in enumerate(norms):
    norm = getattr(cell, name)
    norm.scale[...] = 1.0 + randn(10 + i, norm.scale.shape, 0.3)
    if norm.bias is not None:
      norm.bias[...] = randn(20 + i, norm.bias.shape, 0.3)
  cell.bias[...] = randn(30, cell.bias.shape, 0.3)
  return cell


@pytest.mark.parametrize('cell_type', CELLS)
@pytest.mark.parametrize('time_major', [False, True])
def test_fused_unroll_is_as_accurate_as_the_scan_against_float64(cell_type, time_major):
  cell = make_cell(cell_type)
  xs = randn(1, (T, B, D) if time_major else (B, T, D))
  carry = (randn(2, (B, H), 0.5), randn(3, (B, H), 0.5))
  lengths = jnp.asarray(LENGTHS)
  assert fused_lstm.KIND.applies(cell, xs if time_major else jnp.moveaxis(xs, 1, 0), carry)
  fused_error, scan_error = fused_and_scan_errors(cell, xs, carry, lengths, time_major)
  # Both float32 paths are within a few float32 roundings of float64, and the fused one no worse than a small factor
  # of the scan's (the kernels' exp and tanh differ from XLA's in the last bits).
  assert scan_error < 1e-5
  assert fused_error < max(3 * scan_error, 1e-6), (fused_error, scan_error)


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_native_step_kernels_equal_their_jnp_reference(norm):
  kind = fused_lstm.KIND
  packed = randn(8, (22 * H,), 0.5) + kind.pack(fused_lstm.weights_of(make_cell(LSTMCell))[0])
  got, _ = check_step_kernels(kind, packed, norm)
  if norm == 'rms':  # Not layer norm under another name: the centring flag reaches the kernels.
    ln_got, _ = check_step_kernels(kind, packed, 'ln')
    assert np.max(np.abs(np.asarray(got[0]) - np.asarray(ln_got[0]))) > 1e-2


def test_pack_and_unpack_are_inverse():
  for cell_type in NORMALIZED:
    weights, _, _ = fused_lstm.weights_of(make_cell(cell_type))
    parts = fused_lstm.KIND.unpack(fused_lstm.KIND.pack(weights), H)
    for name, size in fused_lstm.PACKED:
      value = getattr(weights, name)
      if value is None:  # Absent (the RMS norms' offsets): a constant 0.
        assert cell_type is RMSLSTMCell and name.startswith('bias_')
        value = np.zeros(size * H)
      np.testing.assert_array_equal(parts[name], value)


def test_rms_cell_runs_fused_with_its_gains_and_no_offsets():
  weights, norm, eps = fused_lstm.weights_of(make_cell(RMSLSTMCell))
  assert (norm, eps) == ('rms', 1e-6)
  assert weights.bias_i is weights.bias_h is weights.bias_c is None
  assert all(getattr(weights, f'scale_{k}') is not None for k in 'ihc')


@pytest.mark.parametrize('cell_type', CELLS)
def test_padding_freezes_the_carry_and_zeroes_outputs_and_input_gradients(cell_type):
  check_padding(make_cell(cell_type), (randn(2, (B, H)), randn(3, (B, H))))


# The worst leaf of the RMS-LSTM, its input norm's gain gradient, measured 4.6e-6 apart on the two paths, with each
# path within 3.4e-6 of float64 (the LN-LSTM's: 1e-6 and 9e-7): float32 rounding, not a different function.
@pytest.mark.parametrize('cell_type,tolerance', [(LNLSTMCell, 2e-6), (RMSLSTMCell, 1e-5)])
def test_jnp_step_path_equals_the_native_one(cell_type, tolerance, monkeypatch):
  jnp_path, native_path = jnp_and_native_paths(make_cell(cell_type), monkeypatch)
  assert max_error(jnp_path, native_path) < tolerance


def test_unroll_takes_the_fused_path_only_where_it_computes_the_cell():
  class DoubledLSTMCell(LSTMCell):  # A subclass may change the step: it must run its own __call__.
    def __call__(self, carry, x):
      return super().__call__(carry, 2.0 * x)

  xs = randn(1, (B, T, D))
  carry = (jnp.zeros((B, H)), jnp.zeros((B, H)))
  doubled = DoubledLSTMCell(D, H, rngs=nnx.Rngs(0))
  plain = LSTMCell(D, H, rngs=nnx.Rngs(0))
  _, ys_doubled = unroll(doubled, xs, carry=carry)
  _, ys_plain = unroll(plain, 2.0 * xs, carry=carry)
  np.testing.assert_allclose(ys_doubled, ys_plain, atol=1e-6)
  assert fused_lstm.weights_of(doubled) is None
  # Neither a float64 carry, two batch axes nor another cell's input width take it.
  assert not fused_lstm.KIND.applies(plain, jnp.moveaxis(xs, 1, 0), (carry[0].astype(jnp.float16), carry[1]))
  assert not fused_lstm.KIND.applies(plain, jnp.zeros((T, 2, B, D)), carry)
  assert not fused_lstm.KIND.applies(plain, jnp.zeros((T, B, D + 1)), carry)
  with pytest.raises(ValueError, match=r"impl must be one of \('auto', 'scan'\); got 'fused'"):
    unroll(plain, xs, impl='fused')


def test_an_rms_lstm_runs_fused_only_where_its_norms_are_the_kernels():
  xs = randn(1, (B, T, D))
  xs_TxBxD = jnp.moveaxis(xs, 1, 0)
  carry = (jnp.zeros((B, H)), jnp.zeros((B, H)))
  assert fused_lstm.KIND.applies(make_cell(RMSLSTMCell), xs_TxBxD, carry)
  # Norms that do not share one eps, or an RMS norm without a gain: the cell's own __call__ (the scan).
  for change in (lambda c: RMSNorm(H, epsilon=1e-2), lambda c: RMSNorm(H, use_scale=False)):
    odd = make_cell(RMSLSTMCell)
    odd.rms_c = change(odd)
    assert fused_lstm.weights_of(odd) is None
    np.testing.assert_array_equal(unroll(odd, xs, carry=carry)[1], unroll(odd, xs, carry=carry, impl='scan')[1])

  class SubRMSLSTMCell(RMSLSTMCell):  # A subclass may change the step.
    pass

  assert fused_lstm.weights_of(SubRMSLSTMCell(D, H, rngs=nnx.Rngs(0))) is None


def test_forward_mode_needs_the_scan_path():
  check_forward_mode_needs_the_scan(make_cell(LNLSTMCell))


def test_under_vmap_each_sequence_is_its_own_unroll():
  check_vmap(make_cell(LNLSTMCell), (jnp.zeros((B, H)), jnp.zeros((B, H))))


@pytest.mark.parametrize('cell_type', CELLS)
def test_the_input_projection_is_one_matmul_outside_the_scan(cell_type):
  # W_x X hoisted out of the scan; W_h h once per step.
  assert dot_generals(make_cell(cell_type)) == (1, 2, 1)
