"""DRAW: filterbank attention on hand-checkable cases, the bound against closed forms, the cells, training, pictures."""

import math

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.draw import model as dm
from experiments.draw.pictures import drawing_sequence, samples_grid, save_png
from layernorm import layer_norm, rms_norm

TINY = dict(hidden=16, latent=4, glimpses=3, read_n=2, write_n=3)
TINY_SHAPE = (8, 9)  # Not square, so a swapped height and width fails.


def raw_params(image_shape, n, *, gx=None, gy=None, sigma2=1.0, delta=None, gamma=1.0):
  """The linear layer's output (g~x, g~y, log sigma^2, log delta~, log gamma) giving the wanted image-space values."""
  height, width = image_shape
  gx = (width + 1) / 2 if gx is None else gx
  gy = (height + 1) / 2 if gy is None else gy
  delta_tilde = 1.0 if delta is None else delta * max(n - 1, 1) / (max(height, width) - 1)
  values = [2 * gx / (width + 1) - 1, 2 * gy / (height + 1) - 1, math.log(sigma2), math.log(delta_tilde)]
  return jnp.array([[*values, math.log(gamma)]], jnp.float32)


@jax.jit(static_argnums=2)  # One compile per case instead of one per op.
def _glimpse(x_1xHxW, raw_1x5, n):
  att = dm.attention_params(raw_1x5, x_1xHxW.shape[1:], n)
  fx, fy = dm.filterbanks(att, x_1xHxW.shape[1:], n)
  return dm.read(x_1xHxW, fx, fy, att.gamma_B)[0], att, fx[0], fy[0]


def glimpse(x_HxW, n, **kw):
  return _glimpse(jnp.asarray(x_HxW)[None], raw_params(x_HxW.shape, n, **kw), n)


# ---------------------------------------------------------------------------------------------------------------------
# Filterbank attention.


def test_full_resolution_centred_read_reproduces_the_image_and_write_restores_it():
  x = np.random.default_rng(0).uniform(size=(7, 7)).astype(np.float32)
  # N = image size, delta~ = 1 -> delta = 1, g~ = 0 -> centred, tiny sigma, gamma = 1.
  r, att, fx, fy = glimpse(x, 7, sigma2=1e-3)
  np.testing.assert_allclose(att.delta_B, [1.0])
  np.testing.assert_allclose(fx, np.eye(7), atol=1e-6)
  np.testing.assert_allclose(r, x, atol=1e-6)
  np.testing.assert_allclose(dm.write(r[None], fx[None], fy[None], att.gamma_B)[0], x, atol=1e-6)


@pytest.mark.parametrize('row,col', [(1, 1), (3, 7), (5, 9)])
def test_a_1x1_filter_centred_on_a_bright_pixel_reads_it(row, col):
  x = np.zeros((5, 9), np.float32)
  x[row - 1, col - 1] = 1.0  # 1-based pixel coordinates, as in the DRAW paper.
  r, *_ = glimpse(x, 1, gx=col, gy=row, sigma2=1e-3, gamma=2.0)
  np.testing.assert_allclose(r, [[2.0]], atol=1e-6)  # gamma scales the glimpse.
  r_beside, *_ = glimpse(x, 1, gx=col + 1, gy=row, sigma2=1e-3)
  np.testing.assert_allclose(r_beside, [[0.0]], atol=1e-6)


