"""Graves (2013) section 5 handwriting synthesis network, with plain or layer-normalized LSTMs (Figure 5).

At time t, from the pen offset x_t (dx, dy, end_of_stroke) and the window w_{t-1} over the text:
  h1_t = LSTM1(x_t, w_{t-1});  (alpha, beta, kappa)_t = window(h1_t);  w_t = sum_u phi(t, u) c_u
  h2_t = LSTM2(x_t, h1_t, w_t);  h3_t = LSTM3(x_t, h2_t, w_t);  y_t = output(h1_t, h2_t, h3_t)
y_t parameterizes p(x_{t+1}): 20 bivariate Gaussians and an end-of-stroke Bernoulli (1 + 6 * 20 = 121 numbers).
Skip connections run from the input to every layer and from every layer to the output.

`norm='ln'` swaps every LSTM for the LN-LSTM of the paper's appendix (eq. 20-22). A layer's inputs (x, the layer
below, the window) are concatenated into one input term `W_x [x; h_below; w]`, so LN sees them as one summed input
(docs/paper.md, section 5: the paper does not say; this is our documented guess). The window and mixture layers are
plain linear maps in both variants. Beyond the paper, `norm='rms'` swaps every LSTM for the RMS-LSTM
(`layernorm.RMSLSTMCell`: an RMS norm with a gain, no re-centering, where the LN-LSTM has its LNs).

Numerics: the window and mixture exponentiate unconstrained outputs; their logits are clipped to +-LOG_CLIP (exp(10)
is 2.2e4: never binding in normal training, but a step cannot overflow), 1 - rho^2 is computed as sech^2 of rho's
logit, and the mixture density is a log-sum-exp, so a 500-step sequence at the paper's sizes stays finite in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

import layernorm

LOG_CLIP = 10.0
# Initial bias of kappa^: the window starts advancing exp(-3) = 0.05 characters per point, i.e. one character per 20
# points, about the data's rate (IAM: ~700 points for ~35 characters; Hershey lines alike). With Graves' zero-centred
# init it starts at one character per point and sweeps past a 10-character text in 10 of its 150 points; in 1,500
# CPU-scale updates the network then never learned to align (the window stayed diffuse), so its samples ignored the
# text. A documented deviation: Graves does not give his initialisation.
KAPPA_BIAS_INIT = -3.0
CELLS = {'none': layernorm.LSTMCell, 'ln': layernorm.LNLSTMCell, 'rms': layernorm.RMSLSTMCell}


def zero_carry(batch: int, hidden: int) -> tuple[jax.Array, jax.Array]:
  """An LSTM's initial (c, h), zeros [B, H]: built here, not by the cell, so the cells' carry API may change."""
  return jnp.zeros((batch, hidden), jnp.float32), jnp.zeros((batch, hidden), jnp.float32)


def window_terms(params_Bx3K: jax.Array, kappa_prev_BxK: jax.Array):
  """(alpha, beta, kappa), each [B, K], from the window layer's output (alpha^, beta^, kappa^) (Graves eq. 48-51)."""
  a_hat, b_hat, k_hat = jnp.split(jnp.clip(params_Bx3K, -LOG_CLIP, LOG_CLIP), 3, axis=-1)
  return jnp.exp(a_hat), jnp.exp(b_hat), kappa_prev_BxK + jnp.exp(k_hat)


def window_weights(alpha_BxK, beta_BxK, kappa_BxK, num_chars: int) -> jax.Array:
  """phi(t, u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2) for u = 1..num_chars; [B, U]."""
  u = jnp.arange(1, num_chars + 1, dtype=jnp.float32)
  sq = jnp.square(kappa_BxK[:, :, None] - u)
  return jnp.sum(alpha_BxK[:, :, None] * jnp.exp(-beta_BxK[:, :, None] * sq), axis=1)


def soft_window(params_Bx3K, kappa_prev_BxK, onehot_BxUxC, mask_BxU):
  """One step of the soft window: (w_t [B, C], kappa_t [B, K], phi_t [B, U], (alpha, beta))."""
  alpha, beta, kappa = window_terms(params_Bx3K, kappa_prev_BxK)
  phi_BxU = window_weights(alpha, beta, kappa, onehot_BxUxC.shape[1]) * mask_BxU
  return jnp.einsum('bu,buc->bc', phi_BxU, onehot_BxUxC), kappa, phi_BxU, (alpha, beta)


