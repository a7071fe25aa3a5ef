"""`layernorm.fused_lstm`, the path `unroll` takes for LSTMCell and LNLSTMCell: the same function as the generic scan
of the cell's `__call__` (values and gradients, against a float64 reference), its native step kernels against their
jnp reference, the padding rule, and when `unroll` takes it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import LNLSTMCell, LSTMCell, fused_lstm, native, unroll

B, T, D, H = 5, 7, 6, 20  # H = 20: rows that are not a multiple of the kernel's 16-float vectors.
LENGTHS = np.array([7, 3, 0, 1, 6])  # A full, a short, an empty and a one-step example.


def randn(seed, shape, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def make_cell(cell_type, seed=0):
  cell = cell_type(D, H, rngs=nnx.Rngs(seed))
  if cell_type is LNLSTMCell:  # Gains and biases away from 1 and 0, so their gradients are all exercised.
    for i, ln in enumerate((cell.ln_i, cell.ln_h, cell.ln_c)):
      ln.scale[...] = 1.0 + randn(10 + i, ln.scale.shape, 0.3)
      ln.bias[...] = randn(20 + i, ln.bias.shape, 0.3)
  cell.bias[...] = randn(30, cell.bias.shape, 0.3)
  return cell


def loss_and_grads(cell, xs, carry, lengths, impl, time_major=False):
  """A loss of every output and of the final carry, and its gradients wrt the parameters, inputs and carry."""
  graphdef, params = nnx.split(cell)
  ct_ys = randn(40, (T, B, H) if time_major else (B, T, H)).astype(xs.dtype)
  ct_c, ct_h = randn(41, (B, H)).astype(xs.dtype), randn(42, (B, H)).astype(xs.dtype)

  def loss(params, xs, carry):
    (c, h), ys = unroll(
      nnx.merge(graphdef, params), xs, carry=carry, seq_lengths=lengths, time_major=time_major, impl=impl
    )
    return jnp.sum(ys * ct_ys) + jnp.sum(c * ct_c) + jnp.sum(h * ct_h), (c, h, ys)

  (value, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, carry)
  return (value, outputs, grads)


def max_error(tree, reference):
  """The largest error of any leaf, relative to that leaf's largest magnitude."""

  def error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

  return max(jax.tree.leaves(jax.tree.map(error, tree, reference)))


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell])
@pytest.mark.parametrize('time_major', [False, True])
def test_fused_unroll_is_as_accurate_as_the_scan_against_float64(cell_type, time_major):
  cell = make_cell(cell_type)
  xs = randn(1, (T, B, D) if time_major else (B, T, D))
  carry = (randn(2, (B, H), 0.5), randn(3, (B, H), 0.5))
  lengths = jnp.asarray(LENGTHS)
  assert fused_lstm.applies(cell, xs if time_major else jnp.moveaxis(xs, 1, 0), carry)
  fused = loss_and_grads(cell, xs, carry, lengths, 'auto', time_major)
  scan = loss_and_grads(cell, xs, carry, lengths, 'scan', time_major)
  with jax.enable_x64(True):
    graphdef, state = nnx.split(cell)
    cell64 = nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))
    as64 = lambda a: jnp.asarray(a, jnp.float64)
    reference = jax.device_get(loss_and_grads(cell64, as64(xs), jax.tree.map(as64, carry), lengths, 'scan', time_major))
  scan_error, fused_error = max_error(scan, reference), max_error(fused, reference)
  # Both float32 paths are within a few float32 roundings of float64, and the fused one no worse than a small factor
  # of the scan's (the kernels' exp and tanh differ from XLA's in the last bits).
  assert scan_error < 1e-5
  assert fused_error < max(3 * scan_error, 1e-6), (fused_error, scan_error)