def test_grid_centres_are_at_g_plus_offset_times_stride():
  shape = (20, 30)
  # N = 3, delta = 2, gx = 10: centres at 10 + (i - 2) * 2 for i = 1..3; gy = (20 + 1) / 2 by default (g~y = 0).
  _, att, fx, fy = glimpse(np.zeros(shape, np.float32), 3, gx=10.0, delta=2.0, sigma2=0.5)
  np.testing.assert_allclose(att.gx_B, [10.0], rtol=1e-6)
  np.testing.assert_allclose(att.delta_B, [2.0], rtol=1e-6)
  np.testing.assert_allclose(dm.filter_centres(att.gx_B, att.delta_B, 3), [[8.0, 10.0, 12.0]], rtol=1e-6)
  np.testing.assert_allclose(dm.filter_centres(att.gy_B, att.delta_B, 3), [[8.5, 10.5, 12.5]], rtol=1e-6)
  # Each filter is a normalized bump whose mean is its centre.
  np.testing.assert_allclose(fx.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(fx @ np.arange(1, 31), [8.0, 10.0, 12.0], rtol=1e-5)
  np.testing.assert_allclose(fy @ np.arange(1, 21), [8.5, 10.5, 12.5], rtol=1e-5)
  np.testing.assert_array_equal(np.argmax(fx, -1) + 1, [8, 10, 12])


def test_a_larger_sigma_spreads_the_filter_mass():
  a = np.arange(1, 41)
  one = jnp.ones((1,))
  peaks, variances = [], []
  for sigma in (1.0, 2.0, 3.0):
    f = np.asarray(dm.filterbank(20.0 * one, one, sigma**2 * one, 1, 40))[0, 0]
    variances.append(f @ (a - 20.0) ** 2)
    peaks.append(f[19])
    np.testing.assert_allclose(variances[-1], sigma**2, rtol=1e-4)  # A sampled Gaussian keeps its variance.
  assert peaks[0] > peaks[1] > peaks[2]  # So a bright pixel under the centre reads dimmer.


def test_a_filter_far_outside_the_image_reads_zero_not_nan():
  one = jnp.ones((1,))
  f = dm.filterbank(-1e4 * one, one, 1e-3 * one, 2, 8)
  assert np.all(np.isfinite(f)) and np.allclose(f, 0.0)


def test_write_is_the_transpose_of_read():
  shape, n, batch = (6, 11), 4, 3
  rng = np.random.default_rng(0)  # NumPy draws: each new shape of jax.random costs a compile.
  # Each side jitted on its own: one compile each, not one per operation.
  filterbanks = jax.jit(lambda raw: (att := dm.attention_params(raw, shape, n), dm.filterbanks(att, shape, n)))
  att, (fx, fy) = filterbanks(jnp.asarray(rng.normal(size=(batch, 5)) * 0.5, jnp.float32))
  x = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(batch, n, n)), jnp.float32)
  lhs = jax.jit(lambda x, w, g: jnp.sum(dm.read(x, fx, fy, g) * w, axis=(1, 2)))(x, w, att.gamma_B)
  rhs = jax.jit(lambda x, w, g: jnp.sum(x * dm.write(w, fx, fy, g), axis=(1, 2)))(x, w, att.gamma_B)
  np.testing.assert_allclose(lhs, att.gamma_B**2 * rhs, rtol=1e-5)
  # With gamma = 1 they are exact adjoints: the vjp of read is write.
  ones = jnp.ones((batch,))
  read_vjp = jax.jit(lambda x, w: jax.vjp(lambda x: dm.read(x, fx, fy, ones), x)[1](w)[0])(x, w)
  np.testing.assert_allclose(read_vjp, jax.jit(lambda w: dm.write(w, fx, fy, ones))(w), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# The bound.


def test_gaussian_kl_matches_its_closed_form_on_hand_cases():
  mu = jnp.array([[0.0, 1.0, 0.0]])
  log_sigma = jnp.array([[0.0, 0.0, 1.0]])
  # 0 + 1/2 + (e^2 - 2 - 1) / 2.
  np.testing.assert_allclose(dm.gaussian_kl(mu, log_sigma), [0.5 + (math.e**2 - 3) / 2], rtol=1e-6)


def test_gaussian_kl_matches_a_monte_carlo_estimate():
  mu = np.array([0.3, -1.2, 0.8])
  log_sigma = np.array([-0.5, 0.2, 0.0])
  z = mu + np.exp(log_sigma) * np.random.default_rng(0).standard_normal((400_000, 3))
  log_q = -0.5 * (((z - mu) / np.exp(log_sigma)) ** 2 + 2 * log_sigma + math.log(2 * math.pi)).sum(-1)
  log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
  samples = log_q - log_p
  stderr = samples.std() / math.sqrt(len(samples))
  kl = float(dm.gaussian_kl(jnp.asarray(mu), jnp.asarray(log_sigma)))
  assert abs(samples.mean() - kl) < 4 * stderr, (samples.mean(), kl, stderr)


def tiny_batch(batch=6):
  """A fixed batch of binary 8 x 9 images: random bars, so there is structure to learn."""
  rng = np.random.default_rng(0)
  x = np.zeros((batch, *TINY_SHAPE), np.float32)
  for k in range(batch):
    x[k, :, rng.integers(9)] = 1.0
    x[k, rng.integers(8), :] = 1.0
  return jnp.asarray(x)


@pytest.fixture(scope='module', params=['none', 'ln'])
def tiny_model(request):
  return dm.DRAW(TINY_SHAPE, **TINY, norm=request.param, rngs=nnx.Rngs(0))


def test_negative_elbo_is_finite_positive_and_equals_its_parts(tiny_model):
  x, rng = tiny_batch(), jax.random.key(1)
  logits, kl_BxT = tiny_model(x, rng)
  assert logits.shape == (6, *TINY_SHAPE) and kl_BxT.shape == (6, TINY['glimpses'])
  # Independent float64 parts: -sum_pixels [x log p + (1 - x) log(1 - p)], p = sigmoid(logits), plus sum_t KL_t.
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  xs = np.asarray(x, np.float64)
  reconstruction = -(xs * np.log(p) + (1 - xs) * np.log1p(-p)).sum((1, 2))
  assert np.all(np.asarray(kl_BxT) >= 0)
  bound = np.asarray(dm.negative_elbo(tiny_model, x, rng))
  assert bound.shape == (6,) and np.all(np.isfinite(bound)) and np.all(bound > 0)
  np.testing.assert_allclose(bound, reconstruction + np.asarray(kl_BxT, np.float64).sum(-1), rtol=1e-5)
  # Jitted, the same numbers.
  np.testing.assert_allclose(nnx.jit(dm.negative_elbo)(tiny_model, x, rng), bound, rtol=1e-5)


def test_the_bound_depends_on_the_rng_only_through_z(tiny_model):
  x, bound = tiny_batch(), nnx.jit(dm.negative_elbo)
  np.testing.assert_array_equal(bound(tiny_model, x, jax.random.key(1)), bound(tiny_model, x, jax.random.key(1)))
  assert not np.allclose(bound(tiny_model, x, jax.random.key(1)), bound(tiny_model, x, jax.random.key(2)))


def test_sample_returns_the_canvas_after_every_glimpse(tiny_model):
  canvases = tiny_model.sample(4, jax.random.key(3))
  assert canvases.shape == (TINY['glimpses'], 4, *TINY_SHAPE)
  assert np.all((canvases > 0) & (canvases < 1))
  assert not np.allclose(canvases[0], canvases[-1])
  np.testing.assert_allclose(tiny_model.sample(4, jax.random.key(3), return_canvases=False), canvases[-1], rtol=1e-6)


SQUASH = {
  'none': jnp.tanh,
  'ln': lambda c: jnp.tanh(layer_norm(c)),
  'rms': lambda c: jnp.tanh(rms_norm(c, eps=1e-6)),
}


@pytest.mark.parametrize('norm,other', [('none', 'ln'), ('ln', 'none'), ('ln', 'rms'), ('rms', 'ln')])
def test_the_cells_normalize_c_only_in_the_normalized_variants(norm, other):
  """Layout-free hand check: h_t = sigmoid(o) tanh(N(c_t)) with N the variant's norm (LN for 'ln', RMS for 'rms',
  none for 'none'), and not the `other` variant's; c_t un-normalized.

  The gates depend on (x, h_{t-1}) only, so three steps that differ only in c_{t-1} share sigmoid(o) and sigmoid(f):
  c_t must move linearly with c_{t-1} (so it is not normalized), and h_t / tanh(N(c_t)) must be the same in all three.
  """
  model = dm.DRAW(TINY_SHAPE, **TINY, norm=norm, rngs=nnx.Rngs(1))
  squash, other = SQUASH[norm], SQUASH[other]
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  hidden = TINY['hidden']
  for cell, in_features in ((model.encoder, 2 * TINY['read_n'] ** 2 + hidden), (model.decoder, TINY['latent'])):
    x = normal(3, in_features)
    h_prev = jnp.tanh(normal(3, hidden))
    c_prev = normal(3, hidden)
    step = normal(3, hidden) + 3.0
    (c1, h1), y1 = cell((c_prev, h_prev), x)
    (c2, h2), _ = cell((c_prev + step, h_prev), x)
    (c3, h3), _ = cell((c_prev + 2 * step, h_prev), x)
    np.testing.assert_array_equal(y1, h1)
    np.testing.assert_allclose(c3 - c1, 2 * (c2 - c1), rtol=1e-4, atol=1e-5)
    slope = (c2 - c1) / step
    assert np.all((slope > 0) & (slope < 1))  # sigmoid(f)
    np.testing.assert_allclose(h1 * squash(c2), h2 * squash(c1), atol=1e-6)
    np.testing.assert_allclose(h1 * squash(c3), h3 * squash(c1), atol=1e-6)
    assert not np.allclose(h1 * other(c2), h2 * other(c1), atol=1e-3)


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_paper_variant_shapes_and_parameter_count(norm):
  """The defaults are the paper's MNIST model; traced abstractly (no compile) to stay fast."""
  model = nnx.eval_shape(lambda: dm.DRAW(norm=norm, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, 28, 28), jnp.float32)
  bound = nnx.eval_shape(lambda m, x: dm.negative_elbo(m, x, jax.random.key(0)), model, x)
  assert bound.shape == (2,)
  canvases = nnx.eval_shape(lambda m: m.sample(3, jax.random.key(0)), model)
  assert canvases.shape == (64, 3, 28, 28)
  h, z = 256, 100
  norm_params = {'none': 0, 'ln': 2 * h, 'rms': h}[norm]  # LN's gain and bias on c; the RMS norm's gain alone.
  lstm = lambda n_in: 4 * h * (n_in + h) + 4 * h + norm_params
  expected = (
    lstm(2 * 2 * 2 + h)  # encoder: two 2x2 glimpses and h_dec
    + lstm(z)  # decoder
    + (h + 1) * 2 * z  # q(z | h_enc): mean and log sigma
    + 2 * (h + 1) * 5  # read and write attention parameters
    + (h + 1) * 5 * 5  # write patch
    + 28 * 28  # initial canvas
    + 2 * 2 * h  # initial (c, h) of both LSTMs
  )
  n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n_params == expected


def test_cell_type_is_a_constructor_argument():
  model = dm.DRAW(TINY_SHAPE, **TINY, norm='ln', cell_type=nnx.OptimizedLSTMCell, rngs=nnx.Rngs(0))
  assert isinstance(model.encoder, nnx.OptimizedLSTMCell) and isinstance(model.decoder, nnx.OptimizedLSTMCell)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='norm'):
    dm.DRAW(TINY_SHAPE, **TINY, norm='bn', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='read_n'):
    dm.DRAW(TINY_SHAPE, **{**TINY, 'read_n': 0}, rngs=nnx.Rngs(0))
  model = dm.DRAW(TINY_SHAPE, **TINY, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='images of shape'):
    model(jnp.zeros((2, 9, 8)), jax.random.key(0))


