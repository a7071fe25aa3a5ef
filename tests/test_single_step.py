"""`layernorm.step`: one step of a cell, on the fused LSTM kernels for LSTMCell, LNLSTMCell and RMSLSTMCell, is
`cell(carry, x)`: the same values and gradients (parameters, input, carry), within float32 rounding; other cells and
inputs call the cell itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import GRUCell, LNLSTMCell, LSTMCell, RMSLSTMCell, fused_lstm, step

B, D, H = 5, 6, 20  # H = 20: rows that are not a multiple of the kernel's 16-float vectors.


def randn(seed, shape, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def make_cell(cell_type):
  cell = cell_type(D, H, rngs=nnx.Rngs(0))
  if cell_type is LNLSTMCell:  # Gains and biases away from 1 and 0, so their gradients are all exercised.
    for i, ln in enumerate((cell.ln_i, cell.ln_h, cell.ln_c)):
      ln.scale[...] = 1.0 + randn(10 + i, ln.scale.shape, 0.3)
      ln.bias[...] = randn(20 + i, ln.bias.shape, 0.3)
  if cell_type is RMSLSTMCell:  # Gains only.
    for i, norm in enumerate((cell.rms_i, cell.rms_h, cell.rms_c)):
      norm.scale[...] = 1.0 + randn(10 + i, norm.scale.shape, 0.3)
  if hasattr(cell, 'bias'):
    cell.bias[...] = randn(30, cell.bias.shape, 0.3)
  return cell


def value_and_grads(cell, carry, x, impl):
  graphdef, params = nnx.split(cell)
  ct_c, ct_h, ct_y = randn(41, (B, H)), randn(42, (B, H)), randn(43, (B, H))

  def loss(params, carry, x):
    (c, h), y = step(nnx.merge(graphdef, params), carry, x, impl=impl)
    return jnp.sum(c * ct_c) + jnp.sum(h * ct_h) + jnp.sum(y * ct_y), (c, h, y)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, carry, x)


def relative_error(tree, reference):
  def error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

  return max(jax.tree.leaves(jax.tree.map(error, tree, reference)))


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell, RMSLSTMCell])
def test_the_fused_step_is_the_cells_call_values_and_gradients(cell_type):
  cell = make_cell(cell_type)
  carry, x = (randn(1, (B, H)), randn(2, (B, H))), randn(3, (B, D), 2.0)
  assert fused_lstm.KIND.plan(cell, x[None], carry) is not None  # This test is about the fused path.
  (value, outputs), grads = value_and_grads(cell, carry, x, 'auto')
  (want_value, want_outputs), want_grads = value_and_grads(cell, carry, x, 'call')
  assert relative_error(outputs, want_outputs) < 2e-6
  assert relative_error(grads, want_grads) < 2e-5
  np.testing.assert_allclose(value, want_value, rtol=2e-5)
  # Every parameter gets a gradient (a missing one would be zero here and pass a relative bound on the others).
  for g in jax.tree.leaves(grads[0]):
    assert float(jnp.max(jnp.abs(g))) > 0


def test_other_cells_and_inputs_call_the_cell():
  calls = []

  class Spy(LSTMCell):  # A subclass may change the step: `step` must call it, not the kernels.
    def __call__(self, carry, x):
      calls.append(x.shape)
      return super().__call__(carry, x)

  carry = (randn(1, (B, H)), randn(2, (B, H)))
  step(Spy(D, H, rngs=nnx.Rngs(0)), carry, randn(3, (B, D)))
  gru = GRUCell(D, H, rngs=nnx.Rngs(0))
  new_h, _ = step(gru, randn(1, (B, H)), randn(3, (B, D)))
  np.testing.assert_array_equal(new_h, gru(randn(1, (B, H)), randn(3, (B, D)))[0])
  lstm = LSTMCell(D, H, rngs=nnx.Rngs(0))
  batched = (randn(1, (2, B, H)), randn(2, (2, B, H)))
  (c, _), _ = step(lstm, batched, randn(3, (2, B, D)))  # Two batch axes: the kernels take one.
  np.testing.assert_array_equal(c, lstm(batched, randn(3, (2, B, D)))[0][0])
  assert calls == [(B, D)]


def test_an_unknown_impl_is_refused():
  with pytest.raises(ValueError, match="step impl must be one of \\('auto', 'call'\\); got 'fused'"):
    step(LSTMCell(D, H, rngs=nnx.Rngs(0)), (randn(1, (B, H)), randn(2, (B, H))), randn(3, (B, D)), impl='fused')
