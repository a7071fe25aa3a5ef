"""A whole sequence of a recurrent cell's steps with a hand-written backward: the machinery `unroll` runs `LSTMCell`,
`LNLSTMCell`, `RMSLSTMCell` (`layernorm.fused_lstm`), `GRUCell`, `LNGRUCell` and `RMSGRUCell` (`layernorm.fused_gru`)
through. The RMS cells run the LN cells' kernels with the centring off (`NORMS`).

`unroll` runs any cell as `lax.scan` over `cell(carry, x)`, and `jax.grad` then differentiates that scan: every
backward step does four matmuls (d h_prev, d x_t, and the two weight gradients accumulated inside the loop) and, for
the layer-normalized cells, a dozen or more element-wise and reduction kernels. At the experiments' sizes (batch 64,
hidden 128) those per-step costs, not arithmetic, set the time, and the LN-LSTM's step cost 30-45 % more than the
LSTM's, the LN-GRU's about 50 % more than the GRU's (benchmarks/README.md). This module computes the same function
(with `unroll`'s padding rule) as the persistent-RNN libraries (cuDNN, haste) do:

  forward:  P = X W_x for all T x B rows at once (one large matmul), then a scan whose step is the matmul h W_h and
            one kernel for the rest of the step, its layer norms included;
  backward: a reverse scan whose step is one kernel (the step's transpose, recomputing its activations from the
            saved P_t, G_t = h W_h and the carry before the step) and one matmul (d h_prev = d G_t W_h^T, plus the
            part of d h_prev that skips W_h); then W_x's, W_h's and the inputs' gradients for all steps at once, as
            large matmuls.

A cell family is a `Kind`: its projection width, its packed per-step parameters (every vector parameter of the step
in one array, so a step kernel takes one operand for them and returns their cotangents' sums as one), its carry, its
step in jnp (`reference_step`) and its two native kernels. On CPU the step kernels are native (`csrc/*_step_cpu.cc`,
built with the layer-norm kernels by `layernorm.native`); elsewhere, or with `LAYERNORM_NATIVE=0`, the step is the
jnp reference and its transpose is JAX's. Both give the scan's values within float32 rounding
(tests/test_fused_lstm.py, tests/test_fused_gru.py).

Trade-off: a `jax.custom_vjp`, so forward-mode derivatives (`jvp`, `jacfwd`, `hessian`) of a fused unroll are not
available: pass `unroll(..., impl='scan')` for those. And a second implementation of six cells to keep equal to
their `__call__` (the tests compare them, values and gradients).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from layernorm import native

Array = jax.Array
# What a fused cell's step normalizes with: nothing (the plain cells), layer norm (the LN cells, eq. 20-22 and 26-28)
# or RMS norm (the RMS cells: the same blocks, no centring; Zhang & Sennrich 2019).
NORMS = tuple(native.STEP_NORMS)


@dataclasses.dataclass(frozen=True)
class Kind:
  """One cell family the fused sequence runs.

  The carry is `carry_size` arrays (B, H), h last (the one W_h multiplies); a cell whose carry is one array keeps it
  bare, as `GRUCell` does, else it is a tuple. Weights are a NamedTuple with `kernel_i` (D, width H), `kernel_h`
  (H, width H) and one field per entry of `packed`, None where the cell has no such parameter (its slot is then 1 for
  a scale, 0 otherwise, and its cotangent is dropped).
  """

  name: str
  cell_types: tuple[type, ...]
  width: int  # The projections' width in units of H: 4 (LSTM), 3 (GRU).
  packed: tuple[tuple[str, int], ...]  # (name, size in units of H), in the order the kernels read them.
  carry_size: int
  weights_of: Callable[[nnx.Module], Any]  # cell (of an exact type in cell_types) -> (weights, norm, eps) | None
  # (px, gh, carry tuple, lengths, t, parts: name -> slice of packed, eps, norm) -> (new carry tuple, y), in jnp.
  step: Callable
  # (px, gh, *carry, lengths, t, packed, eps, norm) -> (*new carry, y), the native forward.
  kernel_forward: Callable
  # (px, gh, *carry, *d carry, dy, lengths, t, packed, eps, norm) -> (d px, d gh, *d carry before the step (h's
  # part that skips W_h), d packed), the native backward.
  kernel_backward: Callable

  def plan(self, cell: nnx.Module, xs_TxBxD: Array, carry) -> tuple[NamedTuple, bool, float] | None:
    """`weights_of(cell)` if `unroll` can run `cell` over these time-major inputs and carry through `sequence` (the
    cell's exact type is one of the kind's, float32 inputs and carry, one batch axis), else None."""
    if type(cell) not in self.cell_types or xs_TxBxD.ndim != 3 or xs_TxBxD.dtype != jnp.float32:
      return None
    leaves = self.carry_leaves(carry)
    if leaves is None or xs_TxBxD.shape[-1] != cell.in_features:  # The scan path raises the cell's own error.
      return None
    shape = (xs_TxBxD.shape[1], cell.hidden_features)
    if not all(getattr(a, 'shape', None) == shape and a.dtype == jnp.float32 for a in leaves):
      return None
    return self.weights_of(cell)

  def applies(self, cell: nnx.Module, xs_TxBxD: Array, carry) -> bool:
    """Whether `unroll` runs `cell` over these time-major inputs and carry fused."""
    return self.plan(cell, xs_TxBxD, carry) is not None

  def carry_leaves(self, carry) -> tuple | None:
    """The cell's carry as a tuple of its arrays, or None where it does not have the kind's structure."""
    if self.carry_size == 1:
      return None if isinstance(carry, (tuple, list, dict)) else (carry,)
    if isinstance(carry, tuple) and len(carry) == self.carry_size:
      return carry
    return None

  def pack(self, w: NamedTuple) -> Array:
    """The step's parameters as one vector, in `packed`'s order; absent ones are constants 1 (scales) or 0."""
    hidden = w.kernel_h.shape[0]
    parts = []
    for name, size in self.packed:
      value = getattr(w, name)
      if value is None:
        value = np.full((size * hidden,), 1.0 if name.startswith('scale') else 0.0, np.float32)
      parts.append(value)
    return jnp.concatenate(parts)

  def unpack(self, packed: Array, hidden: int) -> dict[str, Array]:
    """The inverse of `pack`: name -> its slice."""
    out, offset = {}, 0
    for name, size in self.packed:
      out[name] = packed[offset : offset + size * hidden]
      offset += size * hidden
    return out

  def reference_step(self, px, gh, carry, lengths, t, packed, eps: float, norm: str):
    """The step after its matmuls in jnp, from the packed parameters: (new carry tuple, y); what `kernel_forward`
    computes."""
    return self.step(px, gh, tuple(carry), lengths, t, self.unpack(packed, carry[-1].shape[-1]), eps, norm)

  def reference_step_backward(self, px, gh, carry, dcarry, dy, lengths, t, packed, eps, norm):
    """JAX's transpose of `reference_step`: (d px, d gh, d carry tuple (h's part that skips W_h), d packed); what
    `kernel_backward` computes."""
    step = lambda px, gh, carry, packed: self.reference_step(px, gh, carry, lengths, t, packed, eps, norm)
    _, vjp = jax.vjp(step, px, gh, tuple(carry), packed)
    return vjp((tuple(dcarry), dy))


def plain_layer_norm(ln: nnx.Module) -> float | None:
  """The eps of an LN (or RMS norm) module the fused path computes exactly (gain and bias, the RMS norm's gain only;
  last axis, float32, no mask), else None."""
  has_bias = ln.center  # `RMSNorm` has no bias, `LayerNorm` must have one.
  plain = (
    ln.scale is not None
    and (ln.bias is not None) == has_bias
    and ln.dtype in (None, jnp.float32)
    and ln.axis_name is None
    and ln.reduction_axes in (-1, (-1,))
    and ln.feature_axes in (-1, (-1,))
    and ln.scale[...].dtype == jnp.float32
    and (not has_bias or ln.bias[...].dtype == jnp.float32)
  )
  return float(ln.epsilon) if plain else None


def layer_norm_params(lns: dict[str, nnx.Module]) -> tuple[dict[str, Array], float] | None:
  """({'scale_<key>': gain, 'bias_<key>': offset} of every LN, their common eps), or None where one is not plain
  (`plain_layer_norm`) or their epsilons differ (the kernels take one). RMS norms give their gains only: their
  offsets' slots stay None (packed as 0, their cotangents dropped)."""
  eps = {plain_layer_norm(ln) for ln in lns.values()}
  if len(eps) != 1 or None in eps:
    return None
  params = {f'{k}_{key}': getattr(ln, k) for key, ln in lns.items() for k in ('scale', 'bias')}
  return {name: p[...] for name, p in params.items() if p is not None}, eps.pop()