def test_adam_steps_decrease_the_bound_with_finite_grads(tiny_model):
  model = nnx.clone(tiny_model)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  x, rng = tiny_batch(), jax.random.key(1)  # One fixed noise draw, so the objective is deterministic.

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: dm.negative_elbo(m, x, rng).mean())(model)
    optimizer.update(model, grads)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return loss, finite

  losses = []
  for _ in range(30):
    loss, finite = train_step(model, optimizer)
    assert finite
    losses.append(float(loss))
  assert losses[-1] < 0.6 * losses[0], losses


# ---------------------------------------------------------------------------------------------------------------------
# Pictures.


def test_samples_grid_places_image_k_at_row_k_div_ncols_column_k_mod_ncols():
  images = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3) / 42
  grid = samples_grid(images, ncols=3, pad=1, pad_value=-1.0)
  assert grid.shape == (3 * 3 + 1, 3 * 4 + 1)
  for k in range(7):
    r, c = k // 3, k % 3
    np.testing.assert_array_equal(grid[1 + 3 * r : 3 + 3 * r, 1 + 4 * c : 4 + 4 * c], images[k])
  np.testing.assert_array_equal(grid[7:9, 5:8], -1.0)  # Empty cell after the last image.
  np.testing.assert_array_equal(grid[0], -1.0)
  np.testing.assert_array_equal(samples_grid(images, ncols=7, pad=0), np.concatenate(list(images), axis=1))


