"""`unroll` against a Python loop over the cell, per-example runs, flipped sequences, and under jit and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import BNLSTMCell, GRUCell, LNGRUCell, LNLSTMCell, LSTMCell, unroll

D, H, B, T = 3, 8, 4, 6
LENGTHS = np.array([6, 3, 0, 1], np.int32)  # Full, partial, empty and single-step sequences.

run = nnx.jit(unroll, static_argnames=('time_major', 'reverse'))


def inputs(seed, shape=(B, T, D)):
  return jnp.asarray(np.random.default_rng(seed).normal(0.3, 1.2, shape), jnp.float32)


def make_cell(cell_type, seed=0):
  cell = cell_type(D, H, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed + 1)  # Non-trivial gains and biases.
  params = nnx.state(cell, nnx.Param)
  nnx.update(cell, jax.tree.map(lambda p: p + 0.2 * rng.normal(size=p.shape).astype(np.float32), params))
  return cell


@nnx.jit
def step(cell, carry, x):
  return cell(carry, x)


def loop(cell, xs_BxTxD, carry):
  """A Python loop over time, the trusted way to run a cell (each step jitted: op-by-op dispatch is slow here)."""
  ys = []
  for t in range(xs_BxTxD.shape[1]):
    carry, y = step(cell, carry, xs_BxTxD[:, t])
    ys.append(y)
  return carry, jnp.stack(ys, axis=1) if ys else jnp.zeros((xs_BxTxD.shape[0], 0, H))


def assert_trees_close(a, b, atol=1e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol), a, b)


@pytest.mark.parametrize('cell_type', [LNLSTMCell, GRUCell, BNLSTMCell])
def test_unroll_equals_a_python_loop_including_state_updates(cell_type):
  cell = make_cell(cell_type)
  twin = nnx.clone(cell)
  xs = inputs(1)
  carry0 = jax.tree.map(lambda a: a + 0.5 if a.dtype == jnp.float32 else a, cell.initialize_carry((B, D)))
  carry, ys = unroll(cell, xs, carry=carry0)
  carry_ref, ys_ref = loop(twin, xs, carry0)
  np.testing.assert_allclose(ys, ys_ref, atol=1e-5)
  assert_trees_close(carry, carry_ref)
  assert_trees_close(nnx.state(cell), nnx.state(twin))  # BNLSTMCell: running statistics of every step.


def test_multiple_batch_axes_equal_a_flat_batch():
  cell = make_cell(LNLSTMCell)
  xs = inputs(1, (2, 3, T, D))
  (c, h), ys = run(cell, xs, seq_lengths=jnp.array([[6, 2, 0], [1, 5, 6]]))
  (c_flat, h_flat), ys_flat = run(cell, xs.reshape(6, T, D), seq_lengths=jnp.array([6, 2, 0, 1, 5, 6]))
  np.testing.assert_allclose(ys.reshape(6, T, H), ys_flat, atol=1e-6)
  np.testing.assert_allclose(c.reshape(6, H), c_flat, atol=1e-6)
  np.testing.assert_allclose(h.reshape(6, H), h_flat, atol=1e-6)


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('cell_type', [LNLSTMCell, LNGRUCell])
def test_seq_lengths_give_each_example_its_own_last_valid_carry(cell_type, reverse):
  cell = make_cell(cell_type)
  xs = inputs(2)
  carry0 = jax.tree.map(lambda a: a + 0.5, cell.initialize_carry((B, D)))  # Length 0 must return it untouched.
  carry, ys = run(cell, xs, carry=carry0, seq_lengths=jnp.asarray(LENGTHS), reverse=reverse)
  for b, n in enumerate(LENGTHS):
    carry_b = jax.tree.map(lambda a, b=b: a[b : b + 1], carry0)
    xs_b = xs[b : b + 1, :n]
    # Alone, the reverse pass is the forward pass over the example's valid steps in reverse order.
    carry_alone, ys_alone = loop(cell, xs_b[:, ::-1] if reverse else xs_b, carry_b)
    ys_alone = ys_alone[:, ::-1] if reverse else ys_alone
    assert_trees_close(jax.tree.map(lambda a, b=b: a[b : b + 1], carry), carry_alone)
    np.testing.assert_allclose(ys[b : b + 1, :n], ys_alone, atol=1e-5)
    np.testing.assert_array_equal(ys[b, n:], 0.0)  # Outputs at padded steps are zeros.


def test_reverse_equals_unrolling_the_flipped_sequence():
  cell = make_cell(LSTMCell)
  xs = inputs(3)
  carry, ys = run(cell, xs, reverse=True)
  carry_flip, ys_flip = run(cell, xs[:, ::-1])
  assert_trees_close(carry, carry_flip)
  np.testing.assert_allclose(ys, ys_flip[:, ::-1], atol=1e-6)  # Outputs stay aligned with the input steps.
  assert float(jnp.max(jnp.abs(ys - run(cell, xs)[1]))) > 1e-2  # And the direction matters.


@pytest.mark.parametrize('reverse', [False, True])
def test_time_major_equals_batch_major_transposed(reverse):
  cell = make_cell(LNGRUCell)
  xs = inputs(4)
  lengths = jnp.asarray(LENGTHS)
  h, ys = run(cell, xs, seq_lengths=lengths, reverse=reverse)
  h_tm, ys_tm = run(cell, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths, time_major=True, reverse=reverse)
  np.testing.assert_allclose(h_tm, h, atol=1e-6)
  np.testing.assert_allclose(jnp.swapaxes(ys_tm, 0, 1), ys, atol=1e-6)


def test_carry_and_step_counter_continue_across_calls():
  # BNLSTMCell's step counter lives in the carry: a sequence split in two uses each step's own statistics.
  cell = make_cell(BNLSTMCell)
  rng = np.random.default_rng(5)
  for bn in [cell.bn_i, cell.bn_h, cell.bn_c]:
    bn.mean[...] = rng.normal(0, 0.5, bn.mean.shape).astype(np.float32)
    bn.var[...] = rng.uniform(0.5, 2.0, bn.var.shape).astype(np.float32)
  cell.eval()
  xs = inputs(5)
  carry_full, ys_full = run(cell, xs)
  carry_half, ys_a = run(cell, xs[:, :2])
  carry, ys_b = run(cell, xs[:, 2:], carry=carry_half)
  assert int(carry[2]) == T
  assert_trees_close(carry, carry_full, atol=1e-6)
  np.testing.assert_allclose(jnp.concatenate([ys_a, ys_b], axis=1), ys_full, atol=1e-6)


def test_stateful_cell_under_jax_jit_with_split_and_merge():
  cell = make_cell(BNLSTMCell)
  eager = nnx.clone(cell)
  xs = inputs(6)
  graphdef, state = nnx.split(cell)

  @jax.jit
  def forward(state, xs):
    module = nnx.merge(graphdef, state)
    carry, ys = unroll(module, xs, seq_lengths=jnp.asarray(LENGTHS))
    return carry, ys, nnx.state(module)

  carry, ys, new_state = forward(state, xs)
  carry_ref, ys_ref = unroll(eager, xs, seq_lengths=jnp.asarray(LENGTHS))
  np.testing.assert_allclose(ys, ys_ref, atol=1e-6)
  assert_trees_close(carry, carry_ref, atol=1e-6)
  assert_trees_close(new_state, nnx.state(eager), atol=1e-6)
  assert float(jnp.max(jnp.abs(new_state['bn_c']['mean'][...]))) > 0  # The running statistics did move.


def test_gradients_equal_those_of_a_python_loop():
  cell = make_cell(LNLSTMCell)
  n_steps = 4  # Fewer steps: the reference loop is unrolled in Python, every step traced anew.
  xs = inputs(7, (B, n_steps, D))
  graphdef, params, rest = nnx.split(cell, nnx.Param, ...)
  lengths = jnp.asarray(np.minimum(LENGTHS, n_steps))

  def loss_scan(params):
    (c, h), ys = unroll(nnx.merge(graphdef, params, rest), xs, seq_lengths=lengths)
    return jnp.sum(ys**2) + jnp.sum(c * h)

  def loss_loop(params):
    module = nnx.merge(graphdef, params, rest)
    c, h = module.initialize_carry((B, D))
    total = 0.0
    for t in range(n_steps):
      (c_new, h_new), y = module((c, h), xs[:, t])
      valid = (t < lengths)[:, None]  # A padded step leaves the state and contributes nothing.
      c, h = jnp.where(valid, c_new, c), jnp.where(valid, h_new, h)
      total = total + jnp.sum(jnp.where(valid, y, 0.0) ** 2)
    return total + jnp.sum(c * h)

  grads = jax.jit(jax.grad(loss_scan))(params)
  grads_ref = jax.jit(jax.grad(loss_loop))(params)  # Jitted: one compile, not one per operation of the loop.
  assert_trees_close(grads, grads_ref, atol=1e-5)
  assert float(jnp.max(jnp.abs(grads['ln_c']['scale'][...]))) > 1e-3


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell, BNLSTMCell, GRUCell])
def test_one_scan_with_two_matmuls_per_step(cell_type):
  cell = make_cell(cell_type)
  graphdef, state = nnx.split(cell)
  # impl='scan': the generic path (the LSTMs and GRUs take layernorm.fused_rnn by default; see test_fused_*.py).
  unrolled = lambda s, xs: unroll(nnx.merge(graphdef, s), xs, impl='scan')
  jaxpr = str(jax.make_jaxpr(unrolled)(state, inputs(8, (B, 50, D))))
  assert jaxpr.count('scan[') == 1
  assert jaxpr.count('dot_general') == 2  # Fused W_x x and W_h h, inside the scan body only.


def test_bad_arguments_name_the_problem():
  cell = make_cell(LSTMCell)
  with pytest.raises(ValueError, match=r'seq_lengths must have the batch shape \(4,\).*got \(3,\)'):
    unroll(cell, inputs(9), seq_lengths=jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match=r'\[\*batch, T, D\].*got shape \(6,\)'):
    unroll(cell, jnp.zeros((T,)))
  with pytest.raises(ValueError, match=rf'in_features={D}.*with 5 features'):
    unroll(cell, jnp.zeros((B, T, 5)))