@pytest.mark.parametrize('ln', [False, True])
def test_native_step_kernels_equal_their_jnp_reference(ln):
  assert native.available(np.float32)
  h4 = 4 * H
  px, gh = randn(1, (B, h4), 2.0), randn(2, (B, h4), 2.0)
  c, h = randn(3, (B, H)), randn(4, (B, H))
  dc, dh, dy = randn(5, (B, H)), randn(6, (B, H)), randn(7, (B, H))
  lengths, t = jnp.asarray(LENGTHS, jnp.int32), jnp.int32(2)  # Rows 2 and 3 are padding at step 2.
  packed = randn(8, (22 * H,), 0.5) + jnp.asarray(fused_lstm.pack(fused_lstm.weights_of(make_cell(LSTMCell))[0]))
  eps = 1e-5
  got = native.lstm_step_forward(px, gh, c, h, lengths, t, packed, eps, ln)
  want = fused_lstm.reference_step(px, gh, c, h, lengths, t, packed, eps, ln)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6)
  got = native.lstm_step_backward(px, gh, c, dc, dh, dy, lengths, t, packed, eps, ln)
  want = fused_lstm.reference_step_backward(px, gh, c, h, dc, dh, dy, lengths, t, packed, eps, ln)
  for name, g, w in zip(['d px', 'd gh', 'd c_prev', 'd h_prev skip', 'd packed'], got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
  # The padding rows pass their cotangents through the step untouched.
  np.testing.assert_array_equal(got[2][2:4], dc[2:4])
  np.testing.assert_array_equal(got[3][2:4], dh[2:4])
  assert not np.any(got[0][2:4]) and not np.any(got[1][2:4])


def test_pack_and_unpack_are_inverse():
  weights, _, _ = fused_lstm.weights_of(make_cell(LNLSTMCell))
  parts = fused_lstm.unpack(fused_lstm.pack(weights), H)
  for name, _ in fused_lstm.PACKED:
    np.testing.assert_array_equal(parts[name], getattr(weights, name))


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell])
def test_padding_freezes_the_carry_and_zeroes_outputs_and_input_gradients(cell_type):
  cell = make_cell(cell_type)
  xs, carry = randn(1, (B, T, D)), (randn(2, (B, H)), randn(3, (B, H)))
  lengths = jnp.asarray(LENGTHS)
  _, (c, h, ys), (_, d_xs, _) = loss_and_grads(cell, xs, carry, lengths, 'auto')
  for b, n in enumerate(LENGTHS):
    assert not np.any(ys[b, n:]) and not np.any(d_xs[b, n:])
    assert np.all(ys[b, :n] != 0)
    if n:
      np.testing.assert_array_equal(h[b], ys[b, n - 1])  # The carry after the last valid step.
  np.testing.assert_array_equal(c[2], carry[0][2])  # The empty example keeps its initial carry.
  np.testing.assert_array_equal(h[2], carry[1][2])


def test_jnp_step_path_equals_the_native_one(monkeypatch):
  cell = make_cell(LNLSTMCell)
  xs, carry, lengths = randn(1, (B, T, D)), (randn(2, (B, H)), randn(3, (B, H))), jnp.asarray(LENGTHS)
  native_path = loss_and_grads(cell, xs, carry, lengths, 'auto')
  monkeypatch.setenv('LAYERNORM_NATIVE', '0')  # Read when the step is traced: the jnp step and JAX's transpose.
  jnp_path = loss_and_grads(cell, xs, carry, lengths, 'auto')
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
  assert not fused_lstm.applies(plain, jnp.moveaxis(xs, 1, 0), (carry[0].astype(jnp.float16), carry[1]))
  assert not fused_lstm.applies(plain, jnp.zeros((T, 2, B, D)), carry)
  assert not fused_lstm.applies(plain, jnp.zeros((T, B, D + 1)), carry)
  with pytest.raises(ValueError, match=r"impl must be one of \('auto', 'scan'\); got 'fused'"):
    unroll(plain, xs, impl='fused')


def test_forward_mode_needs_the_scan_path():
  cell = make_cell(LNLSTMCell)
  xs, tangent = randn(1, (B, T, D)), randn(2, (B, T, D))
  f = lambda impl: lambda xs: unroll(cell, xs, impl=impl)[1]
  _, jvp_scan = jax.jvp(f('scan'), (xs,), (tangent,))
  _, vjp = jax.vjp(f('auto'), xs)
  # <J t, u> = <t, J^T u>: the scan's forward mode agrees with the fused path's reverse mode.
  u = randn(3, (B, T, H))
  np.testing.assert_allclose(jnp.sum(jvp_scan * u), jnp.sum(tangent * vjp(u)[0]), rtol=1e-4)
  with pytest.raises(TypeError, match='custom_vjp'):
    jax.jvp(f('auto'), (xs,), (tangent,))


def test_under_vmap_each_sequence_is_its_own_unroll():
  cell = make_cell(LNLSTMCell)
  xs = randn(1, (3, B, T, D))
  carry = (jnp.zeros((B, H)), jnp.zeros((B, H)))
  lengths = jnp.asarray(LENGTHS)
  batched = jax.vmap(lambda x: unroll(cell, x, carry=carry, seq_lengths=lengths)[1])(xs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], unroll(cell, xs[i], carry=carry, seq_lengths=lengths)[1], atol=1e-6)


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell])
def test_the_input_projection_is_one_matmul_outside_the_scan(cell_type):
  cell = make_cell(cell_type)
  graphdef, state = nnx.split(cell)
  jaxpr = jax.make_jaxpr(lambda s, xs: unroll(nnx.merge(graphdef, s), xs))(state, randn(1, (B, 50, D)))
  text = str(jaxpr)
  scan_body = text[text.index('scan[') :]
  assert text.count('scan[') == 1
  assert text.count('dot_general') == 2 and scan_body.count('dot_general') == 1  # W_x X hoisted; W_h h per step.