def test_drawing_sequence_puts_examples_in_rows_and_glimpses_in_columns():
  t, n = 5, 2
  canvases = np.arange(t * n, dtype=np.float32).reshape(t, n, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
  seq = drawing_sequence(canvases, pad=0)
  assert seq.shape == (n * 2, t * 2)
  for k in range(n):
    for step in range(t):
      np.testing.assert_array_equal(seq[2 * k : 2 * k + 2, 2 * step : 2 * step + 2], canvases[step, k])
  short = drawing_sequence(canvases, steps=3, pad=0)
  np.testing.assert_array_equal(short[0, ::2], canvases[[0, 2, 4], 0, 0, 0])


def test_save_png_writes_the_grayscale_image(tmp_path):
  image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
  path = save_png(image, tmp_path / 'pics' / 'grid.png')
  back = matplotlib.image.imread(path)
  assert back.shape[:2] == (3, 4)
  np.testing.assert_allclose(back[..., 0], image, atol=1 / 255 + 1e-6)


def reference_bound(model, x, rng):
  """The bound by hand: the glimpse recursion as a Python loop over the model's layers, KL and NLL in float64 NumPy.

  Returns (reconstruction [B], KL [B, T]), independent of the scan, `gaussian_kl` and `bernoulli_nll`.
  """
  batch = x.shape[0]
  eps = np.asarray(jax.random.normal(rng, (model.glimpses, batch, model.latent)))  # The model's documented draw.
  canvas, enc, dec = model._initial_state(batch)
  kl = []
  for t in range(model.glimpses):
    r = model._read(x, x - jax.nn.sigmoid(canvas), dec[1])
    enc, h_enc = model.encoder(enc, jnp.concatenate([r, dec[1]], axis=-1))
    out = np.asarray(model.posterior(h_enc), np.float64)
    mu, log_sigma = out[:, : model.latent], out[:, model.latent :]
    kl.append(0.5 * np.sum(mu**2 + np.exp(2 * log_sigma) - 2 * log_sigma - 1, axis=-1))
    z = jnp.asarray(mu + np.exp(log_sigma) * eps[t], jnp.float32)
    dec, h_dec = model.decoder(dec, z)
    canvas = canvas + model._write(h_dec)
  p = 1 / (1 + np.exp(-np.asarray(canvas, np.float64)))
  xs = np.asarray(x, np.float64)
  reconstruction = -(xs * np.log(p) + (1 - xs) * np.log1p(-p)).sum((1, 2))
  return reconstruction, np.stack(kl, axis=1)


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_kl_and_bound_with_a_trained_posterior_match_a_hand_computation(norm):
  """With non-zero posterior weights (the layer starts at zero, where every KL is 0): the model's KL per glimpse and
  its bound equal the loop above, and the KL is far from zero, so a dropped or mis-scaled KL term cannot pass."""
  model = dm.DRAW(TINY_SHAPE, **TINY, norm=norm, rngs=nnx.Rngs(2))
  rng_np = np.random.default_rng(5)
  kernel = model.posterior.kernel
  kernel[...] = jnp.asarray(rng_np.normal(size=kernel.shape) * 0.4, jnp.float32)
  model.posterior.bias[...] = jnp.asarray(rng_np.normal(size=model.posterior.bias.shape) * 0.8, jnp.float32)
  x, rng = tiny_batch(4), jax.random.key(4)
  reconstruction, kl_BxT = reference_bound(model, x, rng)
  assert np.all(kl_BxT > 0.5), kl_BxT  # A KL that matters: nats, not rounding.
  _, model_kl = model(x, rng)
  np.testing.assert_allclose(model_kl, kl_BxT, rtol=1e-4)
  np.testing.assert_allclose(dm.negative_elbo(model, x, rng), reconstruction + kl_BxT.sum(-1), rtol=1e-5)


def test_sample_is_the_decoder_run_on_prior_draws(tiny_model):
  """sample by hand: z_t ~ N(0, I) (the documented draw), c_t = c_{t-1} + write(h^dec_t), means sigmoid(c_t)."""
  n, rng = 3, jax.random.key(5)
  z = jax.random.normal(rng, (tiny_model.glimpses, n, tiny_model.latent))
  canvas, _, dec = tiny_model._initial_state(n)

  @nnx.jit  # One compile per model, not one per operation.
  def decode(model, dec, z, canvas):
    dec, h_dec = model.decoder(dec, z)
    return dec, canvas + model._write(h_dec)

  expected = []
  for t in range(tiny_model.glimpses):
    dec, canvas = decode(tiny_model, dec, z[t], canvas)
    expected.append(1 / (1 + np.exp(-np.asarray(canvas, np.float64))))
  np.testing.assert_allclose(tiny_model.sample(n, rng), np.stack(expected), rtol=1e-5, atol=1e-6)
