"""DRAW (Gregor et al. 2015) with filterbank attention, for the layer-normalization paper's Figure 4.

The model reads the image through an N x N grid of Gaussian filters placed by the decoder (`read`), encodes the glimpse
with an LSTM, samples a latent code, decodes it with a second LSTM and adds a written N x N patch to a canvas
(`write`); after T glimpses the canvas holds the logits of a Bernoulli distribution over pixels. `negative_elbo` is the
per-example variational bound on -log p(x) in nats that the paper reports.

Conventions:
* Images are `(height, width)` = (B, A) in the DRAW paper's notation: x runs along the width, y along the height.
* Pixel coordinates are 1-based (a = 1..A) and filter indices are 1-based (i = 1..N), so the DRAW paper's formulas hold
  exactly: g~ = 0 centres the grid on the image ((A + 1) / 2), and a full-resolution grid (N = A, delta = 1) puts
  filter i on pixel i.
* `norm='ln'` uses the DRAW LSTM of the LN paper (appendix eq. 29-31: plain gates, LN only on the copy of c_t that
  enters the output tanh, the carried c_t un-normalized) in BOTH the encoder and the decoder. The paper does not say
  which of the two it normalized (docs/paper.md, section 4: not stated); both is our documented guess.
* `norm='rms'` (beyond the paper) uses `layernorm.RMSDRAWLSTMCell` in both: an RMS norm (a gain, no re-centering)
  where the DRAW LSTM has its one LN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

import layernorm

# Bound on the log-space attention parameters (log sigma^2, log delta~, log gamma). exp(+-10) spans 4.5e-5..2.2e4: wide
# enough never to bind in normal training, tight enough that sigma^2 cannot underflow to 0 (a 0/0 in the filter
# exponent) and 1/gamma cannot overflow.
_LOG_CLIP = 10.0
# Added to each filter's row sum before normalizing: a filter centred far outside the image reads ~0 instead of 0/0.
FILTER_EPS = 1e-8


# ----------------------------------------------------------------------------------------------------------------------
# Filterbank attention (Gregor et al. 2015, §3.2), pure functions.


class Attention(NamedTuple):
  """Attention parameters in image coordinates, one per example."""

  gx_B: jax.Array  # grid centre along the width (1-based pixel units)
  gy_B: jax.Array  # grid centre along the height
  sigma2_B: jax.Array  # isotropic filter variance
  delta_B: jax.Array  # stride between neighbouring filter centres
  gamma_B: jax.Array  # intensity


def attention_params(raw_Bx5: jax.Array, image_shape: tuple[int, int], n: int) -> Attention:
  """Maps the linear layer's output (g~x, g~y, log sigma^2, log delta~, log gamma) to image coordinates.

  gx = (A + 1) / 2 (g~x + 1), gy = (B + 1) / 2 (g~y + 1), delta = (max(A, B) - 1) / (N - 1) delta~: so g~ in [-1, 1]
  spans the image and delta~ = 1 spreads the grid over the whole image. For N = 1 the stride is unused and the
  (N - 1) is replaced by 1 to keep it finite.

  Args:
    raw_Bx5: unconstrained parameters, in the order above.
    image_shape: (height B, width A).
    n: filters per side.
  """
  height, width = image_shape
  gx_tilde, gy_tilde, log_sigma2, log_delta_tilde, log_gamma = jnp.moveaxis(raw_Bx5, -1, 0)
  clip = lambda v: jnp.clip(v, -_LOG_CLIP, _LOG_CLIP)
  return Attention(
    gx_B=(width + 1) / 2 * (gx_tilde + 1),
    gy_B=(height + 1) / 2 * (gy_tilde + 1),
    sigma2_B=jnp.exp(clip(log_sigma2)),
    delta_B=(max(height, width) - 1) / max(n - 1, 1) * jnp.exp(clip(log_delta_tilde)),
    gamma_B=jnp.exp(clip(log_gamma)),
  )


def filter_centres(g_B: jax.Array, delta_B: jax.Array, n: int) -> jax.Array:
  """mu^i = g + (i - N/2 - 0.5) delta for i = 1..N; returns B x N."""
  i = jnp.arange(1, n + 1, dtype=jnp.float32)
  return g_B[:, None] + (i - n / 2 - 0.5) * delta_B[:, None]


def filterbank(g_B: jax.Array, delta_B: jax.Array, sigma2_B: jax.Array, n: int, size: int) -> jax.Array:
  """Gaussian filters F[i, a] = exp(-(a - mu^i)^2 / (2 sigma^2)), each row normalized to sum to 1; B x N x size."""
  a = jnp.arange(1, size + 1, dtype=jnp.float32)
  mu_BxN = filter_centres(g_B, delta_B, n)
  f_BxNxS = jnp.exp(-jnp.square(a - mu_BxN[..., None]) / (2 * sigma2_B[:, None, None]))
  return f_BxNxS / (f_BxNxS.sum(-1, keepdims=True) + FILTER_EPS)


def filterbanks(att: Attention, image_shape: tuple[int, int], n: int) -> tuple[jax.Array, jax.Array]:
  """The horizontal (B x N x width) and vertical (B x N x height) filterbanks of one attention window."""
  height, width = image_shape
  fx_BxNxW = filterbank(att.gx_B, att.delta_B, att.sigma2_B, n, width)
  fy_BxNxH = filterbank(att.gy_B, att.delta_B, att.sigma2_B, n, height)
  return fx_BxNxW, fy_BxNxH


def read(x_BxHxW: jax.Array, fx_BxNxW: jax.Array, fy_BxNxH: jax.Array, gamma_B: jax.Array) -> jax.Array:
  """The glimpse gamma F_Y x F_X^T; B x N x N."""
  return gamma_B[:, None, None] * jnp.einsum('bih,bhw,bjw->bij', fy_BxNxH, x_BxHxW, fx_BxNxW)


def write(w_BxNxN: jax.Array, fx_BxNxW: jax.Array, fy_BxNxH: jax.Array, gamma_B: jax.Array) -> jax.Array:
  """The canvas update (1 / gamma) F_Y^T w F_X; B x H x W. The adjoint of `read` up to the gamma factors."""
  return jnp.einsum('bih,bij,bjw->bhw', fy_BxNxH, w_BxNxN, fx_BxNxW) / gamma_B[:, None, None]


# ----------------------------------------------------------------------------------------------------------------------
# Recurrent cells.


CellType = Callable[..., nnx.Module]

# The baseline uses the plain LSTM; the LN variant the appendix's DRAW LSTM (eq. 29-31) in encoder and decoder, the
# RMS variant the same cell with an RMS norm in place of its LN.
CELLS: dict[str, CellType] = {
  'none': layernorm.LSTMCell,
  'ln': layernorm.DRAWLSTMCell,
  'rms': layernorm.RMSDRAWLSTMCell,
}


# ----------------------------------------------------------------------------------------------------------------------
# The model.


def gaussian_kl(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
  """KL(N(mu, sigma^2) || N(0, 1)) in nats, summed over the last axis."""
  return 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(2 * log_sigma) - 2 * log_sigma - 1, axis=-1)


class DRAW(nnx.Module):
  """DRAW with filterbank attention (Gregor et al. 2015); defaults are the MNIST model of the LN paper's Figure 4.

  One glimpse t, from the state after glimpse t - 1:
    x^_t = x - sigmoid(c_{t-1});  r_t = [read(x), read(x^_t)] placed by h^dec_{t-1}
    h^enc_t = LSTM_enc(h^enc_{t-1}, [r_t, h^dec_{t-1}]);  z_t ~ q(z_t | h^enc_t) = N(mu_t, sigma_t^2)
    h^dec_t = LSTM_dec(h^dec_{t-1}, z_t);  c_t = c_{t-1} + write(h^dec_t)
  The initial canvas and both LSTMs' initial (c, h) are learned biases (initialised to 0), as in the DRAW paper.

  Args:
    image_shape: (height, width).
    hidden: LSTM units of the encoder and of the decoder.
    latent: size of each z_t.
    glimpses: time steps T.
    read_n: read window N x N (2 in the paper variant).
    write_n: write window N x N (5).
    norm: 'none' (plain LSTMs), 'ln' (the DRAW LSTM, eq. 29-31, in the encoder and the decoder) or 'rms' (the DRAW
      LSTM with an RMS norm in place of its LN).
    cell_type: cell class built as `cell_type(in_features, hidden_features, rngs=rngs)`; carry (c, h), flax's cell
      protocol. Defaults to the cell `norm` names; when given, `norm` is only a label.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    image_shape: tuple[int, int] = (28, 28),
    *,
    hidden: int = 256,
    latent: int = 100,
    glimpses: int = 64,
    read_n: int = 2,
    write_n: int = 5,
    norm: str = 'none',
    cell_type: CellType | None = None,
    rngs: nnx.Rngs,
  ):
    if norm not in CELLS:
      raise ValueError(f'DRAW norm must be one of {", ".join(CELLS)}; got {norm!r}.')
    if len(image_shape) != 2:
      raise ValueError(f'DRAW image_shape must be (height, width); got {image_shape!r}.')
    sizes = dict(hidden=hidden, latent=latent, glimpses=glimpses, read_n=read_n, write_n=write_n)
    sizes.update(height=image_shape[0], width=image_shape[1])
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
    if bad:
      raise ValueError(f'DRAW sizes must be positive ints; got {bad}.')
    self.image_shape = tuple(image_shape)
    self.hidden, self.latent, self.glimpses = hidden, latent, glimpses
    self.read_n, self.write_n, self.norm = read_n, write_n, norm

    cell_type = cell_type or CELLS[norm]
    self.encoder = cell_type(2 * read_n * read_n + hidden, hidden, rngs=rngs)
    self.decoder = cell_type(latent, hidden, rngs=rngs)
    # -> (mu, log sigma). Zero-initialised so both variants start at q = N(0, I), KL = 0: with flax's default init
    # the LN variant's larger h (normalized c) starts at ~20x the baseline's KL, which would distort Figure 4's start.
    self.posterior = nnx.Linear(hidden, 2 * latent, kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.read_attention = nnx.Linear(hidden, 5, rngs=rngs)
    self.write_attention = nnx.Linear(hidden, 5, rngs=rngs)
    self.write_patch = nnx.Linear(hidden, write_n * write_n, rngs=rngs)
    self.initial_canvas = nnx.Param(jnp.zeros(self.image_shape, jnp.float32))
    self.initial_encoder_state = nnx.Param(jnp.zeros((2, hidden), jnp.float32))  # (c, h)
    self.initial_decoder_state = nnx.Param(jnp.zeros((2, hidden), jnp.float32))

  def _initial_state(self, batch: int):
    broadcast = lambda p: tuple(jnp.broadcast_to(v, (batch, self.hidden)) for v in p[...])
    canvas_BxHxW = jnp.broadcast_to(self.initial_canvas[...], (batch, *self.image_shape))
    return canvas_BxHxW, broadcast(self.initial_encoder_state), broadcast(self.initial_decoder_state)

  def _write(self, h_dec_BxH: jax.Array) -> jax.Array:
    n = self.write_n
    att = attention_params(self.write_attention(h_dec_BxH), self.image_shape, n)
    fx, fy = filterbanks(att, self.image_shape, n)
    w_BxNxN = self.write_patch(h_dec_BxH).reshape(-1, n, n)
    return write(w_BxNxN, fx, fy, att.gamma_B)

  def _read(self, x_BxHxW: jax.Array, x_hat_BxHxW: jax.Array, h_dec_BxH: jax.Array) -> jax.Array:
    att = attention_params(self.read_attention(h_dec_BxH), self.image_shape, self.read_n)
    fx, fy = filterbanks(att, self.image_shape, self.read_n)
    glimpses = [read(img, fx, fy, att.gamma_B).reshape(img.shape[0], -1) for img in (x_BxHxW, x_hat_BxHxW)]
    return jnp.concatenate(glimpses, axis=-1)

  def _check_images(self, x_BxHxW: jax.Array) -> None:
    if x_BxHxW.ndim != 3 or tuple(x_BxHxW.shape[1:]) != self.image_shape:
      raise ValueError(f'DRAW expects images of shape (batch, {self.image_shape}); got {x_BxHxW.shape}.')

  def __call__(self, x_BxHxW: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes and reconstructs `x` through T glimpses.

    Args:
      x_BxHxW: images in [0, 1] (binary for the Bernoulli likelihood).
      rng: key for the reparameterised samples z_t.

    Returns:
      (logits of the final canvas c_T, B x H x W; KL(q(z_t | .) || N(0, I)) per example and glimpse, B x T).
    """
    self._check_images(x_BxHxW)
    x_BxHxW = x_BxHxW.astype(jnp.float32)
    batch = x_BxHxW.shape[0]
    eps_TxBxZ = jax.random.normal(rng, (self.glimpses, batch, self.latent))
    # Thread the parameters through the scan as a pure state, and rebuild the module inside the body.
    graphdef, params = nnx.split(self)

    def glimpse(carry, eps_BxZ):
      model = nnx.merge(graphdef, params)
      canvas_BxHxW, enc_carry, dec_carry = carry
      h_dec_BxH = dec_carry[1]
      x_hat_BxHxW = x_BxHxW - jax.nn.sigmoid(canvas_BxHxW)
      r_BxR = model._read(x_BxHxW, x_hat_BxHxW, h_dec_BxH)
      enc_carry, h_enc_BxH = model.encoder(enc_carry, jnp.concatenate([r_BxR, h_dec_BxH], axis=-1))
      mu_BxZ, log_sigma_BxZ = jnp.split(model.posterior(h_enc_BxH), 2, axis=-1)
      z_BxZ = mu_BxZ + jnp.exp(log_sigma_BxZ) * eps_BxZ
      dec_carry, h_dec_BxH = model.decoder(dec_carry, z_BxZ)
      canvas_BxHxW = canvas_BxHxW + model._write(h_dec_BxH)
      return (canvas_BxHxW, enc_carry, dec_carry), gaussian_kl(mu_BxZ, log_sigma_BxZ)

    (canvas_BxHxW, _, _), kl_TxB = jax.lax.scan(glimpse, self._initial_state(batch), eps_TxBxZ)
    return canvas_BxHxW, kl_TxB.T

  def sample(self, n: int, rng: jax.Array, *, return_canvases: bool = True) -> jax.Array:
    """Draws `n` images from the generative model, z_t ~ N(0, I).

    Returns:
      The Bernoulli means sigmoid(c_t): after every glimpse (T x n x H x W) with `return_canvases`, else only the
      final one (n x H x W).
    """
    z_TxNxZ = jax.random.normal(rng, (self.glimpses, n, self.latent))
    canvas0, _, dec_carry0 = self._initial_state(n)
    graphdef, params = nnx.split(self)

    def glimpse(carry, z_NxZ):
      model = nnx.merge(graphdef, params)
      canvas_NxHxW, dec_carry = carry
      dec_carry, h_dec_NxH = model.decoder(dec_carry, z_NxZ)
      canvas_NxHxW = canvas_NxHxW + model._write(h_dec_NxH)
      return (canvas_NxHxW, dec_carry), canvas_NxHxW

    _, canvases_TxNxHxW = jax.lax.scan(glimpse, (canvas0, dec_carry0), z_TxNxZ)
    means_TxNxHxW = jax.nn.sigmoid(canvases_TxNxHxW)
    return means_TxNxHxW if return_canvases else means_TxNxHxW[-1]


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
  """-log Bernoulli(x | sigmoid(logits)) summed over every axis but the first (stable form)."""
  nll = jax.nn.softplus(logits) - x * logits
  return nll.reshape(nll.shape[0], -1).sum(-1)


def negative_elbo_terms(model: DRAW, x_BxHxW: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The bound's two parts per example: (reconstruction -log p(x | c_T), B; KL per glimpse, B x T), in nats."""
  logits_BxHxW, kl_BxT = model(x_BxHxW, rng)
  return bernoulli_nll(logits_BxHxW, x_BxHxW.astype(jnp.float32)), kl_BxT


def negative_elbo(model: DRAW, x_BxHxW: jax.Array, rng: jax.Array) -> jax.Array:
  """The variational bound on -log p(x) per example, in nats (one sample of z): Bernoulli NLL + sum_t KL_t; B."""
  reconstruction_B, kl_BxT = negative_elbo_terms(model, x_BxHxW, rng)
  return reconstruction_B + kl_BxT.sum(-1)
