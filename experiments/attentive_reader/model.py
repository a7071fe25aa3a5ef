"""The unidirectional attentive reader of Cooijmans et al.'s code (commit 94f7398), as the LN paper ran it (Figure 2).

  e = dropout(embed(tokens))                       one table for passage and query
  d_t = LSTM_passage(e_t)                          a state per passage token, learned initial h (c starts at 0)
  q = last valid state of LSTM_query               learned initial h
  m_t = tanh(W_d d_t + b_d + W_q q + s_t),  s_t = <d_t M, q M>   (use_dq_sims: one scalar added to every unit)
  alpha = softmax over valid t of w^T m_t;  r = sum_t alpha_t d_t
  g = dropout(tanh(W_r r + b_r + W_g q + W_m mean_t d_t))         (use_desc_skip_c_g: the passage-mean term)
  logits = W_o g + b_o over the whole vocabulary

Variants (`norm`): 'none' LSTMs; 'ln' LN-LSTMs (appendix eq. 20-22), LN gains `ln_gain_init` (1.0; the paper also
tried 0.1); 'bn' BN-LSTMs (`layernorm.BNLSTMCell`: batch statistics per time step, gamma 0.1); 'bn_everywhere' BN-LSTMs
and batch norm (gamma 0.1, statistics over valid positions) on W_d d_t, W_q q, W_r r, W_g q and W_m mean(d), the
linear terms entering the two tanh's (the similarity s_t is not normalized, as in the code); beyond the paper, 'rms'
RMS-LSTMs (`layernorm.RMSLSTMCell`: an RMS norm with a gain, no re-centering, where the LN-LSTM has its LNs), their
gains starting at `ln_gain_init` too, so that the two differ only in the re-centering.
`query_only=True` drops the passage (no attention, no passage mean): the baseline that shows the answer cannot be
read off the query.

Init: the code's `norm_weight` (uniform +-sqrt(6 / (fan_in + fan_out + 1)), i.e. Glorot-like) for the embedding and
the dense layers, w uniform +-sqrt(1/dim), biases 0; the LSTM weights use the library cells' defaults (LeCun-normal
inputs, orthogonal recurrent) instead of the code's 0.05-scaled orthogonal matrices reseeded per call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import layernorm

NORMS = ('none', 'bn', 'bn_everywhere', 'ln', 'rms')


def norm_weight_init(key, shape, dtype=jnp.float32):
  """The reference code's `norm_weight`: uniform +-sqrt(6 / (fan_in + fan_out + 1))."""
  bound = (6.0 / (shape[0] + shape[-1] + 1)) ** 0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """Independent Bernoulli(1 - rate) draws of `shape`.

  When `rate` is a multiple of 1/256 (0.5, the paper's, is) each draw is one random byte compared with rate * 256,
  which gives the same distribution exactly from a quarter of the random words `jax.random.bernoulli` draws (it uses
  32 bits per element): threefry on CPU took 1.8 of the reader's 32 ms training step for the passage's mask, 0.7 this
  way. Any other rate uses `jax.random.bernoulli`.
  """
  size = int(np.prod(shape))
  levels = rate * 256
  if levels != int(levels) or size % 4:
    return jax.random.bernoulli(key, 1.0 - rate, shape)
  words = jax.random.bits(key, (size // 4,), jnp.uint32)
  return jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(shape) >= int(levels)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout from an explicit key; the identity when `key` is None (evaluation)."""
  if key is None or rate == 0.0:
    return x
  return jnp.where(keep_mask(key, rate, x.shape), x / (1.0 - rate), 0.0).astype(x.dtype)


class MaskedBatchNorm(nnx.Module):
  """Batch norm over every valid position (mask 1) of [..., F] inputs.

  Training mode uses the batch statistics and moves running averages towards them; `.eval()` uses the averages.
  `use_bias`: a learned offset, for a term whose dense layer would otherwise carry a bias (which BN would cancel).
  """

  def __init__(
    self, num_features: int, *, scale_init: float = 0.1, use_bias: bool = False, momentum=0.99, eps: float = 1e-5
  ):
    self.scale = nnx.Param(jnp.full((num_features,), scale_init, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32)) if use_bias else None
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
    self.momentum, self.eps, self.use_running_average = momentum, eps, False

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    if self.use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      w = mask.reshape(-1, 1).astype(jnp.float32)
      flat = x.reshape(-1, x.shape[-1])
      n = jnp.maximum(w.sum(), 1.0)
      mean = (flat * w).sum(0) / n
      var = (jnp.square(flat - mean) * w).sum(0) / n
      m = self.momentum
      self.mean[...] = m * self.mean[...] + (1 - m) * jax.lax.stop_gradient(mean)
      self.var[...] = m * self.var[...] + (1 - m) * jax.lax.stop_gradient(var)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...]
    return y if self.bias is None else y + self.bias[...]


def make_cell(norm: str, dim: int, *, max_steps: int, ln_gain_init: float, bn_gamma: float, rngs: nnx.Rngs):
  if norm in ('ln', 'rms'):
    cell = (layernorm.LNLSTMCell if norm == 'ln' else layernorm.RMSLSTMCell)(dim, dim, rngs=rngs)
    norms = (cell.ln_i, cell.ln_h, cell.ln_c) if norm == 'ln' else (cell.rms_i, cell.rms_h, cell.rms_c)
    for module in norms:
      module.scale[...] = jnp.full_like(module.scale[...], ln_gain_init)
    return cell
  if norm in ('bn', 'bn_everywhere'):
    return layernorm.BNLSTMCell(dim, dim, rngs=rngs, max_steps=max_steps, gamma_init=bn_gamma)
  return layernorm.LSTMCell(dim, dim, rngs=rngs)


def initial_carry(cell: nnx.Module, h0_H: jax.Array, batch: int):
  """The carry a cell starts from: c = 0, h = the learned h0; BNLSTMCell also carries its step counter.

  Built here rather than by `cell.initialize_carry`, whose signature is moving to flax's (input_shape, rngs).
  """
  c_BxH = jnp.zeros((batch, h0_H.shape[-1]), jnp.float32)
  h_BxH = jnp.broadcast_to(h0_H, c_BxH.shape)
  if isinstance(cell, layernorm.BNLSTMCell):
    return c_BxH, h_BxH, jnp.zeros((), jnp.int32)
  return c_BxH, h_BxH


class AttentiveReader(nnx.Module):
  """The reader of the module docstring.

  Args:
    vocab_size: embedding rows and output classes (the whole vocabulary, as the code's softmax).
    dim: embedding, LSTM and attention size (240 in the paper).
    norm: one of NORMS.
    max_steps: time steps with their own BN statistics (BN variants; longer passages reuse the last step's).
    ln_gain_init: initial gain of the LN-LSTMs' layer norms (and of the RMS-LSTMs' RMS norms).
    bn_gamma: initial BN gain.
    dropout_rate: on both embedding sequences and on g.
    query_only: ignore the passage (baseline).
    rngs: initialisation.
  """

  def __init__(
    self,
    vocab_size: int,
    dim: int,
    *,
    norm: str,
    max_steps: int = 100,
    ln_gain_init: float = 1.0,
    bn_gamma: float = 0.1,
    dropout_rate: float = 0.5,
    query_only: bool = False,
    rngs: nnx.Rngs,
  ):
    if norm not in NORMS:
      raise ValueError(f'norm must be one of {NORMS}; got {norm!r}.')
    self.norm, self.dropout_rate, self.query_only = norm, dropout_rate, query_only
    self.embed = nnx.Embed(vocab_size, dim, embedding_init=norm_weight_init, rngs=rngs)
    cell = dict(max_steps=max_steps, ln_gain_init=ln_gain_init, bn_gamma=bn_gamma, rngs=rngs)
    self.passage_cell = make_cell(norm, dim, **cell)
    self.query_cell = make_cell(norm, dim, **cell)
    self.passage_h0 = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.query_h0 = nnx.Param(jnp.zeros((dim,), jnp.float32))
    dense = lambda bias=False, out=dim: nnx.Linear(dim, out, use_bias=bias, kernel_init=norm_weight_init, rngs=rngs)
    # Under BN-everywhere the b_d of W_d d_t + b_d is BN's offset: a bias before BN would be cancelled by it.
    self.att_d, self.att_q, self.sim = dense(bias=norm != 'bn_everywhere'), dense(), dense()
    w_bound = (1.0 / dim) ** 0.5
    self.att_w = nnx.Param(jax.random.uniform(rngs.params(), (dim,), jnp.float32, -w_bound, w_bound))
    self.out_r, self.out_q, self.out_m = dense(), dense(), dense()
    self.out_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.logits = dense(bias=True, out=vocab_size)
    if norm == 'bn_everywhere':
      bn = lambda: MaskedBatchNorm(dim, scale_init=bn_gamma)
      self.bn_att_d = MaskedBatchNorm(dim, scale_init=bn_gamma, use_bias=True)
      self.bn_att_q, self.bn_out_r, self.bn_out_q, self.bn_out_m = bn(), bn(), bn(), bn()

  def _bn(self, name: str, x: jax.Array, mask: jax.Array) -> jax.Array:
    return getattr(self, name)(x, mask) if self.norm == 'bn_everywhere' else x

  def _encode(self, cell, h0, tokens_BxT, lengths_B, key):
    # Time-major from the lookup on, as the scan runs: XLA:CPU fuses a batch-major lookup's transpose into the
    # gather and its gradient's scatter, which then cost 3-4 ms of the 35 ms training step (benchmarks/README.md).
    e_TxBxD = dropout(self.embed(tokens_BxT.T), self.dropout_rate, key)
    carry = initial_carry(cell, h0[...], tokens_BxT.shape[0])
    carry, h_TxBxH = layernorm.unroll(cell, e_TxBxD, carry=carry, seq_lengths=lengths_B, time_major=True)
    return carry[1], jnp.moveaxis(h_TxBxH, 0, 1)

  def __call__(self, batch: dict[str, jax.Array], rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Logits over the vocabulary [B, V] and the attention weights over the passage [B, T] (zero on padding).

    `rng` draws the dropout masks; None (evaluation) turns dropout off.
    """
    keys = [None] * 3 if rng is None else list(jax.random.split(rng, 3))
    q_BxH, _ = self._encode(self.query_cell, self.query_h0, batch['query'], batch['query_length'], keys[0])
    batch_size = q_BxH.shape[0]
    ones_B = jnp.ones((batch_size,), bool)
    pre_g = self._bn('bn_out_q', self.out_q(q_BxH), ones_B) + self.out_bias[...]
    tokens_BxT, lengths_B = batch['passage'], batch['passage_length']
    mask_BxT = jnp.arange(tokens_BxT.shape[1])[None, :] < lengths_B[:, None]
    if self.query_only:
      alpha_BxT = jnp.zeros(tokens_BxT.shape, jnp.float32)
    else:
      _, d_BxTxH = self._encode(self.passage_cell, self.passage_h0, tokens_BxT, lengths_B, keys[1])
      d_BxTxH = d_BxTxH * mask_BxT[..., None]
      sim_BxT = jnp.einsum('bth,bh->bt', self.sim(d_BxTxH), self.sim(q_BxH))
      m_BxTxH = jnp.tanh(
        self._bn('bn_att_d', self.att_d(d_BxTxH), mask_BxT)
        + self._bn('bn_att_q', self.att_q(q_BxH), ones_B)[:, None, :]
        + sim_BxT[..., None]
      )
      score_BxT = jnp.where(mask_BxT, m_BxTxH @ self.att_w[...], -1e30)
      alpha_BxT = jax.nn.softmax(score_BxT, axis=-1) * mask_BxT
      r_BxH = jnp.einsum('bt,bth->bh', alpha_BxT, d_BxTxH)
      mean_BxH = d_BxTxH.sum(1) / jnp.maximum(lengths_B, 1)[:, None].astype(jnp.float32)
      pre_g = (
        pre_g + self._bn('bn_out_r', self.out_r(r_BxH), ones_B) + self._bn('bn_out_m', self.out_m(mean_BxH), ones_B)
      )
    g_BxH = dropout(jnp.tanh(pre_g), self.dropout_rate, keys[2])
    return self.logits(g_BxH), alpha_BxT
