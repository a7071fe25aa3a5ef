"""`layer_norm` against an independent float64 NumPy reference, flax, finite differences, and its error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from layernorm import LayerNorm, layer_norm


def reference_layer_norm(x, scale, bias, axes, eps):
  """Float64 NumPy layer norm: the paper's eq. 3 with the Theano code's eps on the variance."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=axes, keepdims=True)
  var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
  y = (x - mean) / np.sqrt(var + eps)
  shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
  if scale is not None:
    y = y * np.asarray(scale, np.float64).reshape(shape)
  if bias is not None:
    y = y + np.asarray(bias, np.float64).reshape(shape)
  return y


CASES = [
  ((7,), -1),
  ((4, 1000), -1),
  ((3, 5, 8), -1),
  ((3, 5, 8), 1),
  ((3, 5, 8), (1, 2)),
  ((3, 5, 8), (0, 2)),
  ((2, 3, 4, 5), (-1, -3)),
  ((6, 1), -1),  # One feature: output is the bias.
]


@pytest.mark.parametrize('shape,axis', CASES)
@pytest.mark.parametrize('affine', [False, True])
def test_matches_float64_reference(shape, axis, affine):
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, shape).astype(np.float32)
  axes = tuple(sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)))
  fshape = tuple(shape[a] for a in axes)
  scale = rng.normal(1.0, 0.5, fshape).astype(np.float32) if affine else None
  bias = rng.normal(0.0, 0.5, fshape).astype(np.float32) if affine else None
  y = jax.jit(lambda x, s, b: layer_norm(x, s, b, axis=axis))(x, scale, bias)
  assert y.dtype == jnp.float32 and y.shape == shape
  np.testing.assert_allclose(y, reference_layer_norm(x, scale, bias, axes, 1e-5), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize('dtype,atol', [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
def test_low_precision_input_keeps_dtype_and_uses_float32_statistics(dtype, atol):
  rng = np.random.default_rng(1)
  # Offset 30 with std 0.5: float16 statistics computed in float16 would be visibly wrong here.
  x = jnp.asarray(rng.normal(30.0, 0.5, (16, 512)), dtype)
  y = layer_norm(x, jnp.ones(512, dtype), jnp.zeros(512, dtype))
  assert y.dtype == dtype
  expected = reference_layer_norm(np.asarray(x.astype(jnp.float32)), None, None, (1,), 1e-5)
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=atol * 4, rtol=atol)


def test_large_common_offset_is_normalized_accurately():
  # Values around 1e4 with unit spread: a one-pass E[x^2] - E[x]^2 in float32 loses most digits here.
  rng = np.random.default_rng(2)
  x = (1e4 + rng.normal(0.0, 1.0, (8, 1024))).astype(np.float32)
  y = layer_norm(x)
  np.testing.assert_allclose(y, reference_layer_norm(x, None, None, (1,), 1e-5), atol=2e-3)
  np.testing.assert_allclose(np.std(np.asarray(y), axis=1), 1.0, atol=1e-3)


def test_gradients_match_finite_differences():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(0.5, 2.0, (3, 6)), jnp.float32)
  scale = jnp.asarray(rng.normal(1.0, 0.3, 6), jnp.float32)
  bias = jnp.asarray(rng.normal(0.0, 0.3, 6), jnp.float32)
  check_grads(lambda x, s, b: layer_norm(x, s, b), (x, scale, bias), order=1, modes=['rev'], atol=5e-2, rtol=5e-2)
  check_grads(lambda x: layer_norm(x, axis=0), (x,), order=2, modes=['rev'], atol=5e-2, rtol=5e-2)


def test_gradient_matches_autodiff_of_reference_in_float64():
  """The op's gradient equals autodiff of the textbook formula, to float32 round-off."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(5, 33)), jnp.float32)
  scale = jnp.asarray(rng.normal(1.0, 0.3, 33), jnp.float32)
  dy = jnp.asarray(rng.normal(size=(5, 33)), jnp.float32)

  def textbook(x, s):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * s

  got = jax.grad(lambda x, s: jnp.sum(layer_norm(x, s) * dy), argnums=(0, 1))(x, scale)
  want = jax.grad(lambda x, s: jnp.sum(textbook(x, s) * dy), argnums=(0, 1))(x, scale)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_vmap_equals_batched_call():
  x = jax.random.normal(jax.random.key(0), (4, 3, 10))
  np.testing.assert_allclose(jax.vmap(layer_norm)(x), layer_norm(x), rtol=1e-6, atol=1e-6)


def test_equals_flax_layer_norm_with_two_pass_variance():
  x = jax.random.normal(jax.random.key(1), (9, 64)) * 3 + 1
  ours = LayerNorm(64, rngs=nnx.Rngs(0))
  theirs = nnx.LayerNorm(64, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0))
  key_s, key_b = jax.random.split(jax.random.key(2))
  for m in (ours, theirs):
    m.scale[...] = jax.random.normal(key_s, (64,))
    m.bias[...] = jax.random.normal(key_b, (64,))
  np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_module_defaults_are_gain_one_bias_zero():
  m = LayerNorm(5)
  np.testing.assert_array_equal(m.scale[...], np.ones(5))
  np.testing.assert_array_equal(m.bias[...], np.zeros(5))
  assert LayerNorm(5, use_scale=False, use_bias=False).scale is None


@pytest.mark.parametrize(
  'call,error,match',
  [
    (lambda: layer_norm(jnp.ones((2, 3), jnp.int32)), TypeError, 'floating-point input'),
    (lambda: layer_norm(jnp.ones((2, 3)), axis=2), ValueError, r'axis 2 is out of range .* \[-2, 1\]'),
    (lambda: layer_norm(jnp.ones((2, 3)), axis=(1, -1)), ValueError, 'same axis twice'),
    (lambda: layer_norm(jnp.ones((2, 3)), jnp.ones(2)), ValueError, r'scale has shape \(2,\); expected \(3,\)'),
    (lambda: layer_norm(jnp.ones((2, 3)), None, jnp.ones((1, 3))), ValueError, r'bias has shape \(1, 3\)'),
    (lambda: LayerNorm(0), ValueError, 'positive int'),
    (lambda: LayerNorm(4)(jnp.ones((2, 3))), ValueError, r'scale has shape \(4,\); expected \(3,\)'),
  ],
)
def test_bad_input_says_what_was_expected(call, error, match):
  with pytest.raises(error, match=match):
    call()
