"""Every cell is an `nnx.RNNCellBase`: through flax's `nnx.RNN` and `nnx.Bidirectional` it gives what
`layernorm.unroll` gives on the same inputs, forward, reversed, with padding and in both directions.

Where they differ by design: at a padded step `unroll` keeps the carry and outputs zero, `nnx.RNN` runs on (its
outputs there are garbage, its returned carry is taken at the last valid step). So outputs are compared at valid
steps and carries as returned. `BNLSTMCell` is compared without padding only: its batch statistics include the padded
examples, whose carries the two runners evolve differently, and flax's last-carry selection cannot index its scalar
step counter.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import (
  BNLSTMCell,
  DRAWLSTMCell,
  GRUCell,
  LNGRUCell,
  LNLSTMCell,
  LSTMCell,
  RMSDRAWLSTMCell,
  RMSGRUCell,
  RMSLSTMCell,
  unroll,
)

D, H, B, T = 3, 8, 5, 6
LENGTHS = np.array([6, 2, 5, 1, 3])  # No zero length: flax's last-carry selection would pick step T - 1.
CELLS = [LSTMCell, LNLSTMCell, DRAWLSTMCell, GRUCell, LNGRUCell, BNLSTMCell, RMSLSTMCell, RMSDRAWLSTMCell, RMSGRUCell]
PADDABLE = [c for c in CELLS if c is not BNLSTMCell]


def make_cell(cell_type, seed=0):
  cell = cell_type(D, H, rngs=nnx.Rngs(seed))
  # Non-default LN gains and biases so the normalizations matter.
  for path, p in nnx.iter_graph(cell):
    if isinstance(p, nnx.Param) and path[-1] in ('scale', 'bias') and p[...].ndim == 1:
      p[...] = p[...] + 0.3 * jax.random.normal(
        jax.random.key(zlib.crc32('/'.join(map(str, path)).encode())), p[...].shape
      )
  return cell


def inputs(seed):
  return jax.random.normal(jax.random.key(seed), (B, T, D)) * 2


def valid_mask(lengths):
  return (np.arange(T)[None, :] < lengths[:, None])[..., None]


def assert_trees_close(a, b, tol=1e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('cell_type', CELLS)
def test_nnx_rnn_equals_unroll(cell_type, reverse):
  cell = make_cell(cell_type)
  twin = nnx.clone(cell)
  assert isinstance(cell, nnx.RNNCellBase) and cell.num_feature_axes == 1
  xs = inputs(1)
  carry, ys = nnx.RNN(cell, reverse=reverse, keep_order=True, return_carry=True)(xs)
  carry_ref, ys_ref = unroll(twin, xs, reverse=reverse)
  np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
  assert_trees_close(carry, carry_ref)
  assert_trees_close(nnx.state(cell), nnx.state(twin))  # BNLSTMCell: both updated the running statistics alike.


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('cell_type', PADDABLE)
def test_nnx_rnn_with_seq_lengths_equals_unroll_at_valid_steps(cell_type, reverse):
  cell = make_cell(cell_type)
  xs, lengths = inputs(2), jnp.asarray(LENGTHS)
  carry, ys = nnx.RNN(cell, reverse=reverse, keep_order=True)(xs, seq_lengths=lengths, return_carry=True)
  carry_ref, ys_ref = unroll(cell, xs, seq_lengths=lengths, reverse=reverse)
  valid = valid_mask(LENGTHS)
  np.testing.assert_allclose(np.where(valid, ys, 0.0), ys_ref, rtol=1e-5, atol=1e-5)
  assert_trees_close(carry, carry_ref)


@pytest.mark.parametrize('cell_type', PADDABLE)
def test_nnx_bidirectional_equals_two_unrolls(cell_type):
  forward, backward = make_cell(cell_type, 0), make_cell(cell_type, 1)
  xs, lengths = inputs(3), jnp.asarray(LENGTHS)
  bi = nnx.Bidirectional(nnx.RNN(forward), nnx.RNN(backward), return_carry=True)
  (carry_f, carry_b), ys = bi(xs, seq_lengths=lengths)
  ref_f, ys_f = unroll(forward, xs, seq_lengths=lengths)
  ref_b, ys_b = unroll(backward, xs, seq_lengths=lengths, reverse=True)
  np.testing.assert_allclose(np.where(valid_mask(LENGTHS), ys, 0.0), jnp.concatenate([ys_f, ys_b], -1), atol=1e-5)
  assert_trees_close((carry_f, carry_b), (ref_f, ref_b))


def test_bn_lstm_runs_bidirectionally_without_padding():
  forward, backward = make_cell(BNLSTMCell, 0), make_cell(BNLSTMCell, 1)
  twins = nnx.clone(forward), nnx.clone(backward)
  xs = inputs(4)
  ys = nnx.Bidirectional(nnx.RNN(forward), nnx.RNN(backward))(xs)
  ys_ref = jnp.concatenate([unroll(twins[0], xs)[1], unroll(twins[1], xs, reverse=True)[1]], -1)
  np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)


def test_unroll_without_carry_starts_from_the_cells_zero_carry_and_takes_a_caller_built_one():
  # The two ways callers start an LSTM: carry=None, and a (c, h) tuple of zeros they build themselves.
  cell, xs = make_cell(LNLSTMCell), inputs(5)
  lengths = jnp.asarray(LENGTHS)
  carry, ys = unroll(cell, xs, seq_lengths=lengths)
  zeros = (jnp.zeros((B, H)), jnp.zeros((B, H)))
  carry_own, ys_own = unroll(cell, xs, carry=zeros, seq_lengths=lengths)
  np.testing.assert_array_equal(ys, ys_own)
  assert_trees_close(carry, carry_own, 0.0)
  # And flax's RNN builds the same zero carry through the same protocol.
  np.testing.assert_allclose(np.where(valid_mask(LENGTHS), nnx.RNN(cell)(xs, seq_lengths=lengths), 0.0), ys, atol=1e-5)
