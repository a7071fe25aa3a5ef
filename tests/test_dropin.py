"""`layernorm.LayerNorm` and `RMSNorm` as drop-ins for flax's: a flax model with every `nnx.LayerNorm` and
`nnx.RMSNorm` swapped for ours builds the same parameters and computes the same outputs and gradients; each of
flax's constructor options behaves as in flax; the library's older keywords keep working."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import layernorm

# Matching epsilon and variance mode (ours is always the accurate variance, flax's use_fast_variance=False).
LN = dict(epsilon=1e-5, use_fast_variance=False)


class FlaxModel(nnx.Module):
  """A small flax model that names `nnx.LayerNorm` / `nnx.RMSNorm` at construction, with a spread of their options;
  a Linear after each norm shows whether the norm drew the same keys from `rngs` as flax's."""

  def __init__(self, rngs: nnx.Rngs):
    self.inp = nnx.Linear(6, 12, rngs=rngs)
    self.ln_plain = nnx.LayerNorm(12, **LN, rngs=rngs)
    self.mid = nnx.Linear(12, 12, rngs=rngs)
    # Random initializers (keys drawn from rngs), no bias, bf16 parameters.
    init = nnx.initializers.normal(0.5)
    self.ln_random = nnx.LayerNorm(12, **LN, use_bias=False, scale_init=init, param_dtype=jnp.bfloat16, rngs=rngs)
    self.ln_bias_random = nnx.LayerNorm(12, **LN, bias_init=init, use_scale=False, rngs=rngs)
    # Statistics over (time, features), a gain per feature.
    self.ln_block = nnx.LayerNorm(12, **LN, reduction_axes=(-2, -1), feature_axes=-1, rngs=rngs)
    # A gain per (time, feature): parameters along an axis the statistics do not reduce.
    self.ln_time = nnx.LayerNorm(3 * 12, **LN, reduction_axes=-1, feature_axes=(-2, -1), rngs=rngs)
    self.rms = nnx.RMSNorm(12, scale_init=init, rngs=rngs)
    self.out = nnx.Linear(12, 4, rngs=rngs)

  def __call__(self, x_BxTxD):
    h = self.ln_plain(self.inp(x_BxTxD))
    h = self.ln_random(jnp.tanh(self.mid(h)))
    h = self.ln_time(self.ln_block(self.ln_bias_random(h)))
    return self.out(self.rms(jax.nn.relu(h)))


def build(monkeypatch, swap: bool) -> FlaxModel:
  if swap:
    monkeypatch.setattr(nnx, 'LayerNorm', layernorm.LayerNorm)
    monkeypatch.setattr(nnx, 'RMSNorm', layernorm.RMSNorm)
  model = FlaxModel(nnx.Rngs(0))
  monkeypatch.undo()
  return model


def test_swapping_every_flax_norm_keeps_parameters_outputs_and_gradients(monkeypatch):
  theirs, ours = build(monkeypatch, swap=False), build(monkeypatch, swap=True)
  assert isinstance(ours.ln_plain, layernorm.LayerNorm) and isinstance(ours.rms, layernorm.RMSNorm)
  assert not isinstance(theirs.ln_plain, layernorm.LayerNorm)
  # Same parameter names, shapes, dtypes and values: the same keys were drawn in the same order.
  state_theirs, state_ours = nnx.state(theirs, nnx.Param), nnx.state(ours, nnx.Param)
  assert jax.tree.structure(state_theirs) == jax.tree.structure(state_ours)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b) or a.dtype == b.dtype, state_theirs, state_ours)
  assert ours.ln_random.scale[...].dtype == jnp.bfloat16

  x = jax.random.normal(jax.random.key(1), (5, 3, 6)) * 3 + 2
  dy = jax.random.normal(jax.random.key(2), (5, 3, 4))

  def loss(model, x):
    return jnp.sum(model(x) * dy)

  # Jitted, as models run: one compile per model, not one per operation of every norm.
  outputs = [nnx.jit(lambda m, x: m(x))(m, x) for m in (theirs, ours)]
  np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
  grads = [nnx.jit(nnx.grad(loss, argnums=(0, 1)))(m, x) for m in (theirs, ours)]
  for g_theirs, g_ours in zip(*(jax.tree.leaves(g) for g in grads), strict=True):
    assert g_theirs.shape == g_ours.shape and g_theirs.dtype == g_ours.dtype
    tol = 2e-2 if g_ours.dtype == jnp.bfloat16 else 1e-4
    np.testing.assert_allclose(
      np.asarray(g_ours, np.float32), np.asarray(g_theirs, np.float32), rtol=tol, atol=tol * 10
    )


