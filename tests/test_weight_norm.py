"""`WeightNormLinear` against a float64 NumPy reference, its initialisation, its invariances and its errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import WeightNorm, WeightNormLinear


def reference_weight_norm(x, v, g, b):
  """Salimans & Kingma (2016): w_i = g_i v_i / ||v_i|| for each column v_i of the (in, out) matrix v; y = x w + b."""
  v = np.asarray(v, np.float64)
  w = v * (np.asarray(g, np.float64) / np.sqrt((v**2).sum(axis=0)))
  y = np.asarray(x, np.float64) @ w
  return y if b is None else y + np.asarray(b, np.float64)


def _set_params(layer, v, g, b=None):
  layer.direction[...] = jnp.asarray(v)
  layer.scale[...] = jnp.asarray(g)
  if b is not None:
    layer.bias[...] = jnp.asarray(b)


@pytest.mark.parametrize('x_shape', [(5,), (7, 5), (2, 3, 5)])
@pytest.mark.parametrize('use_bias', [True, False])
def test_matches_float64_reference(x_shape, use_bias):
  rng = np.random.default_rng(0)
  v = rng.normal(0.0, 2.0, (5, 4)).astype(np.float32)
  g = rng.uniform(0.2, 3.0, 4).astype(np.float32)
  b = rng.normal(0.0, 1.0, 4).astype(np.float32) if use_bias else None
  x = rng.normal(1.0, 2.0, x_shape).astype(np.float32)
  layer = WeightNormLinear(5, 4, use_bias=use_bias, rngs=nnx.Rngs(0))
  _set_params(layer, v, g, b)
  y = nnx.jit(lambda m, x: m(x))(layer, x)
  assert y.shape == (*x_shape[:-1], 4) and y.dtype == jnp.float32
  np.testing.assert_allclose(y, reference_weight_norm(x, v, g, b), rtol=1e-5, atol=1e-5)
  if not use_bias:
    assert layer.bias is None


def test_effective_weight_has_gain_as_column_norms_and_direction_of_v():
  rng = np.random.default_rng(1)
  v = rng.normal(0.0, 1.0, (6, 3)).astype(np.float32)
  g = np.array([0.5, 2.0, 7.0], np.float32)
  layer = WeightNormLinear(6, 3, rngs=nnx.Rngs(0))
  _set_params(layer, v, g)
  w = np.asarray(layer.weight(), np.float64)
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), g, rtol=1e-6)
  cosine = (w * v).sum(0) / (np.linalg.norm(w, axis=0) * np.linalg.norm(v, axis=0))
  np.testing.assert_allclose(cosine, 1.0, rtol=1e-6)


def test_initial_layer_is_the_linear_layer_built_from_the_same_key():
  # g starts at ||v||, so the initial weight equals v and the function equals nnx.Linear's from the same key.
  x = np.random.default_rng(2).normal(size=(3, 10)).astype(np.float32)
  wn = WeightNormLinear(10, 7, rngs=nnx.Rngs(42))
  linear = nnx.Linear(10, 7, rngs=nnx.Rngs(42))
  np.testing.assert_allclose(wn.direction[...], linear.kernel[...])
  np.testing.assert_allclose(wn.scale[...], np.linalg.norm(np.asarray(linear.kernel[...]), axis=0), rtol=1e-6)
  np.testing.assert_allclose(wn(x), linear(x), rtol=1e-5, atol=1e-6)


def test_constant_scale_init_sets_every_column_norm():
  layer = WeightNormLinear(8, 4, scale_init=0.3, rngs=nnx.Rngs(3))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(layer.weight()), axis=0), 0.3, rtol=1e-6)


def test_output_is_invariant_to_positive_rescaling_of_each_direction_column():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(9, 6)).astype(np.float32)
  layer = WeightNormLinear(6, 5, rngs=nnx.Rngs(4))
  before = np.asarray(layer(x))
  v = np.asarray(layer.direction[...])
  factors = np.array([1e-3, 0.5, 3.0, 40.0, 1e3], np.float32)  # A different factor for every output unit.
  layer.direction[...] = jnp.asarray(v * factors)
  np.testing.assert_allclose(layer(x), before, rtol=1e-5, atol=1e-5)
  # A negative factor reverses the direction, so the invariance is to positive re-scaling only.
  layer.direction[...] = jnp.asarray(-v)
  assert np.abs(np.asarray(layer(x)) - before).max() > 0.1


def test_gradient_with_respect_to_direction_is_orthogonal_to_it():
  # Salimans & Kingma, eq. 4: the norm of v is not seen by the output, so the loss gradient has no component along v.
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  layer = WeightNormLinear(6, 3, rngs=nnx.Rngs(5))
  grads = nnx.jit(nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2)))(layer)  # One compile, not one per operation.
  v = np.asarray(layer.direction[...], np.float64)
  grad_v = np.asarray(grads['direction'][...], np.float64)
  assert np.abs(grad_v).max() > 1e-3  # Not orthogonal because it vanishes.
  cosine = (grad_v * v).sum(0) / (np.linalg.norm(grad_v, axis=0) * np.linalg.norm(v, axis=0))
  np.testing.assert_allclose(cosine, 0.0, atol=1e-5)


def test_computes_in_the_promoted_dtype():
  """bfloat16 input with float32 parameters computes in float32 (exactly the reference on the rounded input), not in
  bfloat16 and then cast; with dtype=bfloat16 the result is bfloat16, close to the reference only to its precision."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 64)), jnp.bfloat16)
  layer = WeightNormLinear(64, 8, rngs=nnx.Rngs(0))
  want = reference_weight_norm(np.asarray(x, np.float32), layer.direction[...], layer.scale[...], layer.bias[...])
  y = layer(x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  bf16 = WeightNormLinear(64, 8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  y16 = bf16(jnp.asarray(x, jnp.float32))
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), want, rtol=3e-2, atol=3e-2)
  assert not np.allclose(np.asarray(y16, np.float32), want, rtol=1e-5, atol=1e-5)  # It did compute in bfloat16.


def test_weight_norm_is_the_design_name_of_the_same_class():
  """`WeightNorm`, the name DESIGN.md gives, is the weight-normalized linear layer: same class, same numbers."""
  assert WeightNorm is WeightNormLinear
  rng = np.random.default_rng(1)
  layer = WeightNorm(5, 3, rngs=nnx.Rngs(0))
  v, g = rng.normal(size=(5, 3)).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
  _set_params(layer, v, g, np.zeros(3, np.float32))
  x = rng.normal(size=(4, 5)).astype(np.float32)
  np.testing.assert_allclose(layer(x), reference_weight_norm(x, v, g, None), rtol=1e-5, atol=1e-6)
  # Each output column's weight vector has the norm g_i, whatever the scale of v.
  np.testing.assert_allclose(np.linalg.norm(np.asarray(layer.weight()), axis=0), g, rtol=1e-5)


@pytest.mark.parametrize(
  'in_features,out_features,match',
  [(0, 3, 'in_features'), (3, -1, 'out_features'), (2.0, 3, 'in_features'), (3, True, 'out_features')],
)
def test_bad_sizes_raise(in_features, out_features, match):
  with pytest.raises(ValueError, match=match):
    WeightNormLinear(in_features, out_features, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('shape', [(), (4,), (2, 3, 4)])
def test_input_with_wrong_last_axis_raises(shape):
  layer = WeightNormLinear(5, 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'in_features=5.*shape'):
    layer(jnp.ones(shape))
