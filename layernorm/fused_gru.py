"""`GRUCell`, `LNGRUCell` and `RMSGRUCell` on the fused path (`layernorm.fused_rnn`): what `unroll` runs for them.

The step after its two matmuls (eq. 23-25, and eq. 26-28 with its four layer norms or, for the RMS-GRU, RMS norms,
exactly as the cells' `__call__` computes them: the reset gate multiplies the (normalized) `U h`, after the matmul;
`GRUCell`'s input bias, which `LNGRUCell` lacks, is added to `W_x x`, and `RMSGRUCell`'s to the normalized `W_x x`;
`unroll`'s padding rule) is one native kernel forward and one backward
(`csrc/gru_step_cpu.cc`); `_step` is the same step in jnp, which runs off CPU or with `LAYERNORM_NATIVE=0`. The
h that enters the update `h' = (1 - z) n + z h` directly is the one part of d h_prev that skips W_h. Tests:
tests/test_fused_gru.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from layernorm import cells, fused_rnn, native
from layernorm.ops import layer_norm, rms_norm

Array = jax.Array


class Weights(NamedTuple):
  """The parameters of one cell, gates in the order (r, z, n); the LN gains and biases are None for the plain GRU, the
  input bias None for the LN-GRU (which has none), the norms' biases None for the RMS-GRU (gains only)."""

  kernel_i: Array  # (D, 3H)
  kernel_h: Array  # (H, 3H)
  bias: Array | None = None  # (3H,) GRUCell's dense_i.bias, RMSGRUCell's bias
  scale_ig: Array | None = None  # (2H,) LN (or RMS norm) of W_x x's gate block (r, z)
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


# Each cell type the fused path runs, with the norm its step applies (`fused_rnn.NORMS`).
NORM_OF = {cells.GRUCell: 'none', cells.LNGRUCell: 'ln', cells.RMSGRUCell: 'rms'}
# Where each cell keeps the 3H bias added after its (normalized) input projection: GRUCell's is dense_i's (nothing
# normalizes W_x x, so before or after is the same), RMSGRUCell's its own; LNGRUCell has none (its LN offsets).
_BIAS_OF = {
  'none': lambda cell: cell.dense_i.bias,
  'ln': lambda cell: cell.dense_i.bias,
  'rms': lambda cell: cell.bias,
}
_NORM_NAMES = {'ig': 'i_gates', 'hg': 'h_gates', 'ic': 'i_cand', 'hc': 'h_cand'}


def weights_of(cell) -> tuple[Weights, str, float] | None:
  """(weights, norm, eps) of a `GRUCell`, `LNGRUCell` or `RMSGRUCell` the fused path can run, else None (any other
  cell, a subclass, which may change the step, a recurrent projection with a bias, an input projection with a bias
  where the cell normalizes it, or a normalized GRU whose norms are configured differently)."""
  norm = NORM_OF.get(type(cell))
  if norm is None:
    return None
  kernels = (cell.dense_i.kernel, cell.dense_h.kernel)
  bias = _BIAS_OF[norm](cell)
  if cell.dense_h.bias is not None or (bias is None) != (norm == 'ln') or not fused_rnn.float32_params(*kernels):
    return None
  if norm == 'rms' and cell.dense_i.bias is not None:
    return None
  if bias is not None and not fused_rnn.float32_params(bias):
    return None
  weights = Weights(*(k[...] for k in kernels), bias=None if bias is None else bias[...])
  if norm == 'none':
    return weights, norm, 0.0
  norms = fused_rnn.layer_norm_params({k: getattr(cell, f'{norm}_{name}') for k, name in _NORM_NAMES.items()})
  if norms is None:
    return None
  return weights._replace(**norms[0]), norm, norms[1]


def _step(px, gh, carry, lengths, t, p, eps: float, norm: str):
  """Eq. 26-28 (eq. 23-25 with norm 'none'; RMS norms for 'rms') after the matmuls, as the cells' `__call__` computes
  them; padding rows (t >= length) keep their carry and output 0."""
  (h,) = carry
  g = 2 * h.shape[-1]
  if norm == 'ln':
    apply = lambda v, k: layer_norm(v, p[f'scale_{k}'], p[f'bias_{k}'], eps=eps)
  elif norm == 'rms':  # The offsets' slots hold 0: the RMS cells have gains only.
    apply = lambda v, k: rms_norm(v, p[f'scale_{k}'], eps=eps) + p[f'bias_{k}']
  else:
    apply = lambda v, k: v
  xg, xc, hg, hc = apply(px[:, :g], 'ig'), apply(px[:, g:], 'ic'), apply(gh[:, :g], 'hg'), apply(gh[:, g:], 'hc')
  r, z = jnp.split(jax.nn.sigmoid(xg + p['bias'][:g] + hg), 2, axis=-1)
  n = jnp.tanh(xc + p['bias'][g:] + r * hc)
  h_new = (1.0 - z) * n + z * h
  valid = (t < lengths)[:, None]
  return (jnp.where(valid, h_new, h),), jnp.where(valid, h_new, 0.0)


KIND = fused_rnn.Kind(
  name='gru',
  cell_types=tuple(NORM_OF),
  width=3,
  packed=PACKED,
  carry_size=1,
  weights_of=weights_of,
  step=_step,
  kernel_forward=native.gru_step_forward,
  kernel_backward=native.gru_step_backward,
)