def split_mixture(y: jax.Array, num_mixtures: int, bias: float = 0.0) -> dict[str, jax.Array]:
  """The output vector [..., 1 + 6M] as the mixture's parameters, with Graves' sampling bias (0 for the loss).

  Returns {'eos_logit': e^ ([...]; p(eos) = 1 / (1 + exp(e^))), 'log_pi', 'mu1', 'mu2', 'log_s1', 'log_s2',
  'rho_logit' ([..., M] each)}: pi = softmax(pi^ (1 + bias)), sigma = exp(sigma^ - bias), rho = tanh(rho^).
  """
  m = num_mixtures
  eos_logit = y[..., 0]
  pi_hat, mu1, mu2, s1_hat, s2_hat, rho_hat = (y[..., 1 + i * m : 1 + (i + 1) * m] for i in range(6))
  clip = lambda v: jnp.clip(v, -LOG_CLIP, LOG_CLIP)
  return {
    'eos_logit': eos_logit,
    'log_pi': jax.nn.log_softmax(pi_hat * (1 + bias), axis=-1),
    'mu1': mu1,
    'mu2': mu2,
    'log_s1': clip(s1_hat) - bias,
    'log_s2': clip(s2_hat) - bias,
    'rho_logit': clip(rho_hat),
  }


def mixture_nll(y: jax.Array, target: jax.Array, num_mixtures: int) -> jax.Array:
  """-log p(target | y) per point: the Gaussian mixture on (dx, dy) plus the end-of-stroke Bernoulli; [...]."""
  p = split_mixture(y, num_mixtures)
  x1, x2, eos = target[..., 0:1], target[..., 1:2], target[..., 2]
  z1 = (x1 - p['mu1']) * jnp.exp(-p['log_s1'])
  z2 = (x2 - p['mu2']) * jnp.exp(-p['log_s2'])
  r = p['rho_logit']
  rho = jnp.tanh(r)
  log_one_minus_rho2 = 2 * math.log(2.0) - 2 * jnp.logaddexp(r, -r)  # log sech^2(r), exact for any r.
  inv_one_minus_rho2 = jnp.square(jnp.cosh(r))
  z = jnp.square(z1) + jnp.square(z2) - 2 * rho * z1 * z2
  log_n = -math.log(2 * math.pi) - p['log_s1'] - p['log_s2'] - 0.5 * log_one_minus_rho2 - 0.5 * z * inv_one_minus_rho2
  log_mixture = jax.nn.logsumexp(p['log_pi'] + log_n, axis=-1)
  # e = 1 / (1 + exp(e^)): -log e = softplus(e^), -log(1 - e) = softplus(-e^).
  eos_nll = jnp.where(eos > 0.5, jax.nn.softplus(p['eos_logit']), jax.nn.softplus(-p['eos_logit']))
  return -log_mixture + eos_nll