@pytest.mark.parametrize(
  'kwargs,x_dtype',
  [
    (dict(dtype=jnp.bfloat16), jnp.float32),  # Computation inputs and result in bf16, statistics in float32.
    (dict(), jnp.bfloat16),  # bf16 input, float32 parameters: promoted to float32, as flax does.
    (dict(param_dtype=jnp.bfloat16), jnp.bfloat16),
    (dict(use_scale=False, use_bias=False), jnp.float32),
    (dict(reduction_axes=(0, 2), feature_axes=2), jnp.float32),  # Non-trailing reduction: the XLA path.
  ],
)
def test_dtype_and_axes_options_behave_as_in_flax(kwargs, x_dtype):
  x = (jax.random.normal(jax.random.key(0), (4, 3, 8)) * 2 + 1).astype(x_dtype)
  theirs = nnx.LayerNorm(8, **LN, **kwargs, rngs=nnx.Rngs(0))
  ours = layernorm.LayerNorm(8, **LN, **kwargs, rngs=nnx.Rngs(0))
  for m in (theirs, ours):
    if m.scale is not None:
      m.scale[...] = jax.random.normal(jax.random.key(1), (8,)).astype(m.scale[...].dtype)
  y_theirs, y_ours = theirs(x), ours(x)
  assert y_ours.dtype == y_theirs.dtype
  low = jnp.bfloat16 in (y_ours.dtype, x_dtype)
  np.testing.assert_allclose(
    np.asarray(y_ours, np.float32), np.asarray(y_theirs, np.float32), atol=3e-2 if low else 1e-5
  )


def test_mask_and_axis_name_average_as_flax():
  x = jax.random.normal(jax.random.key(0), (4, 2, 8)) * 2 + 1
  mask = jax.random.bernoulli(jax.random.key(1), 0.7, x.shape).at[..., 0].set(True)
  theirs = nnx.LayerNorm(8, **LN, rngs=nnx.Rngs(0))
  ours = layernorm.LayerNorm(8, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(ours(x, mask=mask), theirs(x, mask=mask), rtol=1e-5, atol=1e-5)
  # The feature axis split across a named axis (here vmap's; pmap and shard_map name theirs the same way): the
  # statistics are averaged over the named axis, so each shard is normalized with the whole row's mean and variance.
  shards = x.reshape(4, 2, 2, 4).transpose(2, 0, 1, 3)  # (shard, B, T, 4)
  outs = []
  for cls, kw in ((nnx.LayerNorm, LN), (layernorm.LayerNorm, {})):
    m = cls(4, axis_name='shard', **kw, rngs=nnx.Rngs(0))
    outs.append(jax.vmap(lambda s, m=m: m(s), axis_name='shard')(shards))
  np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
  whole = layernorm.layer_norm(x)
  np.testing.assert_allclose(outs[1].transpose(1, 2, 0, 3).reshape(x.shape), whole, rtol=1e-5, atol=1e-5)


def test_older_keywords_keep_their_meaning():
  x = jax.random.normal(jax.random.key(0), (3, 4, 5))
  old = layernorm.LayerNorm((4, 5), eps=1e-3, axis=(-2, -1), scale_init=0.5)
  new = layernorm.LayerNorm((4, 5), epsilon=1e-3, reduction_axes=(-2, -1), feature_axes=(-2, -1))
  new.scale[...] = jnp.full((4, 5), 0.5)
  assert old.eps == old.epsilon == 1e-3 and old.axis == (-2, -1) and old.scale[...].shape == (4, 5)
  np.testing.assert_array_equal(old(x), new(x))
  assert layernorm.LayerNorm(5).epsilon == 1e-5 and nnx.LayerNorm(5, rngs=nnx.Rngs(0)).epsilon == 1e-6  # Paper's.
  np.testing.assert_array_equal(layernorm.LayerNorm(5)(x), layernorm.layer_norm(x, jnp.ones(5), jnp.zeros(5), eps=1e-5))


@pytest.mark.parametrize(
  'call,match',
  [
    (lambda: layernorm.LayerNorm(4, eps=1e-3, epsilon=1e-4), 'epsilon=0.0001 and its alias eps=0.001'),
    (lambda: layernorm.LayerNorm(4, axis=-1, reduction_axes=(-2, -1)), '`axis` sets both'),
    (lambda: layernorm.LayerNorm((4, 5), axis=-1), r'2 feature sizes \(4, 5\) for feature axes -1'),
    (lambda: layernorm.LayerNorm(6, feature_axes=(-2, -1))(jnp.ones((2, 3, 4))), r'scale has shape \(6,\); expect'),
  ],
)
def test_conflicting_arguments_say_what_to_pass(call, match):
  with pytest.raises(ValueError, match=match):
    call()
