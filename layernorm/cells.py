"""Recurrent cells of the paper's appendix (eq. 17-31) and the recurrent batch-norm baseline, as NNX modules.

Every cell is an `nnx.RNNCellBase` with flax's cell protocol: `cell(carry, x) -> (carry, y)`,
`cell.initialize_carry(input_shape, rngs)` (the input's shape `(*batch, D)`, as `nnx.RNN` passes it) and
`num_feature_axes` (1), built as `Cell(in_features, hidden_features, *, rngs, ...)`. So they run in `nnx.RNN` and
`nnx.Bidirectional` as well as in `layernorm.unroll`; on the same inputs both give the same outputs and final carry
(tests/test_rnn_protocol.py), except that `unroll` also freezes the carry at padded steps and zeroes their outputs.

Projections are fused, one matmul for `W_x x` and one for `W_h h`, in flax's layouts: the LSTM family stores
`dense_i.kernel` (D x 4H), `dense_h.kernel` (H x 4H) and `bias` (4H) in flax's gate order (i, f, g, o); the GRU family
stores `dense_i` (D x 3H) and `dense_h` (H x 3H) in the order (r, z, n). With normalization off, `LSTMCell` and
`GRUCell` equal flax's `OptimizedLSTMCell` and `GRUCell` given the same weights. The layer-normalized cells normalize
each fused block as the authors' code does: one mean and variance over all gates of `W_x x`, another over all gates of
`W_h h`. The RMS-normalized cells (`RMSLSTMCell`, `RMSGRUCell`, `RMSDRAWLSTMCell`) put an RMS norm (Zhang & Sennrich
2019: no centring, a gain, no offset) wherever their LN counterpart has a layer norm, over the same blocks; the bias
each keeps is said in its docstring. Parameters are float32; the new carry keeps the incoming carry's dtype, so
`lax.scan` sees a fixed carry type whatever the input precision.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from layernorm.normalization import LayerNorm, RMSNorm, batch_norm_statistics
from layernorm.ops import compute_dtype

Array = jax.Array
Initializer = Callable[..., Array]

default_kernel_init = nnx.initializers.lecun_normal()
default_recurrent_kernel_init = nnx.initializers.orthogonal()


def uniform_init(scale: float = 0.1) -> Initializer:
  """Uniform(-scale, scale) weights: the input-matrix init of the authors' GRU host code (`norm_weight`)."""

  def init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def block_orthogonal_init() -> Initializer:
  """An orthogonal H x H matrix per gate of a fused (H, k*H) recurrent kernel, as the authors' `ortho_weight`.

  flax's `orthogonal()` on an (H, k*H) kernel makes its rows orthonormal instead, which differs for k > 1.
  """

  def init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    rows, cols = shape
    if cols % rows:
      raise ValueError(f'block_orthogonal_init needs a (H, k*H) kernel; got shape {shape}.')
    blocks = [nnx.initializers.orthogonal()(k, (rows, rows), dtype) for k in jax.random.split(key, cols // rows)]
    return jnp.concatenate(blocks, axis=1)

  return init


def _check_input(cell: nnx.Module, x: Array) -> None:
  if x.shape[-1] != cell.in_features:
    raise ValueError(
      f'{type(cell).__name__} was built for inputs with in_features={cell.in_features} on the last axis; '
      f'got an input of shape {x.shape} with {x.shape[-1]} features.'
    )


def _zeros_or_init(
  shapes: list[tuple[int, ...]], rngs: nnx.Rngs | nnx.RngStream | None, carry_init: Initializer | None
) -> tuple[Array, ...]:
  """Zeros (no keys drawn), or `carry_init` with one key per leaf from `rngs.carry` (or the stream `rngs`), as flax."""
  if carry_init is None:
    return tuple(jnp.zeros(s, jnp.float32) for s in shapes)
  if rngs is None:
    raise ValueError('initialize_carry needs rngs when a carry_init is given.')
  stream = rngs.carry if isinstance(rngs, nnx.Rngs) else rngs
  return tuple(carry_init(stream(), s, jnp.float32) for s in shapes)


def _carry_shape(cell: nnx.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
  """`(*batch, H)` from flax's `input_shape` `(*batch, D)`. Refuses a batch shape (the library's former convention),
  which would otherwise build a carry without its batch axes that broadcasts silently."""
  if isinstance(input_shape, int) or not input_shape or input_shape[-1] != cell.in_features:
    got = f'{input_shape!r}' + (
      '' if isinstance(input_shape, int) or not input_shape else f' with {input_shape[-1]} features'
    )
    raise ValueError(
      f'{type(cell).__name__}.initialize_carry takes the input shape (*batch, in_features) as flax cells do, and the '
      f'cell was built for in_features={cell.in_features}; got {got}. For a batch shape B, pass (*B, '
      f'{cell.in_features}).'
    )
  return (*tuple(input_shape)[:-1], cell.hidden_features)


def _lstm_update(gates_Bx4H: Array, c_BxH: Array) -> tuple[Array, Array]:
  """The LSTM memory update (eq. 18) from pre-activations in flax's order; returns the new c and the output gate."""
  i, f, g, o = jnp.split(gates_Bx4H, 4, axis=-1)
  new_c_BxH = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
  return new_c_BxH, jax.nn.sigmoid(o)


class _LSTMBase(nnx.RNNCellBase):
  """Parameters and carry shared by the LSTM cells: W_x (D x 4H), W_h (H x 4H) and b (4H), gates (i, f, g, o)."""

  def __init__(
    self,
    in_features: int,
    hidden_features: int,
    *,
    forget_bias: float = 0.0,
    kernel_init: Initializer = default_kernel_init,
    recurrent_kernel_init: Initializer = default_recurrent_kernel_init,
    rngs: nnx.Rngs,
  ):
    h = hidden_features
    self.in_features = in_features
    self.hidden_features = h
    self.dense_i = nnx.Linear(in_features, 4 * h, use_bias=False, kernel_init=kernel_init, rngs=rngs)
    self.dense_h = nnx.Linear(h, 4 * h, use_bias=False, kernel_init=recurrent_kernel_init, rngs=rngs)
    self.bias = nnx.Param(jnp.zeros((4 * h,), jnp.float32).at[h : 2 * h].set(forget_bias))

  @property
  def num_feature_axes(self) -> int:
    return 1

  def initialize_carry(
    self,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs | nnx.RngStream | None = None,
    carry_init: Initializer | None = None,
  ) -> tuple[Array, Array]:
    """The carry (c, h) for inputs of shape `(*batch, D)`: zeros of shape `(*batch, H)` unless a `carry_init` (with
    `rngs`) is given."""
    shape = _carry_shape(self, input_shape)
    return _zeros_or_init([shape, shape], rngs, carry_init)


class LSTMCell(_LSTMBase):
  """The plain LSTM (eq. 17-19): `W_x x + W_h h + b`, `h = sigmoid(o) * tanh(c)`.

  Equals flax's `OptimizedLSTMCell` given the same weights (flax keeps `bias` in `dense_h.bias`).

  Args:
    in_features: size D of each input vector.
    hidden_features: size H of the cell and hidden state.
    forget_bias: initial bias of the forget gate (0, as in flax and the authors' code; 1 is a common alternative).
    kernel_init: initializer of W_x (flax's default, LeCun normal).
    recurrent_kernel_init: initializer of W_h (flax's default, orthogonal).
    rngs: random streams for the weight initializers.
  """

  def __call__(self, carry: tuple[Array, Array], x: Array) -> tuple[tuple[Array, Array], Array]:
    _check_input(self, x)
    c_BxH, h_BxH = carry
    gates_Bx4H = self.dense_i(x) + self.dense_h(h_BxH) + self.bias[...]
    new_c_BxH, o_BxH = _lstm_update(gates_Bx4H, c_BxH)
    new_h_BxH = (o_BxH * jnp.tanh(new_c_BxH)).astype(h_BxH.dtype)
    return (new_c_BxH.astype(c_BxH.dtype), new_h_BxH), new_h_BxH


def _normalized_lstm_step(cell: _LSTMBase, norm_i, norm_h, norm_c, carry, x):
  """Eq. 20-22 with the given norms (LN or RMS) of W_x x, of W_h h (None: the plain gates, as DRAW's) and of c."""
  _check_input(cell, x)
  c_BxH, h_BxH = carry
  if norm_i is None:
    gates_Bx4H = cell.dense_i(x) + cell.dense_h(h_BxH) + cell.bias[...]
  else:
    gates_Bx4H = norm_i(cell.dense_i(x)) + norm_h(cell.dense_h(h_BxH)) + cell.bias[...]
  new_c_BxH, o_BxH = _lstm_update(gates_Bx4H, c_BxH)
  new_h_BxH = (o_BxH * jnp.tanh(norm_c(new_c_BxH))).astype(h_BxH.dtype)
  return (new_c_BxH.astype(c_BxH.dtype), new_h_BxH), new_h_BxH


class LNLSTMCell(_LSTMBase):
  """The layer-normalized LSTM (eq. 20-22).

  `LN(W_h h) + LN(W_x x) + b`, each LN over the whole 4H block; `h = sigmoid(o) * tanh(LN(c))` with the carried `c`
  left un-normalized. LN gains start at 1, LN biases at 0, eps = 1e-5. The authors' code also adds `b` inside the
  input LN (x W + b); we follow the equations and add it once, after the two LN terms.

  Args: as `LSTMCell`.
  """

  def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **kwargs):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    self.ln_i = LayerNorm(4 * hidden_features)
    self.ln_h = LayerNorm(4 * hidden_features)
    self.ln_c = LayerNorm(hidden_features)

  def __call__(self, carry: tuple[Array, Array], x: Array) -> tuple[tuple[Array, Array], Array]:
    return _normalized_lstm_step(self, self.ln_i, self.ln_h, self.ln_c, carry, x)


class RMSLSTMCell(_LSTMBase):
  """The RMS-normalized LSTM: `LNLSTMCell` with each layer norm an RMS norm (Zhang & Sennrich 2019's recurrent form).

  `RMS(W_h h) g_h + RMS(W_x x) g_x + b`, each RMS over the whole 4H block as LN is in eq. 20-22;
  `h = sigmoid(o) * tanh(RMS(c) g_c)`, the carried `c` left un-normalized; `RMS(v) = v / sqrt(mean(v^2) + eps)`.

  The bias: the RMS norms have gains only (`RMSNorm`, as flax's `nnx.RMSNorm`), no offsets. In the gates nothing is
  lost: LN's two offsets only ever add to `b`, which the cell keeps and adds once after the norms (the RMSNorm
  paper's `f(RMS(a) g + b)`). The one offset without a counterpart is LN(c)'s inside the output tanh, which the RMS
  cell drops. Gains start at 1; eps = 1e-6 (flax's `RMSNorm` default; LN's is 1e-5).

  Args: as `LSTMCell`, and `epsilon`: added to the mean square.
  """

  def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, epsilon: float = 1e-6, **kwargs):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    self.rms_i = RMSNorm(4 * hidden_features, epsilon=epsilon)
    self.rms_h = RMSNorm(4 * hidden_features, epsilon=epsilon)
    self.rms_c = RMSNorm(hidden_features, epsilon=epsilon)

  def __call__(self, carry: tuple[Array, Array], x: Array) -> tuple[tuple[Array, Array], Array]:
    return _normalized_lstm_step(self, self.rms_i, self.rms_h, self.rms_c, carry, x)


class DRAWLSTMCell(_LSTMBase):
  """DRAW's LSTM (eq. 29-31): plain LSTM gates, LN only on the copy of `c` that enters the output tanh.

  Args: as `LSTMCell`.
  """

  def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **kwargs):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    self.ln_c = LayerNorm(hidden_features)

  def __call__(self, carry: tuple[Array, Array], x: Array) -> tuple[tuple[Array, Array], Array]:
    return _normalized_lstm_step(self, None, None, self.ln_c, carry, x)


