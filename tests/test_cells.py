"""The recurrent cells against flax's cells, float64 NumPy references of the paper's equations (and of their RMS-norm
forms), and invariances."""

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
  layer_norm,
  unroll,
)
from layernorm.cells import block_orthogonal_init, uniform_init

D, H, B, T = 8, 16, 5, 6
RMS_CELLS = [RMSLSTMCell, RMSDRAWLSTMCell, RMSGRUCell]
ALL_CELLS = [LSTMCell, LNLSTMCell, DRAWLSTMCell, BNLSTMCell, GRUCell, LNGRUCell, *RMS_CELLS]


def perturb_params(cell, seed, scale=0.3):
  """Adds noise to every parameter, so LN gains and biases are not their trivial initial values."""
  rng = np.random.default_rng(seed)
  params = nnx.state(cell, nnx.Param)
  nnx.update(cell, jax.tree.map(lambda p: p + scale * rng.normal(size=p.shape).astype(np.float32), params))


def inputs(seed, shape=(B, T, D), loc=0.5, scale=1.5):
  return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


# Jitted so that repeated runs of one cell configuration compile once (the suite runs on 2 shared CPU cores).
run = nnx.jit(unroll, static_argnames=('time_major', 'reverse'))


def loop(cell, xs_BxTxD, carry=None):
  """A Python loop over time: the trusted way to run a cell."""
  carry = cell.initialize_carry(xs_BxTxD.shape[:1] + xs_BxTxD.shape[2:]) if carry is None else carry
  step = nnx.jit(lambda cell, carry, x: cell(carry, x))  # Compiled once: op-by-op dispatch is slow on 2 cores.
  ys = []
  for t in range(xs_BxTxD.shape[1]):
    carry, y = step(cell, carry, xs_BxTxD[:, t])
    ys.append(y)
  return carry, jnp.stack(ys, axis=1)


# Float64 NumPy references, written from the appendix equations with the weights read from the module.


def f64(v):
  return np.asarray(v[...], np.float64)


def sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def ln(a, ln_module):
  mu = a.mean(-1, keepdims=True)
  var = ((a - mu) ** 2).mean(-1, keepdims=True)
  return (a - mu) / np.sqrt(var + 1e-5) * f64(ln_module.scale) + f64(ln_module.bias)


def rms(a, rms_module):
  """Zhang & Sennrich's RMS norm: a / RMS(a) * g, no mean subtracted and no offset; eps 1e-6."""
  assert rms_module.bias is None
  return a / np.sqrt((a**2).mean(-1, keepdims=True) + 1e-6) * f64(rms_module.scale)


NORMS = {'ln': ln, 'rms': rms}


