"""`layernorm.fused_lstm`, the path `unroll` takes for LSTMCell and LNLSTMCell: the same function as the generic scan
of the cell's `__call__` (values and gradients, against a float64 reference), its native step kernels against their
jnp reference, the padding rule, and when `unroll` takes it."""

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

from layernorm import LNLSTMCell, LSTMCell, fused_lstm, unroll


def make_cell(cell_type, seed=0):
  cell = cell_type(D, H, rngs=nnx.Rngs(seed))
  if cell_type is LNLSTMCell:  # Gains and biases away from 1 and 0, so their gradients are all exercised.
    for i, ln in enumerate((cell.ln_i, cell.ln_h, cell.ln_c)):
      ln.scale[...] = 1.0 + randn(10 + i, ln.scale.shape, 0.3)
      ln.bias[...] = randn(20 + i, ln.bias.shape, 0.3)
  cell.bias[...] = randn(30, cell.bias.shape, 0.3)
  return cell


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell])
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


@pytest.mark.parametrize('ln', [False, True])
def test_native_step_kernels_equal_their_jnp_reference(ln):
  kind = fused_lstm.KIND
  check_step_kernels(kind, randn(8, (22 * H,), 0.5) + kind.pack(fused_lstm.weights_of(make_cell(LSTMCell))[0]), ln)


def test_pack_and_unpack_are_inverse():
  weights, _, _ = fused_lstm.weights_of(make_cell(LNLSTMCell))
  parts = fused_lstm.KIND.unpack(fused_lstm.KIND.pack(weights), H)
  for name, _ in fused_lstm.PACKED:
    np.testing.assert_array_equal(parts[name], getattr(weights, name))


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell])
def test_padding_freezes_the_carry_and_zeroes_outputs_and_input_gradients(cell_type):
  check_padding(make_cell(cell_type), (randn(2, (B, H)), randn(3, (B, H))))


def test_jnp_step_path_equals_the_native_one(monkeypatch):
  jnp_path, native_path = jnp_and_native_paths(make_cell(LNLSTMCell), monkeypatch)
  assert max_error(jnp_path, native_path) < 2e-6


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


def test_forward_mode_needs_the_scan_path():
  check_forward_mode_needs_the_scan(make_cell(LNLSTMCell))


def test_under_vmap_each_sequence_is_its_own_unroll():
  check_vmap(make_cell(LNLSTMCell), (jnp.zeros((B, H)), jnp.zeros((B, H))))


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell])
def test_the_input_projection_is_one_matmul_outside_the_scan(cell_type):
  # W_x X hoisted out of the scan; W_h h once per step.
  assert dot_generals(make_cell(cell_type)) == (1, 2, 1)
