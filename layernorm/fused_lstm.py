"""A whole sequence of `LSTMCell` or `LNLSTMCell` steps with a hand-written backward: what `unroll` runs for them.

`unroll` runs any cell as `lax.scan` over `cell(carry, x)`, and `jax.grad` then differentiates that scan: every
backward step does four matmuls (d h_prev, d x_t, and the two weight gradients accumulated inside the loop) and, for
the LN-LSTM, a dozen element-wise and reduction kernels. At the attentive reader's size (batch 64, hidden 128) those
per-step costs, not arithmetic, set the time, and the LN-LSTM's step cost 30-45 % more than the LSTM's
(benchmarks/README.md). This module computes the same function (appendix eq. 20-22, with `unroll`'s padding rule) as
the persistent-RNN libraries (cuDNN, haste) do:

  forward:  P = X W_x for all T x B rows at once (one large matmul), then a scan whose step is the matmul h W_h and
            one kernel for the rest of the step, all three layer norms included;
  backward: a reverse scan whose step is one kernel (the step's transpose, recomputing its activations from the
            saved P_t, G_t = h W_h and c_prev) and one matmul (d h_prev = d G_t W_h^T); then W_x's, W_h's and the
            inputs' gradients for all steps at once, as large matmuls.

On CPU the step kernels are native (`csrc/lstm_step_cpu.cc`, built with the layer-norm kernels by `layernorm.native`);
elsewhere, or with `LAYERNORM_NATIVE=0`, the step is the same formulas in jnp (`reference_step`) and its transpose is
JAX's. Both give the scan's values within float32 rounding (tests/test_fused_lstm.py).

Trade-off: a `jax.custom_vjp`, so forward-mode derivatives (`jvp`, `jacfwd`, `hessian`) of a fused unroll are not
available: pass `unroll(..., impl='scan')` for those. And a second implementation of two cells to keep equal to
their `__call__` (the tests compare them, values and gradients).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from layernorm import cells, native
from layernorm.ops import layer_norm

Array = jax.Array


class Weights(NamedTuple):
  """The parameters of one cell; the LN gains and biases are None for the plain LSTM."""

  kernel_i: Array  # (D, 4H)
  kernel_h: Array  # (H, 4H)
  bias: Array  # (4H,)
  scale_i: Array | None = None  # (4H,) LN of W_x x
  bias_i: Array | None = None
  scale_h: Array | None = None  # (4H,) LN of W_h h
  bias_h: Array | None = None
  scale_c: Array | None = None  # (H,) LN of c
  bias_c: Array | None = None


def _plain_layer_norm(ln: nnx.Module) -> float | None:
  """The eps of an LN module the fused path computes exactly (gain and bias, last axis, float32, no mask), else None."""
  plain = (
    ln.scale is not None
    and ln.bias is not None
    and ln.dtype in (None, jnp.float32)
    and ln.axis_name is None
    and ln.reduction_axes in (-1, (-1,))
    and ln.feature_axes in (-1, (-1,))
    and ln.scale[...].dtype == jnp.float32
    and ln.bias[...].dtype == jnp.float32
  )
  return float(ln.epsilon) if plain else None


def weights_of(cell: nnx.Module) -> tuple[Weights, bool, float] | None:
  """(weights, ln, eps) of an `LSTMCell` or `LNLSTMCell` the fused path can run, else None (any other cell, a
  subclass, which may change the step, or an LN-LSTM whose layer norms are configured differently)."""
  if type(cell) not in (cells.LSTMCell, cells.LNLSTMCell):
    return None
  params = (cell.dense_i.kernel, cell.dense_h.kernel, cell.bias)
  if any(p[...].dtype != jnp.float32 for p in params) or cell.dense_i.bias is not None or cell.dense_h.bias is not None:
    return None
  weights = Weights(*(p[...] for p in params))
  if type(cell) is cells.LSTMCell:
    return weights, False, 0.0
  lns = (cell.ln_i, cell.ln_h, cell.ln_c)
  eps = {_plain_layer_norm(ln) for ln in lns}
  if len(eps) != 1 or None in eps:
    return None
  norm = {f'{k}_{n}': getattr(ln, k)[...] for n, ln in zip('ihc', lns, strict=True) for k in ('scale', 'bias')}
  return weights._replace(**norm), True, eps.pop()


def plan(cell: nnx.Module, xs_TxBxD: Array, carry) -> tuple[Weights, bool, float] | None:
  """`weights_of(cell)` if `unroll` can run `cell` over these time-major inputs and carry through `lstm_sequence`,
  else None."""
  if xs_TxBxD.ndim != 3 or xs_TxBxD.dtype != jnp.float32:
    return None
  if not (isinstance(carry, tuple) and len(carry) == 2):
    return None
  fused = weights_of(cell)
  if fused is None or xs_TxBxD.shape[-1] != cell.in_features:  # The scan path raises the cell's own error.
    return None
  shape = (xs_TxBxD.shape[1], cell.hidden_features)
  if not all(getattr(a, 'shape', None) == shape and a.dtype == jnp.float32 for a in carry):
    return None
  return fused


def applies(cell: nnx.Module, xs_TxBxD: Array, carry) -> bool:
  """Whether `unroll` runs `cell` over these time-major inputs and carry through `lstm_sequence`."""
  return plan(cell, xs_TxBxD, carry) is not None


# The packed parameter vector of the step kernels, in units of H: bias, scale_x, bias_x, scale_h, bias_h (4H each),
# scale_c, bias_c (H each); `csrc/lstm_step_cpu.cc` reads it in this order.
PACKED = (('bias', 4), ('scale_i', 4), ('bias_i', 4), ('scale_h', 4), ('bias_h', 4), ('scale_c', 1), ('bias_c', 1))


def pack(w: Weights) -> Array:
  """The step's parameters as one (22H,) vector; a plain LSTM's LN gains and biases are constants 1 and 0 (unused)."""
  hidden = w.kernel_h.shape[0]
  parts = []
  for name, size in PACKED:
    value = getattr(w, name)
    if value is None:
      value = np.full((size * hidden,), 1.0 if name.startswith('scale') else 0.0, np.float32)
    parts.append(value)
  return jnp.concatenate(parts)


def unpack(packed: Array, hidden: int) -> dict[str, Array]:
  """The inverse of `pack`: name -> its slice."""
  out, offset = {}, 0
  for name, size in PACKED:
    out[name] = packed[offset : offset + size * hidden]
    offset += size * hidden
  return out


def reference_step(px, gh, c, h, lengths, t, packed, eps: float, ln: bool):
  """One step after its matmuls in jnp: returns the new (c, h) and the output, padding rows (t >= length) unchanged.

  px = W_x x, gh = W_h h (B, 4H); packed as `pack`. Eq. 20-22 (eq. 17-19 without ln), as the cells' `__call__`
  computes them.
  """
  p = unpack(packed, c.shape[-1])
  if ln:
    gates = layer_norm(px, p['scale_i'], p['bias_i'], eps=eps) + layer_norm(gh, p['scale_h'], p['bias_h'], eps=eps)
  else:
    gates = px + gh
  c_new, o = cells._lstm_update(gates + p['bias'], c)
  h_new = o * jnp.tanh(layer_norm(c_new, p['scale_c'], p['bias_c'], eps=eps) if ln else c_new)
  valid = (t < lengths)[:, None]
  return jnp.where(valid, c_new, c), jnp.where(valid, h_new, h), jnp.where(valid, h_new, 0.0)


def reference_step_backward(px, gh, c, h, dc, dh, dy, lengths, t, packed, eps, ln):
  """The step kernel's backward outputs (d px, d gh, d c_prev, d h_prev's skip part, d packed) by JAX's transpose of
  `reference_step`."""
  _, vjp = jax.vjp(lambda px, gh, c, h, p: reference_step(px, gh, c, h, lengths, t, p, eps, ln), px, gh, c, h, packed)
  return vjp((dc, dh, dy))


def _native_step() -> bool:
  return native.available(np.float32)


def _step_forward(px, gh, c, h, lengths, t, packed, eps, ln):
  reference = lambda *a: reference_step(*a, eps, ln)
  if not _native_step():
    return reference(px, gh, c, h, lengths, t, packed)
  kernel = lambda *a: tuple(native.lstm_step_forward(*a, eps, ln))
  return jax.lax.platform_dependent(px, gh, c, h, lengths, t, packed, cpu=kernel, default=reference)


def _step_backward(px, gh, c, h, dc, dh, dy, lengths, t, packed, eps, ln):
  """(d px, d gh, d c_prev, d h_prev's skip part, d packed) of one step."""
  reference = lambda *a: tuple(reference_step_backward(*a, eps, ln))
  if not _native_step():
    return reference(px, gh, c, h, dc, dh, dy, lengths, t, packed)
  # The kernel needs no h: h enters the step only as the padding rows' carry, whose cotangent is dh itself.
  kernel = lambda px, gh, c, h, *rest: tuple(native.lstm_step_backward(px, gh, c, *rest, eps, ln))
  return jax.lax.platform_dependent(px, gh, c, h, dc, dh, dy, lengths, t, packed, cpu=kernel, default=reference)


def _forward(w, xs_TxBxD, c0, h0, lengths, ln, eps, keep_residuals):
  t, b, d = xs_TxBxD.shape
  packed = pack(w)
  p_TxBx4H = (xs_TxBxD.reshape(t * b, d) @ w.kernel_i).reshape(t, b, -1)

  def step(carry, inputs):
    c, h = carry
    px_t, step_t = inputs
    gh_t = h @ w.kernel_h
    c_new, h_new, y = _step_forward(px_t, gh_t, c, h, lengths, step_t, packed, eps, ln)
    return (c_new, h_new), ((y, gh_t, c, h) if keep_residuals else y)

  steps = jnp.arange(t, dtype=jnp.int32)
  carry, outputs = jax.lax.scan(step, (c0, h0), (p_TxBx4H, steps))
  if not keep_residuals:
    return carry, outputs, None
  ys, gh, c_prev, h_prev = outputs
  return carry, ys, (packed, p_TxBx4H, gh, c_prev, h_prev)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def lstm_sequence(w: Weights, xs_TxBxD: Array, c0: Array, h0: Array, lengths_B: Array, ln: bool, eps: float):
  """Runs the LSTM (ln=False) or LN-LSTM over time-major inputs from the carry (c0, h0).

  Args:
    w: the cell's parameters (`weights_of`).
    xs_TxBxD: float32 inputs, time first.
    c0, h0: the initial carry, (B, H) float32.
    lengths_B: int32 valid steps per example; at steps t >= length the carry is left unchanged and the output is 0.
    ln: the LN-LSTM (eq. 20-22) or the LSTM (eq. 17-19).
    eps: the layer norms' epsilon.

  Returns:
    ((c, h), ys_TxBxH): the final carry and every step's output, as `unroll` returns them (time-major).
  """
  carry, ys, _ = _forward(w, xs_TxBxD, c0, h0, lengths_B, ln, eps, keep_residuals=False)
  return carry, ys


def _lstm_sequence_fwd(w, xs_TxBxD, c0, h0, lengths_B, ln, eps):
  carry, ys, residuals = _forward(w, xs_TxBxD, c0, h0, lengths_B, ln, eps, keep_residuals=True)
  return (carry, ys), (w, xs_TxBxD, lengths_B, residuals)


def _lstm_sequence_bwd(ln, eps, saved, cotangents):
  w, xs_TxBxD, lengths, (packed, p, gh, c_prev, h_prev) = saved
  (dc_T, dh_T), dys = cotangents
  t, b, d = xs_TxBxD.shape
  hidden = w.kernel_h.shape[0]

  def step(carry, inputs):
    dc, dh = carry
    px_t, gh_t, c_t, h_t, dy_t, step_t = inputs
    dpx, dgh, dc_prev, dh_skip, dpacked = _step_backward(
      px_t, gh_t, c_t, h_t, dc, dh, dy_t, lengths, step_t, packed, eps, ln
    )
    dh_prev = dgh @ w.kernel_h.T + dh_skip
    return (dc_prev, dh_prev), (dpx, dgh, dpacked)

  steps = jnp.arange(t, dtype=jnp.int32)
  (dc0, dh0), (dp, dgh, dpacked) = jax.lax.scan(step, (dc_T, dh_T), (p, gh, c_prev, h_prev, dys, steps), reverse=True)
  rows = t * b
  dp, dgh = dp.reshape(rows, 4 * hidden), dgh.reshape(rows, 4 * hidden)
  sums = unpack(dpacked.sum(0), hidden)
  grads = dict(
    kernel_i=xs_TxBxD.reshape(rows, d).T @ dp,
    kernel_h=h_prev.reshape(rows, hidden).T @ dgh,
    **{name: sums[name] for name, _ in PACKED if getattr(w, name) is not None},
  )
  dxs = (dp @ w.kernel_i.T).reshape(t, b, d)
  return w._replace(**grads), dxs, dc0, dh0, None


lstm_sequence.defvjp(_lstm_sequence_fwd, _lstm_sequence_bwd)
