"""`GRUCell` and `LNGRUCell` on the fused path (`layernorm.fused_rnn`): what `unroll` runs for them.

The step after its two matmuls (eq. 23-25, and eq. 26-28 with its four layer norms, exactly as the cells' `__call__`
computes them: the reset gate multiplies the (normalized) `U h`, after the matmul; `GRUCell`'s input bias, which
`LNGRUCell` lacks, is added to `W_x x`; `unroll`'s padding rule) is one native kernel forward and one backward
(`csrc/gru_step_cpu.cc`); `_step` is the same step in jnp, which runs off CPU or with `LAYERNORM_NATIVE=0`. The
h that enters the update `h' = (1 - z) n + z h` directly is the one part of d h_prev that skips W_h. Tests:
tests/test_fused_gru.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from layernorm import cells, fused_rnn, native
from layernorm.ops import layer_norm

Array = jax.Array


class Weights(NamedTuple):
  """The parameters of one cell, gates in the order (r, z, n); the LN gains and biases are None for the plain GRU, the
  input bias None for the LN-GRU (which has none)."""

  kernel_i: Array  # (D, 3H)
  kernel_h: Array  # (H, 3H)
  bias: Array | None = None  # (3H,) GRUCell's dense_i.bias
  scale_ig: Array | None = None  # (2H,) LN of W_x x's gate block (r, z)
  bias_ig: Array | None = None
  scale_hg: Array | None = None  # (2H,) LN of W_h h's gate block
  bias_hg: Array | None = None
  scale_ic: Array | None = None  # (H,) LN of W_x x's candidate block
  bias_ic: Array | None = None
  scale_hc: Array | None = None  # (H,) LN of W_h h's candidate block
  bias_hc: Array | None = None


# The packed parameter vector of the step kernels, in units of H; `csrc/gru_step_cpu.cc` reads it in this order.
PACKED = (
  ('bias', 3),
  ('scale_ig', 2),
  ('bias_ig', 2),
  ('scale_hg', 2),
  ('bias_hg', 2),
  ('scale_ic', 1),
  ('bias_ic', 1),
  ('scale_hc', 1),
  ('bias_hc', 1),
)


def weights_of(cell) -> tuple[Weights, bool, float] | None:
  """(weights, ln, eps) of a `GRUCell` or `LNGRUCell` the fused path can run, else None (any other cell, a subclass,
  which may change the step, a recurrent projection with a bias, or an LN-GRU whose layer norms are configured
  differently)."""
  if type(cell) not in (cells.GRUCell, cells.LNGRUCell):
    return None
  ln = type(cell) is cells.LNGRUCell
  kernels = (cell.dense_i.kernel, cell.dense_h.kernel)
  bias = cell.dense_i.bias
  if cell.dense_h.bias is not None or (bias is not None) == ln or not fused_rnn.float32_params(*kernels):
    return None
  if bias is not None and not fused_rnn.float32_params(bias):
    return None
  weights = Weights(*(k[...] for k in kernels), bias=None if bias is None else bias[...])
  if not ln:
    return weights, False, 0.0
  lns = {'ig': cell.ln_i_gates, 'hg': cell.ln_h_gates, 'ic': cell.ln_i_cand, 'hc': cell.ln_h_cand}
  norms = fused_rnn.layer_norm_params(lns)
  if norms is None:
    return None
  return weights._replace(**norms[0]), True, norms[1]


def _step(px, gh, carry, lengths, t, p, eps: float, ln: bool):
  """Eq. 26-28 (eq. 23-25 without ln) after the matmuls, as the cells' `__call__` computes them; padding rows (t >=
  length) keep their carry and output 0."""
  (h,) = carry
  g = 2 * h.shape[-1]
  if ln:
    norm = lambda v, k: layer_norm(v, p[f'scale_{k}'], p[f'bias_{k}'], eps=eps)
    xg, xc, hg, hc = norm(px[:, :g], 'ig'), norm(px[:, g:], 'ic'), norm(gh[:, :g], 'hg'), norm(gh[:, g:], 'hc')
  else:
    xg, xc, hg, hc = px[:, :g], px[:, g:], gh[:, :g], gh[:, g:]
  r, z = jnp.split(jax.nn.sigmoid(xg + p['bias'][:g] + hg), 2, axis=-1)
  n = jnp.tanh(xc + p['bias'][g:] + r * hc)
  h_new = (1.0 - z) * n + z * h
  valid = (t < lengths)[:, None]
  return (jnp.where(valid, h_new, h),), jnp.where(valid, h_new, 0.0)


KIND = fused_rnn.Kind(
  name='gru',
  cell_types=(cells.GRUCell, cells.LNGRUCell),
  width=3,
  packed=PACKED,
  carry_size=1,
  weights_of=weights_of,
  step=_step,
  kernel_forward=native.gru_step_forward,
  kernel_backward=native.gru_step_backward,
)