class RMSDRAWLSTMCell(_LSTMBase):
  """DRAW's LSTM with an RMS norm (gain only, no offset, eps 1e-6) where `DRAWLSTMCell` has its one LN: on the copy
  of `c` that enters the output tanh. The gates keep the plain LSTM's bias `b`.

  Args: as `RMSLSTMCell`.
  """

  def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, epsilon: float = 1e-6, **kwargs):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    self.rms_c = RMSNorm(hidden_features, epsilon=epsilon)

  def __call__(self, carry: tuple[Array, Array], x: Array) -> tuple[tuple[Array, Array], Array]:
    return _normalized_lstm_step(self, None, None, self.rms_c, carry, x)


class StepBatchNorm(nnx.Module):
  """Batch norm over the batch axes with separate population statistics per time step (Cooijmans et al. 2016).

  Training mode normalizes with the batch's mean and biased variance and moves the running averages of step `t`
  towards them; evaluation mode (`use_running_average`, set by `.eval()`) uses the running averages of step `t`.
  Steps at or beyond `max_steps` share the statistics of the last step.

  Args:
    num_features: size of the last (feature) axis.
    max_steps: number of time steps with their own statistics.
    scale_init: initial gain (0.1 in recurrent batch norm).
    use_bias: learn an offset (initialised to 0); off for the h and x terms, whose offset `b` already provides.
    momentum: decay of the running averages.
    eps: added to the variance.
    use_running_average: evaluation mode.
  """

  def __init__(
    self,
    num_features: int,
    max_steps: int,
    *,
    scale_init: float = 0.1,
    use_bias: bool = True,
    momentum: float = 0.99,
    eps: float = 1e-5,
    use_running_average: bool = False,
  ):
    if max_steps < 1:
      raise ValueError(f'max_steps must be at least 1; got {max_steps}.')
    self.max_steps = max_steps
    self.momentum = momentum
    self.eps = eps
    self.use_running_average = use_running_average
    self.mean = nnx.BatchStat(jnp.zeros((max_steps, num_features), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((max_steps, num_features), jnp.float32))
    self.scale = nnx.Param(jnp.full((num_features,), scale_init, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32)) if use_bias else None

  def __call__(self, x: Array, t: Array) -> Array:
    step = jnp.minimum(t, self.max_steps - 1)
    if self.use_running_average:
      mean, var = self.mean[...][step], self.var[...][step]
    else:
      mean, var = batch_norm_statistics(x, tuple(range(x.ndim - 1)))
      m = self.momentum
      new_mean = m * self.mean[...][step] + (1 - m) * jax.lax.stop_gradient(mean)
      new_var = m * self.var[...][step] + (1 - m) * jax.lax.stop_gradient(var)
      self.mean[...] = self.mean[...].at[step].set(new_mean)
      self.var[...] = self.var[...].at[step].set(new_var)
    y = (x.astype(compute_dtype(x.dtype)) - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...]
    if self.bias is not None:
      y = y + self.bias[...]
    return y.astype(x.dtype)


class BNLSTMCell(_LSTMBase):
  """Recurrent batch normalization's LSTM (Cooijmans et al. 2016), the paper's baseline in Figure 2.

  `BN(W_h h) + BN(W_x x) + b` with no BN offsets on these two terms, `h = sigmoid(o) * tanh(BN(c))` with a learned
  offset on the cell term; all BN gains start at 0.1. The carry is `(c, h, t)`, `t` a scalar int32 step counter,
  so each step finds its own statistics while the cell keeps flax's protocol; `initialize_carry` starts it at 0.
  Batch statistics are taken over every example of the batch, padded ones included.

  Args:
    in_features, hidden_features, forget_bias, kernel_init, recurrent_kernel_init, rngs: as `LSTMCell`.
    max_steps: time steps with their own population statistics; later steps reuse the last step's.
    gamma_init: initial BN gain.
    momentum: decay of the running (population) averages.
    eps: added to the batch variance.
    use_running_average: evaluation mode (normalize with the population statistics); `.eval()` sets it.
  """

  def __init__(
    self,
    in_features: int,
    hidden_features: int,
    *,
    rngs: nnx.Rngs,
    max_steps: int = 100,
    gamma_init: float = 0.1,
    momentum: float = 0.99,
    eps: float = 1e-5,
    use_running_average: bool = False,
    **kwargs,
  ):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    bn = dict(scale_init=gamma_init, momentum=momentum, eps=eps, use_running_average=use_running_average)
    self.bn_i = StepBatchNorm(4 * hidden_features, max_steps, use_bias=False, **bn)
    self.bn_h = StepBatchNorm(4 * hidden_features, max_steps, use_bias=False, **bn)
    self.bn_c = StepBatchNorm(hidden_features, max_steps, use_bias=True, **bn)

  def initialize_carry(
    self,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs | nnx.RngStream | None = None,
    carry_init: Initializer | None = None,
  ) -> tuple[Array, Array, Array]:
    """The carry (c, h, t): c and h as `LSTMCell`'s, the step counter t = 0."""
    c, h = super().initialize_carry(input_shape, rngs, carry_init)
    return c, h, jnp.zeros((), jnp.int32)

  def __call__(self, carry: tuple[Array, Array, Array], x: Array) -> tuple[tuple[Array, Array, Array], Array]:
    _check_input(self, x)
    c_BxH, h_BxH, t = carry
    gates_Bx4H = self.bn_i(self.dense_i(x), t) + self.bn_h(self.dense_h(h_BxH), t) + self.bias[...]
    new_c_BxH, o_BxH = _lstm_update(gates_Bx4H, c_BxH)
    new_h_BxH = (o_BxH * jnp.tanh(self.bn_c(new_c_BxH, t))).astype(h_BxH.dtype)
    return (new_c_BxH.astype(c_BxH.dtype), new_h_BxH, t + 1), new_h_BxH


class _GRUBase(nnx.RNNCellBase):
  """Parameters and carry shared by the GRU cells: `dense_i` (D x 3H) and `dense_h` (H x 3H), order (r, z, n)."""

  input_bias = True

  def __init__(
    self,
    in_features: int,
    hidden_features: int,
    *,
    kernel_init: Initializer = default_kernel_init,
    recurrent_kernel_init: Initializer = default_recurrent_kernel_init,
    rngs: nnx.Rngs,
  ):
    h = hidden_features
    self.in_features = in_features
    self.hidden_features = h
    self.dense_i = nnx.Linear(in_features, 3 * h, use_bias=self.input_bias, kernel_init=kernel_init, rngs=rngs)
    self.dense_h = nnx.Linear(h, 3 * h, use_bias=False, kernel_init=recurrent_kernel_init, rngs=rngs)

  @property
  def num_feature_axes(self) -> int:
    return 1

  def initialize_carry(
    self,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs | nnx.RngStream | None = None,
    carry_init: Initializer | None = None,
  ) -> Array:
    """The carry h for inputs of shape `(*batch, D)`: zeros of shape `(*batch, H)` unless a `carry_init` (with
    `rngs`) is given."""
    (h,) = _zeros_or_init([_carry_shape(self, input_shape)], rngs, carry_init)
    return h


class GRUCell(_GRUBase):
  """The GRU of eq. 23-25 in flax's parameterization; equals flax's `nnx.GRUCell` given the same weights.

  `r, z = sigmoid(W_x x + b + W_h h)`, `n = tanh(W x + b_n + r * (U h))`, `h' = (1 - z) * n + z * h`. The reset gate
  multiplies `U h` without a bias (flax's `dense_h` has none, whatever its docstring's b_hn says), as in eq. 25. Gate
  z plays the role of the paper's 1 - sigma(z_t), and of the authors' code's u: the same model, relabelled.

  Args:
    in_features: size D of each input vector.
    hidden_features: size H of the hidden state.
    kernel_init: initializer of the input kernel (flax's LeCun normal; the authors' code: `uniform_init(0.1)`).
    recurrent_kernel_init: initializer of the recurrent kernel (flax's orthogonal; the authors' code:
      `block_orthogonal_init()`).
    rngs: random streams for the weight initializers.
  """

  def __call__(self, h_BxH: Array, x: Array) -> tuple[Array, Array]:
    _check_input(self, x)
    xr, xz, xn = jnp.split(self.dense_i(x), 3, axis=-1)
    hr, hz, hn = jnp.split(self.dense_h(h_BxH), 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    new_h_BxH = ((1.0 - z) * n + z * h_BxH).astype(h_BxH.dtype)
    return new_h_BxH, new_h_BxH


class LNGRUCell(_GRUBase):
  """The layer-normalized GRU (eq. 26-28) in `GRUCell`'s parameterization.

  Four LNs, as in the authors' code: over the 2H gate block of `W_x x` and of `W_h h`, and over the H candidate
  part of each; the reset gate multiplies the normalized `U h`. The input projection has no bias of its own (the LN
  offsets play its role, eq. 26-27); the authors' code also adds one inside the LN. Gains start at 1, offsets at 0.

  Args: as `GRUCell`.
  """

  input_bias = False

  def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **kwargs):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    self.ln_i_gates = LayerNorm(2 * hidden_features)
    self.ln_h_gates = LayerNorm(2 * hidden_features)
    self.ln_i_cand = LayerNorm(hidden_features)
    self.ln_h_cand = LayerNorm(hidden_features)

  def __call__(self, h_BxH: Array, x: Array) -> tuple[Array, Array]:
    _check_input(self, x)
    n_gates = 2 * self.hidden_features
    xw_Bx3H, uh_Bx3H = self.dense_i(x), self.dense_h(h_BxH)
    gates_Bx2H = self.ln_i_gates(xw_Bx3H[..., :n_gates]) + self.ln_h_gates(uh_Bx3H[..., :n_gates])
    r, z = jnp.split(jax.nn.sigmoid(gates_Bx2H), 2, axis=-1)
    n = jnp.tanh(self.ln_i_cand(xw_Bx3H[..., n_gates:]) + r * self.ln_h_cand(uh_Bx3H[..., n_gates:]))
    new_h_BxH = ((1.0 - z) * n + z * h_BxH).astype(h_BxH.dtype)
    return new_h_BxH, new_h_BxH


class RMSGRUCell(_GRUBase):
  """The RMS-normalized GRU: `LNGRUCell` with each of its four layer norms an RMS norm (Zhang & Sennrich 2019's
  recurrent form), over the same blocks: the 2H gate block of `W_x x` and of `W_h h`, and the H candidate part of
  each; the reset gate multiplies the normalized `U h`.

  `r, z = sigmoid(RMS(W_x x)_g g_ig + RMS(W_h h)_g g_hg + b_g)`, `n = tanh(RMS(W x) g_ic + b_n + r * RMS(U h) g_hc)`,
  `h' = (1 - z) * n + z * h`.

  The bias: the RMS norms have gains only, no offsets, so the cell keeps its own input bias `bias` (3H, zeros at
  first), added after the norms (the RMSNorm paper's `f(RMS(a) g + b)`), where `GRUCell`'s input bias acts; in
  `LNGRUCell` the LN offsets of `W_x x` (and of the gate block of `W_h h`, which add to the same sums) play its role.
  LN's offset inside the reset product, of `U h`'s candidate part, has no counterpart: as in `GRUCell` (and flax's),
  the reset gate multiplies a bias-free `U h`. The input projection has no bias of its own (it would be normalized
  away up to its RMS). Gains start at 1; eps = 1e-6 (flax's `RMSNorm` default).

  Args: as `GRUCell`, and `epsilon`: added to the mean square.
  """

  input_bias = False

  def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, epsilon: float = 1e-6, **kwargs):
    super().__init__(in_features, hidden_features, rngs=rngs, **kwargs)
    h = hidden_features
    self.bias = nnx.Param(jnp.zeros((3 * h,), jnp.float32))
    self.rms_i_gates = RMSNorm(2 * h, epsilon=epsilon)
    self.rms_h_gates = RMSNorm(2 * h, epsilon=epsilon)
    self.rms_i_cand = RMSNorm(h, epsilon=epsilon)
    self.rms_h_cand = RMSNorm(h, epsilon=epsilon)

  def __call__(self, h_BxH: Array, x: Array) -> tuple[Array, Array]:
    _check_input(self, x)
    n_gates = 2 * self.hidden_features
    xw_Bx3H, uh_Bx3H = self.dense_i(x), self.dense_h(h_BxH)
    bias = self.bias[...]
    gates_Bx2H = self.rms_i_gates(xw_Bx3H[..., :n_gates]) + self.rms_h_gates(uh_Bx3H[..., :n_gates]) + bias[:n_gates]
    r, z = jnp.split(jax.nn.sigmoid(gates_Bx2H), 2, axis=-1)
    xn = self.rms_i_cand(xw_Bx3H[..., n_gates:]) + bias[n_gates:]
    n = jnp.tanh(xn + r * self.rms_h_cand(uh_Bx3H[..., n_gates:]))
    new_h_BxH = ((1.0 - z) * n + z * h_BxH).astype(h_BxH.dtype)
    return new_h_BxH, new_h_BxH
