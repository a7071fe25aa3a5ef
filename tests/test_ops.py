"""`layer_norm` against an independent float64 NumPy reference, flax, finite differences, and its error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from autodiff_checks import jitted_vjp
from flax import nnx
from jax.test_util import check_grads

from layernorm import LayerNorm, layer_norm, native


# Every test here runs twice: through the native CPU kernel (float32/float64 input over trailing axes) and through XLA
# alone, the path of every other case and of GPUs. The switch is read when a call is traced: every jitted function
# in this file is a fresh closure, so none is reused from a trace under the other setting.
@pytest.fixture(autouse=True, params=['native', 'xla'])
def implementation(request, monkeypatch):
  monkeypatch.setenv(native.ENV_SWITCH, '1' if request.param == 'native' else '0')
  return request.param


def test_both_paths_are_exercised(implementation):
  text = jax.jit(lambda x: layer_norm(x)).lower(jnp.ones((3, 5))).compile().as_text()
  assert ('layernorm_forward_f32' in text) == (implementation == 'native')


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
  y = jax.jit(lambda x: layer_norm(x))(x)
  np.testing.assert_allclose(y, reference_layer_norm(x, None, None, (1,), 1e-5), atol=2e-3)
  np.testing.assert_allclose(np.std(np.asarray(y), axis=1), 1.0, atol=1e-3)


def test_gradients_match_finite_differences():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(0.5, 2.0, (3, 6)), jnp.float32)
  scale = jnp.asarray(rng.normal(1.0, 0.3, 6), jnp.float32)
  bias = jnp.asarray(rng.normal(0.0, 0.3, 6), jnp.float32)
  # Jitted functions: each evaluation and derivative is one compiled program, not one compile per operation.
  f = jax.jit(lambda x, s, b: layer_norm(x, s, b))
  check_grads(f, (x, scale, bias), order=1, modes=['rev'], atol=5e-2, rtol=5e-2)
  check_grads(jax.jit(lambda x: layer_norm(x, axis=0)), (x,), order=2, modes=['rev'], atol=5e-2, rtol=5e-2)


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

  got = jax.jit(jax.grad(lambda x, s: jnp.sum(layer_norm(x, s) * dy), argnums=(0, 1)))(x, scale)
  want = jax.jit(jax.grad(lambda x, s: jnp.sum(textbook(x, s) * dy), argnums=(0, 1)))(x, scale)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_vmap_equals_batched_call():
  x = jax.random.normal(jax.random.key(0), (4, 3, 10))
  np.testing.assert_allclose(
    jax.jit(lambda x: jax.vmap(layer_norm)(x))(x), jax.jit(lambda x: layer_norm(x))(x), rtol=1e-6, atol=1e-6
  )


def test_equals_flax_layer_norm_with_two_pass_variance():
  x = jax.random.normal(jax.random.key(1), (9, 64)) * 3 + 1
  ours = LayerNorm(64, rngs=nnx.Rngs(0))
  theirs = nnx.LayerNorm(64, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0))
  key_s, key_b = jax.random.split(jax.random.key(2))
  for m in (ours, theirs):
    m.scale[...] = jax.random.normal(key_s, (64,))
    m.bias[...] = jax.random.normal(key_b, (64,))
  apply = lambda m: nnx.jit(lambda m, x: m(x))(m, x)  # One compile per module, not one per operation.
  np.testing.assert_allclose(apply(ours), apply(theirs), rtol=1e-5, atol=1e-5)


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
    (lambda: jax.jit(lambda e: layer_norm(jnp.ones((2, 3)), eps=e))(1e-5), TypeError, 'eps must be a Python number'),
    (lambda: layer_norm(jnp.ones((2, 3)), jnp.ones(2)), ValueError, r'scale has shape \(2,\); expected \(3,\)'),
    (lambda: layer_norm(jnp.ones((2, 3)), None, jnp.ones((1, 3))), ValueError, r'bias has shape \(1, 3\)'),
    (lambda: LayerNorm(0), ValueError, 'positive int'),
    (lambda: LayerNorm(4)(jnp.ones((2, 3))), ValueError, r'scale has shape \(4,\); expected \(3,\)'),
  ],
)
def test_bad_input_says_what_was_expected(call, error, match):
  with pytest.raises(error, match=match):
    call()


# Gradients. The reference is the textbook formula differentiated by JAX's autodiff in float64 (inside
# `jax.enable_x64`), so it shares no code with the op's hand-written derivative rule.


def reference_jnp(x, scale, bias, axes, eps=1e-5):
  """Float64 jnp layer norm for autodiff; call inside `jax.enable_x64(True)`."""
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.mean((x - mean) ** 2, axis=axes, keepdims=True)
  y = (x - mean) / jnp.sqrt(var + eps)
  shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
  if scale is not None:
    y = y * scale.reshape(shape)
  if bias is not None:
    y = y + bias.reshape(shape)
  return y


def _axes(shape, axis):
  return tuple(sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)))


def _problem(shape, axis, affine, dtype, seed=0, offset=1.0):
  """Random x, scale, bias (None where `affine` leaves them out) and cotangent dy, all of `dtype`."""
  rng = np.random.default_rng(seed)
  fshape = tuple(shape[a] for a in _axes(shape, axis))
  x = jnp.asarray(rng.normal(offset, 2.0, shape), dtype)
  dy = jnp.asarray(rng.normal(0.0, 1.0, shape), dtype)
  scale = jnp.asarray(rng.normal(1.0, 0.5, fshape), dtype) if 'scale' in affine else None
  bias = jnp.asarray(rng.normal(0.0, 0.5, fshape), dtype) if 'bias' in affine else None
  return x, scale, bias, dy


def _f64(a):
  return None if a is None else np.asarray(jnp.asarray(a, jnp.float32), np.float64)


def _assert_close(got, want, tol):
  """Elementwise check with an absolute floor proportional to the largest reference entry."""
  got = np.asarray(jnp.asarray(got, jnp.float32), np.float64)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1e-3))


GRAD_CASES = [
  ((4, 1000), -1),
  ((3, 5, 8), (0, 2)),  # Non-adjacent axes.
  ((2, 3, 4, 5), (-1, -3)),
]
AFFINE = [(), ('scale',), ('scale', 'bias')]


@pytest.mark.parametrize('shape,axis', GRAD_CASES)
@pytest.mark.parametrize('affine', AFFINE, ids=lambda a: '+'.join(a) or 'plain')
@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 1e-4), (jnp.bfloat16, 3e-2)], ids=['float32', 'bfloat16'])
def test_vjp_matches_autodiff_of_float64_reference(shape, axis, affine, dtype, tol):
  x, scale, bias, dy = _problem(shape, axis, affine, dtype)
  axes = _axes(shape, axis)
  params = [p for p in (scale, bias) if p is not None]

  def ours(x, *params):
    it = iter(params)
    return layer_norm(x, next(it) if scale is not None else None, next(it) if bias is not None else None, axis=axis)

  y, got = jitted_vjp(ours, (x, *params), dy)
  assert y.dtype == dtype and all(g.dtype == dtype for g in got)
  with jax.enable_x64(True):

    def ref(x, *params):
      it = iter(params)
      return reference_jnp(x, next(it) if scale is not None else None, next(it) if bias is not None else None, axes)

    want_y, want = jitted_vjp(ref, tuple(map(_f64, (x, *params))), _f64(dy))
    want = [np.asarray(w) for w in want]
  _assert_close(y, np.asarray(want_y), tol)
  for g, w in zip(got, want, strict=True):
    assert g.shape == w.shape
    _assert_close(g, w, tol)


def test_gradient_is_accurate_for_a_large_common_offset():
  # Offset 1e4 with unit spread: a derivative that recomputed statistics with a one-pass variance would be off.
  x, scale, bias, dy = _problem((8, 256), -1, ('scale', 'bias'), jnp.float32, seed=5, offset=1e4)
  x = jnp.asarray(1e4 + (np.asarray(x) - 1e4) / 2.0, jnp.float32)
  _, got = jitted_vjp(layer_norm, (x, scale, bias), dy)
  with jax.enable_x64(True):
    ref = lambda *a: reference_jnp(*a, (1,))
    _, want = jitted_vjp(ref, tuple(map(_f64, (x, scale, bias))), _f64(dy))
  for g, w in zip(got, want, strict=True):
    _assert_close(g, np.asarray(w), 2e-3)


@pytest.mark.parametrize('shape,axis', [((4, 1000), -1), ((2, 3, 4, 5), (-1, -3))])
@pytest.mark.parametrize('affine', [(), ('scale', 'bias')], ids=['plain', 'scale+bias'])
def test_jvp_matches_float64_reference(shape, axis, affine):
  x, scale, bias, dx = _problem(shape, axis, affine, jnp.float32, seed=6)
  rng = np.random.default_rng(7)
  primals = [p for p in (x, scale, bias) if p is not None]
  tangents = [dx] + [jnp.asarray(rng.normal(size=p.shape), jnp.float32) for p in primals[1:]]
  axes = _axes(shape, axis)

  def ours(x, *params):
    return layer_norm(x, *params, axis=axis)

  y, dy = jax.jit(lambda p, t: jax.jvp(ours, p, t))(tuple(primals), tuple(tangents))
  with jax.enable_x64(True):
    ref = lambda x, *p: reference_jnp(x, *(p or (None, None)), axes)
    want_y, want_dy = jax.jit(lambda p, t: jax.jvp(ref, p, t))(tuple(map(_f64, primals)), tuple(map(_f64, tangents)))
  _assert_close(y, np.asarray(want_y), 1e-4)
  _assert_close(dy, np.asarray(want_dy), 1e-4)


def _loss(norm):
  """A scalar loss with non-zero curvature in y, so Hessians exercise the derivative rule's own derivatives."""
  w = np.linspace(-1.0, 1.0, 15).reshape(3, 5)

  def loss(x, scale, bias):
    y = norm(x, scale, bias)
    return jnp.sum(jnp.sin(y) * w)

  return loss