def float32_params(*params: nnx.Param) -> bool:
  return all(p[...].dtype == jnp.float32 for p in params)


def run(kind: Kind, fused: tuple[NamedTuple, bool, float], xs_TxBxD: Array, carry, lengths_B: Array):
  """`sequence` from the cell's own carry (as `plan` accepted it) to (its carry, ys_TxBxH)."""
  weights, norm, eps = fused
  new_carry, ys_TxBxH = sequence(kind, weights, xs_TxBxD, kind.carry_leaves(carry), lengths_B, norm, eps)
  return (new_carry[0] if kind.carry_size == 1 else tuple(new_carry)), ys_TxBxH


def _step_forward(kind, px, gh, carry, lengths, t, packed, eps, norm):
  reference = lambda *a: kind.reference_step(*a, eps, norm)
  if not native.available(np.float32):
    return reference(px, gh, carry, lengths, t, packed)

  def kernel(px, gh, carry, lengths, t, packed):
    *new, y = kind.kernel_forward(px, gh, *carry, lengths, t, packed, eps, norm)
    return tuple(new), y

  return jax.lax.platform_dependent(px, gh, carry, lengths, t, packed, cpu=kernel, default=reference)


def _step_backward(kind, px, gh, carry, dcarry, dy, lengths, t, packed, eps, norm):
  reference = lambda *a: tuple(kind.reference_step_backward(*a, eps, norm))
  if not native.available(np.float32):
    return reference(px, gh, carry, dcarry, dy, lengths, t, packed)

  def kernel(px, gh, carry, dcarry, dy, lengths, t, packed):
    dpx, dgh, *dprev, dpacked = kind.kernel_backward(px, gh, *carry, *dcarry, dy, lengths, t, packed, eps, norm)
    return dpx, dgh, tuple(dprev), dpacked

  return jax.lax.platform_dependent(px, gh, carry, dcarry, dy, lengths, t, packed, cpu=kernel, default=reference)