def reference_lstm(cell, xs, *, ln_terms, ln_cell, norm='ln'):
  """Eq. 17-19 (plain), 20-22 (LN on both terms and on c) or 29-31 (LN on c only); weights in the order i, f, g, o.
  With norm 'rms', each LN is an RMS norm of the same block (the module `rms_<k>` where LN's is `ln_<k>`)."""
  wx, wh, b = f64(cell.dense_i.kernel), f64(cell.dense_h.kernel), f64(cell.bias)
  normalize = lambda a, k: NORMS[norm](a, getattr(cell, f'{norm}_{k}'))
  c = h = np.zeros((xs.shape[0], H))
  ys = []
  for t in range(xs.shape[1]):
    a_x, a_h = xs[:, t].astype(np.float64) @ wx, h @ wh
    a = normalize(a_h, 'h') + normalize(a_x, 'i') + b if ln_terms else a_h + a_x + b
    i, f, g, o = np.split(a, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(normalize(c, 'c') if ln_cell else c)
    ys.append(h)
  return c, h, np.stack(ys, 1)


def reference_ln_gru(cell, xs):
  """Eq. 26-28. The paper's update gate z_p is minus the module's z pre-activation: (1 - s(z_p)) = s(z)."""
  w, u = f64(cell.dense_i.kernel), f64(cell.dense_h.kernel)
  h = np.zeros((xs.shape[0], H))
  ys = []
  for t in range(xs.shape[1]):
    xw, uh = xs[:, t].astype(np.float64) @ w, h @ u
    gates = ln(uh[:, : 2 * H], cell.ln_h_gates) + ln(xw[:, : 2 * H], cell.ln_i_gates)
    r, z_p = gates[:, :H], -gates[:, H:]
    h_hat = np.tanh(ln(xw[:, 2 * H :], cell.ln_i_cand) + sigmoid(r) * ln(uh[:, 2 * H :], cell.ln_h_cand))
    h = (1 - sigmoid(z_p)) * h + sigmoid(z_p) * h_hat
    ys.append(h)
  return h, np.stack(ys, 1)


def reference_rms_gru(cell, xs):
  """Eq. 26-28 with each LN an RMS norm of the same block and the cell's input bias b after the norms (gates:
  RMS(U h) + RMS(W x) + b; candidate: RMS(W x) + b_n + r * RMS(U h), no bias inside the reset product)."""
  w, u, b = f64(cell.dense_i.kernel), f64(cell.dense_h.kernel), f64(cell.bias)
  h = np.zeros((xs.shape[0], H))
  ys = []
  for t in range(xs.shape[1]):
    xw, uh = xs[:, t].astype(np.float64) @ w, h @ u
    gates = rms(uh[:, : 2 * H], cell.rms_h_gates) + rms(xw[:, : 2 * H], cell.rms_i_gates) + b[: 2 * H]
    r, z_p = gates[:, :H], -gates[:, H:]
    candidate = rms(xw[:, 2 * H :], cell.rms_i_cand) + b[2 * H :] + sigmoid(r) * rms(uh[:, 2 * H :], cell.rms_h_cand)
    h = (1 - sigmoid(z_p)) * h + sigmoid(z_p) * np.tanh(candidate)
    ys.append(h)
  return h, np.stack(ys, 1)


def reference_bn_lstm(cell, xs, *, train, momentum=0.99):
  """Cooijmans et al.: BN(W_h h) + BN(W_x x) + b, h = s(o) tanh(BN(c)); statistics per step, biased variance."""
  wx, wh, b = f64(cell.dense_i.kernel), f64(cell.dense_h.kernel), f64(cell.bias)
  stats = {
    name: [f64(bn.mean).copy(), f64(bn.var).copy()]
    for name, bn in [('i', cell.bn_i), ('h', cell.bn_h), ('c', cell.bn_c)]
  }
  bns = {'i': cell.bn_i, 'h': cell.bn_h, 'c': cell.bn_c}

  def bn(a, name, t):
    step = min(t, cell.bn_i.max_steps - 1)
    mean, var = stats[name]
    if train:
      mu, v = a.mean(0), a.var(0)
      mean[step] = momentum * mean[step] + (1 - momentum) * mu
      var[step] = momentum * var[step] + (1 - momentum) * v
    else:
      mu, v = mean[step], var[step]
    beta = 0.0 if bns[name].bias is None else f64(bns[name].bias)
    return (a - mu) / np.sqrt(v + 1e-5) * f64(bns[name].scale) + beta

  c = h = np.zeros((xs.shape[0], H))
  ys = []
  for t in range(xs.shape[1]):
    a = bn(h @ wh, 'h', t) + bn(xs[:, t].astype(np.float64) @ wx, 'i', t) + b
    i, f, g, o = np.split(a, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(bn(c, 'c', t))
    ys.append(h)
  return h, np.stack(ys, 1), stats


# Equivalence with flax's fused cells.


@pytest.mark.parametrize('direction', ['ours_to_flax', 'flax_to_ours'])
def test_lstm_cell_equals_flax_optimized_lstm_cell(direction):
  ours = LSTMCell(D, H, rngs=nnx.Rngs(0))
  theirs = nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(1))
  pairs = [(ours.dense_i.kernel, theirs.dense_i.kernel), (ours.dense_h.kernel, theirs.dense_h.kernel)]
  pairs.append((ours.bias, theirs.dense_h.bias))
  rng = np.random.default_rng(2)
  for a, b in pairs:
    src, dst = (a, b) if direction == 'ours_to_flax' else (b, a)
    src[...] = src[...] + 0.3 * rng.normal(size=src.shape).astype(np.float32)  # a non-zero bias, distinct gates
    dst[...] = src[...]
  xs = inputs(3)
  carry = (jnp.asarray(inputs(4, (B, H))), jnp.asarray(inputs(5, (B, H))))
  (c1, h1), ys1 = loop(ours, xs, carry)
  (c2, h2), ys2 = loop(theirs, xs, carry)
  np.testing.assert_allclose(ys1, ys2, atol=1e-6)
  np.testing.assert_allclose(c1, c2, atol=1e-6)
  np.testing.assert_allclose(h1, h2, atol=1e-6)


@pytest.mark.parametrize('direction', ['ours_to_flax', 'flax_to_ours'])
def test_gru_cell_equals_flax_gru_cell(direction):
  ours = GRUCell(D, H, rngs=nnx.Rngs(0))
  theirs = nnx.GRUCell(D, H, rngs=nnx.Rngs(1))
  assert theirs.dense_h.bias is None and ours.dense_h.bias is None  # flax's reset gate multiplies a bias-free U h.
  rng = np.random.default_rng(2)
  for a, b in [(ours.dense_i, theirs.dense_i), (ours.dense_h, theirs.dense_h)]:
    for name in ['kernel', 'bias']:
      if getattr(a, name) is None:
        continue
      src, dst = (getattr(a, name), getattr(b, name))[:: 1 if direction == 'ours_to_flax' else -1]
      src[...] = src[...] + 0.3 * rng.normal(size=src.shape).astype(np.float32)
      dst[...] = src[...]
  xs = inputs(3)
  h0 = jnp.asarray(inputs(4, (B, H)))
  h1, ys1 = loop(ours, xs, h0)
  h2, ys2 = loop(theirs, xs, h0)
  np.testing.assert_allclose(ys1, ys2, atol=1e-6)
  np.testing.assert_allclose(h1, h2, atol=1e-6)


# The normalized cells against the float64 references.


@pytest.mark.parametrize(
  'cell_type,ln_terms,ln_cell,norm',
  [
    (LSTMCell, False, False, 'ln'),
    (LNLSTMCell, True, True, 'ln'),
    (DRAWLSTMCell, False, True, 'ln'),
    (RMSLSTMCell, True, True, 'rms'),
    (RMSDRAWLSTMCell, False, True, 'rms'),
  ],
)
def test_lstm_family_matches_float64_reference(cell_type, ln_terms, ln_cell, norm):
  cell = cell_type(D, H, rngs=nnx.Rngs(0))
  perturb_params(cell, 1)
  xs = inputs(2)
  (c, h), ys = run(cell, xs)
  c_ref, h_ref, ys_ref = reference_lstm(cell, xs, ln_terms=ln_terms, ln_cell=ln_cell, norm=norm)
  np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
  np.testing.assert_allclose(c, c_ref, atol=2e-5)
  np.testing.assert_allclose(h, h_ref, atol=2e-5)


def test_ln_gru_matches_float64_reference():
  cell = LNGRUCell(D, H, rngs=nnx.Rngs(0))
  assert cell.dense_i.bias is None  # eq. 26-27: the LN offsets are the input biases.
  perturb_params(cell, 1)
  xs = inputs(2)
  h, ys = run(cell, xs)
  h_ref, ys_ref = reference_ln_gru(cell, xs)
  np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
  np.testing.assert_allclose(h, h_ref, atol=2e-5)


def test_rms_gru_matches_float64_reference():
  cell = RMSGRUCell(D, H, rngs=nnx.Rngs(0))
  assert cell.dense_i.bias is None and cell.bias.shape == (3 * H,)  # Its input bias acts after the norms.
  perturb_params(cell, 1)
  xs = inputs(2)
  h, ys = run(cell, xs)
  h_ref, ys_ref = reference_rms_gru(cell, xs)
  np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
  np.testing.assert_allclose(h, h_ref, atol=2e-5)


@pytest.mark.parametrize('cell_type', RMS_CELLS)
def test_rms_cells_norms_have_gains_starting_at_one_and_no_offsets(cell_type):
  cell = cell_type(D, H, rngs=nnx.Rngs(0))
  norms = [m for _, m in nnx.iter_modules(cell) if type(m).__name__ == 'RMSNorm']
  assert len(norms) == {RMSLSTMCell: 3, RMSDRAWLSTMCell: 1, RMSGRUCell: 4}[cell_type]
  for m in norms:
    assert m.bias is None and m.epsilon == 1e-6
    np.testing.assert_array_equal(m.scale[...], 1.0)
  assert not any(type(m).__name__ == 'LayerNorm' for _, m in nnx.iter_modules(cell))


def test_draw_cell_carries_plain_lstm_memory_and_normalizes_only_its_tanh_copy():
  draw = DRAWLSTMCell(D, H, rngs=nnx.Rngs(0))
  perturb_params(draw, 1)
  plain = LSTMCell(D, H, rngs=nnx.Rngs(2))
  for name in ['dense_i', 'dense_h']:
    getattr(plain, name).kernel[...] = getattr(draw, name).kernel[...]
  plain.bias[...] = draw.bias[...]
  carry = (jnp.asarray(inputs(3, (B, H))), jnp.asarray(inputs(4, (B, H))))
  x = jnp.asarray(inputs(5, (B, D)))
  (c_draw, h_draw), _ = draw(carry, x)
  (c_plain, _), _ = plain(carry, x)
  np.testing.assert_allclose(c_draw, c_plain, atol=1e-6)  # Carried c is the plain LSTM's, un-normalized.
  o = jax.nn.sigmoid(
    jnp.split(x @ draw.dense_i.kernel[...] + carry[1] @ draw.dense_h.kernel[...] + draw.bias[...], 4, -1)[3]
  )
  expected_h = o * jnp.tanh(layer_norm(c_plain, draw.ln_c.scale[...], draw.ln_c.bias[...]))
  np.testing.assert_allclose(h_draw, expected_h, atol=1e-6)


# Invariance to re-scaling the input sequence (Table 1, "single training case re-scaling", through W_x).


@pytest.mark.parametrize(
  'ln_cell,plain_cell', [(LNLSTMCell, LSTMCell), (LNGRUCell, GRUCell), (RMSLSTMCell, LSTMCell), (RMSGRUCell, GRUCell)]
)
def test_ln_cells_are_invariant_to_input_scale_and_plain_cells_are_not(ln_cell, plain_cell):
  # LN with eps is invariant only up to eps / var: tiny sizes (3 inputs, 4 units) can give LN blocks a variance
  # near eps; at these sizes the eps term is well below the tolerance.
  xs = inputs(2)
  for cell_type, invariant in [(ln_cell, True), (plain_cell, False)]:
    cell = cell_type(D, H, rngs=nnx.Rngs(0))
    perturb_params(cell, 1)
    _, ys = run(cell, xs)
    _, ys_scaled = run(cell, 7.3 * xs)
    gap = float(jnp.max(jnp.abs(ys - ys_scaled)))
    if invariant:
      assert gap < 1e-4, f'{cell_type.__name__} changed by {gap} under input scaling'
    else:
      assert gap > 0.3, f'{cell_type.__name__} changed by only {gap} under input scaling'


@pytest.mark.parametrize('cell_type,invariant', [(LNLSTMCell, True), (RMSLSTMCell, False)])
def test_ln_not_rms_removes_a_shift_shared_by_every_gate_of_the_input_term(cell_type, invariant):
  # Table 1's weight matrix re-centering on W_x: the same vector added to every unit's input weights moves each
  # gate's W_x x by one amount per example, which LN's mean removes and RMS norm (no centring) does not.
  cell = cell_type(D, H, rngs=nnx.Rngs(0))
  perturb_params(cell, 1)
  xs = inputs(2)
  _, ys = run(cell, xs)
  gamma = np.random.default_rng(3).normal(0.0, 0.5, (D, 1)).astype(np.float32)
  cell.dense_i.kernel[...] = cell.dense_i.kernel[...] + gamma
  _, ys_shifted = run(cell, xs)
  gap = float(jnp.max(jnp.abs(ys - ys_shifted)))
  assert gap < 1e-4 if invariant else gap > 0.05, gap


# Recurrent batch norm.


def test_bn_lstm_initialisation():
  cell = BNLSTMCell(D, H, rngs=nnx.Rngs(0), max_steps=7)
  for bn in [cell.bn_i, cell.bn_h, cell.bn_c]:
    np.testing.assert_array_equal(bn.scale[...], np.float32(0.1))
    assert bn.mean.shape[0] == 7 and bn.var.shape[0] == 7
  assert cell.bn_i.bias is None and cell.bn_h.bias is None  # beta_x = beta_h = 0, not learned.
  np.testing.assert_array_equal(cell.bn_c.bias[...], 0.0)
  c, h, t = cell.initialize_carry((B, D))
  assert c.shape == h.shape == (B, H) and t.shape == () and t.dtype == jnp.int32 and int(t) == 0


@pytest.mark.parametrize('max_steps', [T, 3])  # 3 < T: later steps share (and keep updating) the last slot.
def test_bn_lstm_train_mode_uses_per_step_batch_statistics_and_updates_running_averages(max_steps):
  cell = BNLSTMCell(D, H, rngs=nnx.Rngs(0), max_steps=max_steps)
  perturb_params(cell, 1, scale=0.2)
  xs = inputs(2)
  h_ref, ys_ref, stats = reference_bn_lstm(cell, xs, train=True)
  (_, h, t), ys = run(cell, xs)
  assert int(t) == T
  np.testing.assert_allclose(ys, ys_ref, atol=5e-5)
  np.testing.assert_allclose(h, h_ref, atol=5e-5)
  for name, bn in [('i', cell.bn_i), ('h', cell.bn_h), ('c', cell.bn_c)]:
    np.testing.assert_allclose(bn.mean[...], stats[name][0], atol=1e-5)
    np.testing.assert_allclose(bn.var[...], stats[name][1], atol=1e-5)


def test_bn_lstm_eval_mode_uses_population_statistics_per_step():
  cell = BNLSTMCell(D, H, rngs=nnx.Rngs(0), max_steps=4)
  perturb_params(cell, 1, scale=0.2)
  rng = np.random.default_rng(3)
  for bn in [cell.bn_i, cell.bn_h, cell.bn_c]:
    bn.mean[...] = rng.normal(0, 0.5, bn.mean.shape).astype(np.float32)
    bn.var[...] = rng.uniform(0.5, 2.0, bn.var.shape).astype(np.float32)
  cell.eval()
  before = jax.tree.map(np.array, nnx.state(cell, nnx.BatchStat))
  xs = inputs(2)
  _, ys = run(cell, xs)
  _, ys_ref, _ = reference_bn_lstm(cell, xs, train=False)
  np.testing.assert_allclose(ys, ys_ref, atol=5e-5)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(cell, nnx.BatchStat), before)  # Eval leaves stats alone.
  _, ys_one = run(cell, xs[:1])  # Population statistics: an example's output does not depend on its batch.
  np.testing.assert_allclose(ys_one, ys[:1], atol=1e-6)
  cell.train()
  _, ys_train = run(cell, xs)
  assert float(jnp.max(jnp.abs(ys_train - ys))) > 1e-2  # Train mode normalizes with the batch instead.