def test_hessian_matches_float64_reference():
  x, scale, bias, _ = _problem((3, 5), -1, ('scale', 'bias'), jnp.float32, seed=8)
  got = jax.jit(jax.hessian(_loss(layer_norm), argnums=(0, 1, 2)))(x, scale, bias)
  with jax.enable_x64(True):
    reference_hessian = jax.jit(jax.hessian(_loss(lambda *a: reference_jnp(*a, (1,))), argnums=(0, 1, 2)))
    want = reference_hessian(*map(_f64, (x, scale, bias)))
  for got_row, want_row in zip(got, want, strict=True):
    for g, w in zip(got_row, want_row, strict=True):
      _assert_close(g, np.asarray(w), 2e-4)


def test_second_order_reverse_mode_matches_float64_reference():
  """grad of a function of the gradient (reverse over reverse), as in gradient penalties and meta-learning."""
  x, scale, bias, _ = _problem((3, 5), -1, ('scale', 'bias'), jnp.float32, seed=9)

  def penalty(loss):
    return lambda x, s, b: jnp.sum(jax.grad(loss, argnums=(0, 1))(x, s, b)[0] ** 2)

  got = jax.jit(jax.grad(penalty(_loss(layer_norm)), argnums=(0, 1, 2)))(x, scale, bias)
  with jax.enable_x64(True):
    ref_loss = _loss(lambda *a: reference_jnp(*a, (1,)))
    want = jax.jit(jax.grad(penalty(ref_loss), argnums=(0, 1, 2)))(*map(_f64, (x, scale, bias)))
  for g, w in zip(got, want, strict=True):
    _assert_close(g, np.asarray(w), 2e-4)


