"""`step(cell, carry, x)`: one step of a cell, on the fused LSTM kernels where they apply.

Models whose steps depend on each other across layers (handwriting synthesis: the window reads the first layer's output
before the second layer runs) cannot hand a whole sequence to `unroll`; they call the cell once per step in their own
scan. For `LSTMCell`, `LNLSTMCell` and `RMSLSTMCell` that is two matmuls and, for the LN-LSTM (and the RMS-LSTM), three
norms and a dozen element-wise kernels forward, more backward. `step` runs the same step as
`layernorm.fused_rnn.sequence` of length 1: the two matmuls and one native kernel forward (all three norms inside it),
one kernel and the matmuls backward. Every other cell, and inputs the kernel does not take (other dtypes, several batch
axes), run `cell(carry, x)` itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from layernorm import fused_lstm, fused_rnn

IMPLEMENTATIONS = ('auto', 'call')


def step(cell: nnx.Module, carry, x: jax.Array, *, impl: str = 'auto'):
  """`cell(carry, x) -> (carry, y)`, the same values and gradients, faster for the LSTM cells on CPU.

  Args:
    cell: any cell with flax's protocol.
    carry: its carry; for the LSTM cells (c, h), each [B, H].
    x: the step's input [B, D].
    impl: 'auto' (the fused kernels where they apply) or 'call' (always `cell(carry, x)`; the fused path is a
      `jax.custom_vjp`, so forward-mode derivatives need 'call').

  Raises:
    ValueError: `impl` is unknown.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'step impl must be one of {IMPLEMENTATIONS}; got {impl!r}.')
  x = jnp.asarray(x)
  fused = fused_lstm.KIND.plan(cell, x[None], carry) if impl == 'auto' and x.ndim == 2 else None
  if fused is None:
    return cell(carry, x)
  lengths = jnp.ones(x.shape[:1], jnp.int32)  # One valid step for every row: no padding inside a single step.
  new_carry, ys = fused_rnn.run(fused_lstm.KIND, fused, x[None], carry, lengths)
  return new_carry, ys[0]