class SynthesisNetwork(nnx.Module):
  """The synthesis network; defaults are Graves' (and the LN paper's) sizes, about 3.7M weights.

  Args:
    alphabet_size: C, symbols of the one-hot text (57).
    hidden: units per LSTM layer (400).
    layers: stacked LSTM layers (3); the window reads the first.
    window_mixtures: K Gaussians of the soft window (10).
    output_mixtures: M bivariate Gaussians of the output (20).
    norm: 'none' (LSTM, eq. 17-19), 'ln' (LN-LSTM, eq. 20-22) or 'rms' (RMS-LSTM) in every layer.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    alphabet_size: int = 57,
    *,
    hidden: int = 400,
    layers: int = 3,
    window_mixtures: int = 10,
    output_mixtures: int = 20,
    norm: str = 'none',
    rngs: nnx.Rngs,
  ):
    if norm not in CELLS:
      raise ValueError(f'SynthesisNetwork norm must be one of {", ".join(CELLS)}; got {norm!r}.')
    self.alphabet_size, self.hidden, self.num_layers = alphabet_size, hidden, layers
    self.window_mixtures, self.output_mixtures, self.norm = window_mixtures, output_mixtures, norm
    cell = CELLS[norm]
    self.cells = nnx.List([cell(3 + alphabet_size + (hidden if i else 0), hidden, rngs=rngs) for i in range(layers)])
    self.window = nnx.Linear(hidden, 3 * window_mixtures, rngs=rngs)
    self.window.bias[...] = self.window.bias[...].at[2 * window_mixtures :].set(KAPPA_BIAS_INIT)
    self.output = nnx.Linear(layers * hidden, 1 + 6 * output_mixtures, rngs=rngs)

  def initial_state(self, batch: int):
    """(LSTM carries, kappa [B, K], window [B, C]), all zeros."""
    carries = tuple(zero_carry(batch, self.hidden) for _ in range(self.num_layers))
    kappa = jnp.zeros((batch, self.window_mixtures), jnp.float32)
    return carries, kappa, jnp.zeros((batch, self.alphabet_size), jnp.float32)

  def step(self, state, x_Bx3: jax.Array, onehot_BxUxC: jax.Array, mask_BxU: jax.Array):
    """One time step: (new state, (y_t [B, 1 + 6M], phi_t [B, U], (alpha, beta, kappa)))."""
    carries, kappa, w_BxC = state
    new_carries, hs = [], []
    # layernorm.step: the cell's step on the fused LSTM kernels (one native kernel with the three layer or RMS norms).
    carry, h = layernorm.step(self.cells[0], carries[0], jnp.concatenate([x_Bx3, w_BxC], axis=-1))
    w_BxC, kappa, phi_BxU, (alpha, beta) = soft_window(self.window(h), kappa, onehot_BxUxC, mask_BxU)
    new_carries.append(carry)
    hs.append(h)
    for i in range(1, self.num_layers):
      carry, h = layernorm.step(self.cells[i], carries[i], jnp.concatenate([x_Bx3, h, w_BxC], axis=-1))
      new_carries.append(carry)
      hs.append(h)
    y = self.output(jnp.concatenate(hs, axis=-1))
    return (tuple(new_carries), kappa, w_BxC), (y, phi_BxU, (alpha, beta, kappa))

  def __call__(self, inputs_BxTx3: jax.Array, chars_BxU: jax.Array, text_length_B: jax.Array):
    """Runs the network over `inputs`; returns (y [B, T, 1 + 6M], phi [B, T, U])."""
    batch, num_chars = chars_BxU.shape
    onehot = jax.nn.one_hot(chars_BxU, self.alphabet_size, dtype=jnp.float32)
    mask = (jnp.arange(num_chars) < text_length_B[:, None]).astype(jnp.float32)
    graphdef, params = nnx.split(self)

    def body(state, x_Bx3):
      model = nnx.merge(graphdef, params)
      state, (y, phi, _) = model.step(state, x_Bx3, onehot, mask)
      return state, (y, phi)

    _, (y_TxBxD, phi_TxBxU) = jax.lax.scan(body, self.initial_state(batch), jnp.moveaxis(inputs_BxTx3, 1, 0))
    return jnp.moveaxis(y_TxBxD, 0, 1), jnp.moveaxis(phi_TxBxU, 0, 1)


def sequence_nll(model: SynthesisNetwork, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Per-sequence -log p(x_2..x_T | x_1, text) in nats, and the number of predicted points; [B] each.

  Point t is the input that predicts point t + 1; the first point (offset 0) is the start symbol, as in Graves.
  """
  points = batch['points'].astype(jnp.float32)
  y, _ = model(points[:, :-1], batch['chars'], batch['text_length'])
  nll_BxT = mixture_nll(y, points[:, 1:], model.output_mixtures)
  counts_B = jnp.maximum(batch['length'] - 1, 0)
  mask = jnp.arange(nll_BxT.shape[1]) < counts_B[:, None]
  return jnp.sum(jnp.where(mask, nll_BxT, 0.0), axis=1), counts_B.astype(jnp.float32)