# Options, dtypes and errors.


@pytest.mark.parametrize('cell_type', [LSTMCell, LNLSTMCell, DRAWLSTMCell, BNLSTMCell, RMSLSTMCell, RMSDRAWLSTMCell])
def test_forget_bias_lands_on_the_forget_gate(cell_type):
  cell = cell_type(D, H, rngs=nnx.Rngs(0), forget_bias=30.0)
  np.testing.assert_array_equal(cell.bias[...][H : 2 * H], 30.0)
  np.testing.assert_array_equal(np.delete(np.asarray(cell.bias[...]), np.s_[H : 2 * H]), 0.0)
  for dense in [cell.dense_i, cell.dense_h]:
    dense.kernel[...] = jnp.zeros_like(dense.kernel[...])
  carry = cell.initialize_carry((B, D))
  c0 = jnp.asarray(inputs(3, (B, H)))
  carry = (c0, *carry[1:])
  new_carry, _ = cell(carry, jnp.asarray(inputs(4, (B, D))))
  # Forget gate open (s(30) = 1) and candidate tanh(0) = 0: the memory is kept exactly.
  np.testing.assert_allclose(new_carry[0], c0, atol=1e-6)


@pytest.mark.parametrize('cell_type', ALL_CELLS)
def test_low_precision_inputs_keep_a_float32_carry(cell_type):
  cell = cell_type(D, H, rngs=nnx.Rngs(0))
  xs16 = jnp.asarray(inputs(2), jnp.bfloat16)
  carry16, ys16 = run(cell, xs16)
  carry32, ys32 = run(cell, xs16.astype(jnp.float32))
  assert ys16.dtype == jnp.float32
  assert jax.tree.map(lambda a: a.dtype, carry16) == jax.tree.map(lambda a: a.dtype, carry32)
  np.testing.assert_allclose(ys16, ys32, atol=1e-6)


