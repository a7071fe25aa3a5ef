"""`LSTMCell`, `LNLSTMCell` and `RMSLSTMCell` on the fused path (`layernorm.fused_rnn`): what `unroll` runs for them.

The step after its two matmuls (appendix eq. 20-22, eq. 17-19 without LN, the same with RMS norms for the RMS-LSTM, with
`unroll`'s padding rule), all three norms included, is one native kernel forward and one backward
(`csrc/lstm_step_cpu.cc`); `reference_step` is the same step in jnp, which runs off CPU or with `LAYERNORM_NATIVE=0`. At
the attentive reader's size (batch 64, hidden 128) the LN-LSTM's step cost 30-45 % more than the LSTM's on the scan;
fused, 1.1-2.0x faster forward+backward (benchmarks/README.md). Tests: tests/test_fused_lstm.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from layernorm import cells, fused_rnn, native
from layernorm.ops import layer_norm, rms_norm

Array = jax.Array


class Weights(NamedTuple):
  """The parameters of one cell; the LN gains and biases are None for the plain LSTM, the biases for the RMS-LSTM."""

  kernel_i: Array  # (D, 4H)
  kernel_h: Array  # (H, 4H)
  bias: Array  # (4H,)
  scale_i: Array | None = None  # (4H,) LN (or RMS norm) of W_x x
  bias_i: Array | None = None
  scale_h: Array | None = None  # (4H,) LN of W_h h
  bias_h: Array | None = None
  scale_c: Array | None = None  # (H,) LN of c
  bias_c: Array | None = None


# Each cell type the fused path runs, with the norm its step applies (`fused_rnn.NORMS`).
NORM_OF = {cells.LSTMCell: 'none', cells.LNLSTMCell: 'ln', cells.RMSLSTMCell: 'rms'}


def weights_of(cell) -> tuple[Weights, str, float] | None:
  """(weights, norm, eps) of an `LSTMCell`, `LNLSTMCell` or `RMSLSTMCell` the fused path can run, else None (any other
  cell, a subclass, which may change the step, or a normalized LSTM whose norms are configured differently)."""
  norm = NORM_OF.get(type(cell))
  if norm is None:
    return None
  params = (cell.dense_i.kernel, cell.dense_h.kernel, cell.bias)
  if not fused_rnn.float32_params(*params) or cell.dense_i.bias is not None or cell.dense_h.bias is not None:
    return None
  weights = Weights(*(p[...] for p in params))
  if norm == 'none':
    return weights, norm, 0.0
  prefix = 'ln' if norm == 'ln' else 'rms'
  norms = fused_rnn.layer_norm_params({k: getattr(cell, f'{prefix}_{k}') for k in ('i', 'h', 'c')})
  if norms is None:
    return None
  return weights._replace(**norms[0]), norm, norms[1]


# The packed parameter vector of the step kernels, in units of H: bias, scale_x, bias_x, scale_h, bias_h (4H each),
# scale_c, bias_c (H each); `csrc/lstm_step_cpu.cc` reads it in this order.
PACKED = (('bias', 4), ('scale_i', 4), ('bias_i', 4), ('scale_h', 4), ('bias_h', 4), ('scale_c', 1), ('bias_c', 1))


def _norm(norm: str, v, scale, bias, eps: float):
  """LN of v with its gain and offset, or RMS norm with its gain and the offset's slot (0: the RMS cells have none)."""
  if norm == 'ln':
    return layer_norm(v, scale, bias, eps=eps)
  return rms_norm(v, scale, eps=eps) + bias


def _step(px, gh, carry, lengths, t, p, eps: float, norm: str):
  """Eq. 20-22 (eq. 17-19 with norm 'none'; RMS norms for 'rms') after the matmuls, as the cells' `__call__` computes
  them; padding rows (t >= length) keep their carry and output 0."""
  c, h = carry
  if norm == 'none':
    gates = px + gh
  else:
    gates = _norm(norm, px, p['scale_i'], p['bias_i'], eps) + _norm(norm, gh, p['scale_h'], p['bias_h'], eps)
  c_new, o = cells._lstm_update(gates + p['bias'], c)
  h_new = o * jnp.tanh(c_new if norm == 'none' else _norm(norm, c_new, p['scale_c'], p['bias_c'], eps))
  valid = (t < lengths)[:, None]
  return (jnp.where(valid, c_new, c), jnp.where(valid, h_new, h)), jnp.where(valid, h_new, 0.0)


def _kernel_backward(px, gh, c, h, dc, dh, dy, lengths, t, packed, eps, norm):
  # The kernel needs no h: h enters the step only as the padding rows' carry, whose cotangent is dh itself.
  return native.lstm_step_backward(px, gh, c, dc, dh, dy, lengths, t, packed, eps, norm)


KIND = fused_rnn.Kind(
  name='lstm',
  cell_types=tuple(NORM_OF),
  width=4,
  packed=PACKED,
  carry_size=2,
  weights_of=weights_of,
  step=_step,
  kernel_forward=native.lstm_step_forward,
  kernel_backward=_kernel_backward,
)