def test_grad_under_vmap_equals_per_example_reference():
  x, scale, bias, _ = _problem((6, 3, 5), -1, ('scale', 'bias'), jnp.float32, seed=10)
  per_example = jax.jit(jax.vmap(jax.grad(_loss(layer_norm), argnums=(0, 1, 2)), in_axes=(0, None, None)))
  got = per_example(x, scale, bias)
  with jax.enable_x64(True):
    ref_grad = jax.grad(_loss(lambda *a: reference_jnp(*a, (1,))), argnums=(0, 1, 2))
    want = [jax.jit(jax.vmap(ref_grad, in_axes=(0, None, None)))(*map(_f64, (x, scale, bias)))]
  for g, w in zip(got, want[0], strict=True):
    assert g.shape == w.shape
    _assert_close(g, np.asarray(w), 1e-4)


def test_integer_parameters_are_constants_under_grad():
  x = jnp.asarray(np.random.default_rng(12).normal(size=(2, 5)), jnp.float32)
  got = jax.jit(jax.grad(lambda x: jnp.sum(layer_norm(x, jnp.arange(5), jnp.ones(5, jnp.int32)) ** 3)))(x)
  want = jax.jit(jax.grad(lambda x: jnp.sum(layer_norm(x, jnp.arange(5.0), jnp.ones(5)) ** 3)))(x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_jacfwd_equals_jacrev():
  x, scale, bias, _ = _problem((2, 6), (0, 1), ('scale', 'bias'), jnp.float32, seed=11)

  def f(x, s, b):
    return layer_norm(x, s, b, axis=(0, 1))

  fwd = jax.jit(jax.jacfwd(f, argnums=(0, 1, 2)))(x, scale, bias)
  rev = jax.jit(jax.jacrev(f, argnums=(0, 1, 2)))(x, scale, bias)
  for a, b in zip(fwd, rev, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