@pytest.mark.parametrize('cell_type', ALL_CELLS)
def test_wrong_input_size_names_expected_and_actual(cell_type):
  cell = cell_type(D, H, rngs=nnx.Rngs(0))
  carry = cell.initialize_carry((B, D))
  with pytest.raises(ValueError, match=rf'{cell_type.__name__}.*in_features={D}.*\(5, 7\) with 7 features'):
    cell(carry, jnp.zeros((B, 7)))


def test_initialize_carry_takes_the_input_shape_as_flax_cells():
  assert [a.shape for a in LSTMCell(D, H, rngs=nnx.Rngs(0)).initialize_carry((2, 3, D))] == [(2, 3, H)] * 2
  assert GRUCell(D, H, rngs=nnx.Rngs(0)).initialize_carry((B, D)).shape == (B, H)
  ours = LNLSTMCell(D, H, rngs=nnx.Rngs(0)).initialize_carry((B, D), nnx.Rngs(1), nnx.initializers.normal(1.0))
  assert float(jnp.std(ours[0])) > 0.1 and not np.allclose(*ours)
  # The same keys as flax's cell draws for the same carry_init: a carry_init'ed model swaps cells without changes.
  theirs = nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(0)).initialize_carry(
    (B, D), nnx.Rngs(1), nnx.initializers.normal(1.0)
  )
  np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize('shape', [(B,), B, (B, D + 1)])
def test_initialize_carry_refuses_a_batch_shape(shape):
  # The library's former convention; taken silently it would build a carry without its batch axis.
  with pytest.raises(ValueError, match=rf'input shape \(\*batch, in_features\).*in_features={D}'):
    LNLSTMCell(D, H, rngs=nnx.Rngs(0)).initialize_carry(shape)


def test_block_orthogonal_init_makes_each_gate_block_orthogonal():
  kernel = block_orthogonal_init()(jax.random.key(0), (H, 3 * H))
  for k in range(3):
    block = np.asarray(kernel[:, k * H : (k + 1) * H])
    np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
  assert not np.allclose(kernel[:, :H], kernel[:, H : 2 * H])


def test_uniform_init_is_symmetric_around_zero():
  w = np.asarray(uniform_init(0.1)(jax.random.key(0), (64, 64)))
  assert np.abs(w).max() <= 0.1 and w.min() < -0.09 and w.max() > 0.09
