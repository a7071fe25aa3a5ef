"""`layernorm.fused_gru`, the path `unroll` takes for GRUCell, LNGRUCell and RMSGRUCell: the same function as the
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

from layernorm import GRUCell, LNGRUCell, RMSGRUCell, fused_gru, unroll
from layernorm.normalization import LayerNorm, RMSNorm

CELLS = [GRUCell, LNGRUCell, RMSGRUCell]
NORM_NAMES = ('i_gates', 'h_gates', 'i_cand', 'h_cand')


def make_cell(cell_type, seed=0):
  cell = cell_type(D, H, rngs=nnx.Rngs(seed))
  # Gains and biases away from 1 and 0, so their gradients are all exercised (the RMS norms have gains only).
  prefix = {LNGRUCell: 'ln', RMSGRUCell: 'rms'}.get(cell_type)
  for i, name in enumerate(NORM_NAMES if prefix else ()):
    norm = getattr(cell, f'{prefix}_{name}')
    norm.scale[...] = 1.0 + randn(10 + i, norm.scale.shape, 0.3)
    if norm.bias is not None:
      norm.bias[...] = randn(20 + i, norm.bias.shape, 0.3)
  bias = {GRUCell: lambda: cell.dense_i.bias, RMSGRUCell: lambda: cell.bias}.get(cell_type, lambda: None)()
  if bias is not None:
    bias[...] = randn(30, bias.shape, 0.3)
  return cell


@pytest.mark.parametrize('cell_type', CELLS)
@pytest.mark.parametrize('time_major', [False, True])
def test_fused_unroll_is_as_accurate_as_the_scan_against_float64(cell_type, time_major):
  cell = make_cell(cell_type)
  xs = randn(1, (T, B, D) if time_major else (B, T, D))
  carry = randn(2, (B, H), 0.5)
  lengths = jnp.asarray(LENGTHS)
  assert fused_gru.KIND.applies(cell, xs if time_major else jnp.moveaxis(xs, 1, 0), carry)
  fused_error, scan_error = fused_and_scan_errors(cell, xs, carry, lengths, time_major)
  # Both float32 paths are within a few float32 roundings of float64, and the fused one no worse than a small factor
  # of the scan's (the kernels' exp and tanh differ from XLA's in the last bits).
  assert scan_error < 1e-5
  assert fused_error < max(3 * scan_error, 1e-6), (fused_error, scan_error)


def test_small_activations_keep_their_relative_accuracy():
  # A plain GRU with small weights, as the experiments initialise it (uniform(-0.1, 0.1)): |h| ~ 0.01, where
  # 1 - 2 / (exp(2x) + 1) alone would put the kernel's tanh 30x further from float64 than the scan's.
  cell = make_cell(GRUCell)
  for p in (cell.dense_i.kernel, cell.dense_h.kernel, cell.dense_i.bias):
    p[...] = 0.02 * p[...]
  xs, carry = randn(1, (B, T, D)), jnp.zeros((B, H))
  fused_error, scan_error = fused_and_scan_errors(cell, xs, carry, jnp.asarray(LENGTHS), False)
  assert fused_error < max(3 * scan_error, 1e-6), (fused_error, scan_error)


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_native_step_kernels_equal_their_jnp_reference(norm):
  kind = fused_gru.KIND
  packed = randn(8, (15 * H,), 0.5) + kind.pack(fused_gru.weights_of(make_cell(LNGRUCell))[0])
  got, (dh,) = check_step_kernels(kind, packed, norm)
  # Without a norm the norms' parameters receive nothing; with one, every one of them something.
  for name, sums in kind.unpack(got[-1], H).items():
    assert bool(np.any(sums)) == (norm != 'none' or name == 'bias'), name
  if norm == 'rms':  # Not layer norm under another name: the centring flag reaches the kernels.
    ln_got, _ = check_step_kernels(kind, packed, 'ln')
    assert np.max(np.abs(np.asarray(got[0]) - np.asarray(ln_got[0]))) > 1e-2
  # The valid rows' skip part of d h_prev is z * (dh + dy), not dh.
  assert not np.allclose(got[2][:2], dh[:2])


def test_pack_and_unpack_are_inverse():
  for cell_type in CELLS:
    weights, _, _ = fused_gru.weights_of(make_cell(cell_type))
    parts = fused_gru.KIND.unpack(fused_gru.KIND.pack(weights), H)
    for name, size in fused_gru.PACKED:
      value = getattr(weights, name)
      if value is None:  # Absent: a constant 1 for gains, 0 for biases.
        value = np.full(size * H, 1.0 if name.startswith('scale') else 0.0)
      np.testing.assert_array_equal(parts[name], value)


def test_rms_cell_runs_fused_with_its_bias_and_gains_and_no_offsets():
  cell = make_cell(RMSGRUCell)
  weights, norm, eps = fused_gru.weights_of(cell)
  assert (norm, eps) == ('rms', 1e-6)
  np.testing.assert_array_equal(weights.bias, cell.bias[...])  # Its own bias, added after the norms.
  assert all(getattr(weights, f'bias_{k}') is None for k in ('ig', 'hg', 'ic', 'hc'))
  assert all(getattr(weights, f'scale_{k}') is not None for k in ('ig', 'hg', 'ic', 'hc'))


@pytest.mark.parametrize('cell_type', CELLS)
def test_padding_freezes_the_carry_and_zeroes_outputs_and_input_gradients(cell_type):
  carry = randn(2, (B, H))
  _, _, (_, _, d_carry) = check_padding(make_cell(cell_type), carry)
  # The empty example's initial carry reaches the end untouched: its gradient is the final carry's cotangent.
  np.testing.assert_allclose(d_carry[2], randn(41, (B, H))[2])


@pytest.mark.parametrize('cell_type', CELLS)
def test_jnp_step_path_equals_the_native_one(cell_type, monkeypatch):
  jnp_path, native_path = jnp_and_native_paths(make_cell(cell_type), monkeypatch)
  assert max_error(jnp_path, native_path) < 2e-6


def test_unroll_takes_the_fused_path_only_where_it_computes_the_cell():
  class DoubledGRUCell(GRUCell):  # A subclass may change the step: it must run its own __call__.
    def __call__(self, h, x):
      return super().__call__(h, 2.0 * x)

  xs = randn(1, (B, T, D))
  carry = jnp.zeros((B, H))
  doubled = DoubledGRUCell(D, H, rngs=nnx.Rngs(0))
  plain = GRUCell(D, H, rngs=nnx.Rngs(0))
  _, ys_doubled = unroll(doubled, xs, carry=carry)
  _, ys_plain = unroll(plain, 2.0 * xs, carry=carry)
  np.testing.assert_allclose(ys_doubled, ys_plain, atol=1e-6)
  assert fused_gru.weights_of(doubled) is None
  # Neither a float16 carry, a tuple carry, two batch axes nor another cell's input width take it.
  xs_TxBxD = jnp.moveaxis(xs, 1, 0)
  assert fused_gru.KIND.applies(plain, xs_TxBxD, carry)
  assert not fused_gru.KIND.applies(plain, xs_TxBxD, carry.astype(jnp.float16))
  assert not fused_gru.KIND.applies(plain, xs_TxBxD, (carry,))
  assert not fused_gru.KIND.applies(plain, jnp.zeros((T, 2, B, D)), carry)
  assert not fused_gru.KIND.applies(plain, jnp.zeros((T, B, D + 1)), carry)
  # An LN-GRU whose layer norms do not share one eps runs its own __call__ (the kernels take one eps).
  odd = make_cell(LNGRUCell)
  odd.ln_h_cand = LayerNorm(H, epsilon=1e-2)
  assert fused_gru.weights_of(odd) is None
  np.testing.assert_array_equal(unroll(odd, xs)[1], unroll(odd, xs, impl='scan')[1])
  # Likewise an RMS-GRU with one odd norm (another eps, or no gain), or with a bias on the input projection, which
  # its norms would see.
  for change in (
    lambda c: setattr(c, 'rms_h_cand', RMSNorm(H, epsilon=1e-2)),
    lambda c: setattr(c, 'rms_i_gates', RMSNorm(2 * H, use_scale=False)),
    lambda c: setattr(c, 'dense_i', nnx.Linear(D, 3 * H, use_bias=True, rngs=nnx.Rngs(5))),
  ):
    odd = make_cell(RMSGRUCell)
    change(odd)
    assert fused_gru.weights_of(odd) is None
    np.testing.assert_array_equal(unroll(odd, xs)[1], unroll(odd, xs, impl='scan')[1])
  assert fused_gru.KIND.applies(make_cell(RMSGRUCell), xs_TxBxD, carry)
  # Forwards only: reversed, both matmuls stay in the scan.
  assert dot_generals(plain) == (1, 2, 1)
  assert dot_generals(plain, reverse=True) == (1, 2, 2)
  with pytest.raises(ValueError, match=r"impl must be one of \('auto', 'scan'\); got 'fused'"):
    unroll(plain, xs, impl='fused')


def test_forward_mode_needs_the_scan_path():
  check_forward_mode_needs_the_scan(make_cell(LNGRUCell))


@pytest.mark.parametrize('cell_type', CELLS)
def test_under_vmap_each_sequence_is_its_own_unroll(cell_type):
  check_vmap(make_cell(cell_type), randn(2, (B, H)))


@pytest.mark.parametrize('cell_type', CELLS)
def test_the_input_projection_is_one_matmul_outside_the_scan(cell_type):
  # W_x X hoisted out of the scan; W_h h once per step.
  assert dot_generals(make_cell(cell_type)) == (1, 2, 1)