def _forward(kind, w, xs_TxBxD, carry0, lengths, norm, eps, keep_residuals):
  t, b, d = xs_TxBxD.shape
  packed = kind.pack(w)
  p_TxBxWH = (xs_TxBxD.reshape(t * b, d) @ w.kernel_i).reshape(t, b, -1)

  def step(carry, inputs):
    px_t, step_t = inputs
    gh_t = carry[-1] @ w.kernel_h
    new_carry, y = _step_forward(kind, px_t, gh_t, carry, lengths, step_t, packed, eps, norm)
    return new_carry, ((y, gh_t, carry) if keep_residuals else y)

  steps = jnp.arange(t, dtype=jnp.int32)
  carry, outputs = jax.lax.scan(step, tuple(carry0), (p_TxBxWH, steps))
  if not keep_residuals:
    return carry, outputs, None
  ys, gh, carries = outputs
  return carry, ys, (packed, p_TxBxWH, gh, carries)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5, 6))
def sequence(kind: Kind, w: NamedTuple, xs_TxBxD: Array, carry0: tuple, lengths_B: Array, norm: str, eps: float):
  """Runs the cell of `kind` (plain, layer- or RMS-normalized, as `norm` says) over time-major inputs from the carry
  `carry0`.

  Args:
    kind: the cell family.
    w: the cell's parameters (`kind.weights_of`).
    xs_TxBxD: float32 inputs, time first.
    carry0: the initial carry, a tuple of `kind.carry_size` (B, H) float32 arrays, h last.
    lengths_B: int32 valid steps per example; at steps t >= length the carry is left unchanged and the output is 0.
    norm: one of `NORMS`: 'none' (the plain cell), 'ln' (the layer-normalized one) or 'rms' (the RMS-normalized one).
    eps: the norms' epsilon.

  Returns:
    (carry tuple, ys_TxBxH): the final carry and every step's output, as `unroll` returns them (time-major).
  """
  carry, ys, _ = _forward(kind, w, xs_TxBxD, carry0, lengths_B, norm, eps, keep_residuals=False)
  return carry, ys


def _sequence_fwd(kind, w, xs_TxBxD, carry0, lengths_B, norm, eps):
  carry, ys, residuals = _forward(kind, w, xs_TxBxD, carry0, lengths_B, norm, eps, keep_residuals=True)
  return (carry, ys), (w, xs_TxBxD, lengths_B, residuals)


def _sequence_bwd(kind, norm, eps, saved, cotangents):
  w, xs_TxBxD, lengths, (packed, p, gh, carries) = saved
  dcarry_T, dys = cotangents
  t, b, d = xs_TxBxD.shape
  hidden = w.kernel_h.shape[0]

  def step(dcarry, inputs):
    px_t, gh_t, carry_t, dy_t, step_t = inputs
    dpx, dgh, dprev, dpacked = _step_backward(
      kind, px_t, gh_t, carry_t, dcarry, dy_t, lengths, step_t, packed, eps, norm
    )
    dh_prev = dgh @ w.kernel_h.T + dprev[-1]
    return (*dprev[:-1], dh_prev), (dpx, dgh, dpacked)

  steps = jnp.arange(t, dtype=jnp.int32)
  dcarry0, (dp, dgh, dpacked) = jax.lax.scan(step, tuple(dcarry_T), (p, gh, carries, dys, steps), reverse=True)
  rows, width = t * b, kind.width * hidden
  dp, dgh = dp.reshape(rows, width), dgh.reshape(rows, width)
  sums = kind.unpack(dpacked.sum(0), hidden)
  grads = dict(
    kernel_i=xs_TxBxD.reshape(rows, d).T @ dp,
    kernel_h=carries[-1].reshape(rows, hidden).T @ dgh,
    **{name: sums[name] for name, _ in kind.packed if getattr(w, name) is not None},
  )
  dxs = (dp @ w.kernel_i.T).reshape(t, b, d)
  return w._replace(**grads), dxs, dcarry0, None


sequence.defvjp(_sequence_fwd, _sequence_bwd)
