"""`unroll`: run a recurrent cell over a sequence with one `jax.lax.scan`.

The cell's parameters are closed over by the scan; the rest of its state (batch-norm running statistics, RNG
counts) is threaded through the scan's carry and written back into the cell afterwards, so cells that update
state at every step, like `BNLSTMCell` in training mode, work under `jax.jit`, `nnx.jit` and `jax.grad`.

`LSTMCell`, `LNLSTMCell`, `RMSLSTMCell`, `GRUCell`, `LNGRUCell` and `RMSGRUCell` (exactly these types, float32, one
batch axis, forwards) instead run through `layernorm.fused_rnn` (`fused_lstm`, `fused_gru`): the same function with the
input projection hoisted out of the loop, one native kernel per step on CPU and a hand-written backward:
forward+backward 1.1-2.0x faster for the LN-LSTM and 1.0-1.4x for the LSTM at H 128-1000; for the LN-GRU about 1.9x at H
128 and 1.6x at H 1000, level at H 400 (benchmarks/README.md). `impl='scan'` keeps the generic scan, which forward-mode
derivatives (`jvp`, `hessian`) of those cells need.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from layernorm import fused_gru, fused_lstm, fused_rnn

IMPLEMENTATIONS = ('auto', 'scan')
# The cell families `unroll` runs fused where they apply (`layernorm.fused_rnn`).
FUSED = (fused_lstm.KIND, fused_gru.KIND)
Array = jax.Array
Carry = Any


def _keep_valid(valid_B: Array, new: Array, old: Array) -> Array:
  """`new` where the example is valid, else `old`; leaves without the batch axes (a shared step counter) take `new`."""
  batch_shape = valid_B.shape
  if new.shape[: len(batch_shape)] != batch_shape:
    return new
  return jnp.where(valid_B.reshape(batch_shape + (1,) * (new.ndim - len(batch_shape))), new, old)


def unroll(
  cell: nnx.Module,
  xs: Array,
  *,
  carry: Carry | None = None,
  seq_lengths: Array | None = None,
  time_major: bool = False,
  reverse: bool = False,
  impl: str = 'auto',
) -> tuple[Carry, Array]:
  """Applies `cell(carry, x) -> (carry, y)` at every time step of `xs`.

  Args:
    cell: a cell with flax's protocol, `cell(carry, x) -> (carry, y)` and `initialize_carry(input_shape)` (any
      `nnx.RNNCellBase`, such as `layernorm.LNLSTMCell` or flax's own cells). Its non-parameter state (e.g. running
      statistics) is updated in place.
    xs: inputs of shape [*batch, T, D], or [T, *batch, D] with `time_major`.
    carry: the initial carry; None starts from `cell.initialize_carry((*batch, D))`, zeros for this library's cells.
    seq_lengths: int array of shape `batch` with each example's number of valid steps (the rest is padding). At a
      padded step the carry is left unchanged (every leaf with the batch axes, e.g. both c and h) and the output is
      zero, so the returned carry is the one after each example's last valid step.
    time_major: whether time is the first axis of `xs` (and of the outputs).
    reverse: process time backwards, from the last step to the first. Outputs stay in input order (`ys[..., t, :]`
      is the output at step t). With `seq_lengths`, the padded tail comes first and leaves the carry untouched, so
      each example's reverse pass starts at its last valid step from the initial carry.
    impl: 'auto' runs the plain, LN and RMS LSTM and GRU cells through `layernorm.fused_rnn` where it
      applies (float32 inputs and carry, one batch axis, not reversed) and every other cell as a scan of
      `cell(carry, x)`; 'scan' always scans (the fused path is a `jax.custom_vjp`, so `jvp`, `jacfwd` and `hessian`
      need 'scan').

  Returns:
    `(carry, ys)`: the final carry and the stacked outputs, laid out as `xs` (time-major or batch-major).

  Raises:
    ValueError: `xs` has fewer than 2 axes, `seq_lengths` does not have the batch shape, or `impl` is unknown.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'unroll impl must be one of {IMPLEMENTATIONS}; got {impl!r}.')
  xs = jnp.asarray(xs)
  if xs.ndim < 2:
    raise ValueError(f'unroll expects inputs of shape [*batch, T, D] (or [T, *batch, D]); got shape {xs.shape}.')
  xs_TxBxD = xs if time_major else jnp.moveaxis(xs, -2, 0)
  batch_shape = xs_TxBxD.shape[1:-1]
  if seq_lengths is not None:
    seq_lengths = jnp.asarray(seq_lengths)
    if seq_lengths.shape != batch_shape:
      raise ValueError(
        f'seq_lengths must have the batch shape {batch_shape} of the inputs {xs.shape}; got {seq_lengths.shape}.'
      )
  if carry is None:
    carry = cell.initialize_carry(xs_TxBxD.shape[1:])
  for kind in FUSED if impl == 'auto' and not reverse else ():
    fused = kind.plan(cell, xs_TxBxD, carry)
    if fused is not None:
      steps = xs_TxBxD.shape[0]
      lengths_B = jnp.full(batch_shape, steps, jnp.int32) if seq_lengths is None else seq_lengths.astype(jnp.int32)
      carry, ys_TxBxH = fused_rnn.run(kind, fused, xs_TxBxD, carry, lengths_B)
      return carry, ys_TxBxH if time_major else jnp.moveaxis(ys_TxBxH, 0, -2)

  graphdef, params, state = nnx.split(cell, nnx.Param, ...)

  def step(scan_carry, inputs):
    state, carry = scan_carry
    x_BxD, t = inputs
    module = nnx.merge(graphdef, params, state)
    new_carry, y = module(carry, x_BxD)
    if seq_lengths is not None:
      valid_B = t < seq_lengths
      new_carry = jax.tree.map(lambda n, o: _keep_valid(valid_B, n, o), new_carry, carry)
      y = jax.tree.map(lambda a: _keep_valid(valid_B, a, jnp.zeros_like(a)), y)
    _, _, state = nnx.split(module, nnx.Param, ...)
    return (state, new_carry), y

  steps = jnp.arange(xs_TxBxD.shape[0], dtype=jnp.int32)
  (state, carry), ys_TxBxH = jax.lax.scan(step, (state, carry), (xs_TxBxD, steps), reverse=reverse)
  nnx.update(cell, state)
  return carry, ys_TxBxH if time_major else jnp.moveaxis(ys_TxBxH, 0, -2)
