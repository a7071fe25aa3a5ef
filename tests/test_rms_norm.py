"""`rms_norm` (Zhang & Sennrich 2019) against a float64 reference, on the native kernels and on XLA alone: forward,
reverse and forward mode, Hessian, vmap, and `RMSNorm` against flax's `nnx.RMSNorm`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from autodiff_checks import jitted_vjp
from flax import nnx

from layernorm import RMSNorm, native, rms_norm


# As in tests/test_ops.py: every test runs through the native kernels and through XLA; the switch is read at trace
# time and every jitted function here is a fresh closure.
@pytest.fixture(autouse=True, params=['native', 'xla'])
def implementation(request, monkeypatch):
  monkeypatch.setenv(native.ENV_SWITCH, '1' if request.param == 'native' else '0')
  return request.param


def test_both_paths_are_exercised(implementation):
  fwd = jax.jit(lambda x: rms_norm(x)).lower(jnp.ones((3, 5))).compile().as_text()
  bwd = jax.jit(jax.grad(lambda x: jnp.sum(rms_norm(x) ** 3))).lower(jnp.ones((3, 5))).compile().as_text()
  assert ('layernorm_forward_f32' in fwd) == (implementation == 'native')
  assert ('layernorm_backward_f32' in bwd) == (implementation == 'native')


def reference(x, scale, axes, eps=1e-6):
  """Float64 jnp RMS norm, differentiated by autodiff; call inside `jax.enable_x64(True)`."""
  y = x / jnp.sqrt(jnp.mean(x * x, axis=axes, keepdims=True) + eps)
  if scale is not None:
    y = y * scale.reshape([x.shape[a] if a in axes else 1 for a in range(x.ndim)])
  return y


def _axes(shape, axis):
  return tuple(sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)))


def _problem(shape, axis, seed=0, offset=1.0):
  rng = np.random.default_rng(seed)
  fshape = tuple(shape[a] for a in _axes(shape, axis))
  x = jnp.asarray(rng.normal(offset, 2.0, shape), jnp.float32)
  dy = jnp.asarray(rng.normal(0.0, 1.0, shape), jnp.float32)
  scale = jnp.asarray(rng.normal(1.0, 0.5, fshape), jnp.float32)
  return x, scale, dy


def _f64(a):
  return np.asarray(a, np.float64)


def _assert_close(got, want, tol):
  want = np.asarray(want)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol * max(np.abs(want).max(), 1e-3))


# Feature counts around the kernel's vector width and unroll, rows that are not a multiple of its 4-row blocks, rows
# past its blocking threshold, and non-trailing axes (the XLA path on both settings).
CASES = [((3, 5), -1), ((5, 17), -1), ((9, 64), -1), ((11, 400), -1), ((3, 1000), -1), ((2, 3, 129), (-2, -1))]
CASES += [((3, 5, 8), (0, 2))]


@pytest.mark.parametrize('shape,axis', CASES)
@pytest.mark.parametrize('use_scale', [False, True])
def test_vjp_matches_autodiff_of_float64_reference(shape, axis, use_scale):
  x, scale, dy = _problem(shape, axis, seed=sum(shape))
  scale = scale if use_scale else None
  axes = _axes(shape, axis)
  args = (x,) if scale is None else (x, scale)
  y, got = jitted_vjp(lambda *a: rms_norm(*a, axis=axis), args, dy)
  with jax.enable_x64(True):
    ref = lambda *a: reference(a[0], a[1] if use_scale else None, axes)
    want_y, want = jitted_vjp(ref, tuple(map(_f64, args)), _f64(dy))
  assert y.dtype == jnp.float32
  _assert_close(y, want_y, 1e-5)
  for g, w in zip(got, want, strict=True):
    _assert_close(g, w, 1e-4)


def test_low_precision_input_keeps_its_dtype_with_float32_statistics():
  x, scale, _ = _problem((6, 256), -1, seed=3)
  y = rms_norm(x.astype(jnp.bfloat16), scale)  # Eager: a jitted program may keep bfloat16 steps in float32.
  assert y.dtype == jnp.bfloat16
  with jax.enable_x64(True):
    want = jax.jit(reference, static_argnums=2)(_f64(x.astype(jnp.bfloat16).astype(jnp.float32)), _f64(scale), (1,))
  _assert_close(y.astype(jnp.float32), want, 1e-2)


def test_float64_input_is_computed_in_float64():
  with jax.enable_x64(True):
    x = np.random.default_rng(4).normal(5.0, 0.1, (6, 333))
    got, want = jax.jit(lambda x: rms_norm(x))(x), jax.jit(lambda x: reference(x, None, (1,)))(x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('shape,axis', [((4, 1000), -1), ((2, 3, 4, 5), (-1, -3))])
def test_jvp_matches_float64_reference(shape, axis):
  x, scale, dx = _problem(shape, axis, seed=6)
  dscale = jnp.asarray(np.random.default_rng(7).normal(size=scale.shape), jnp.float32)
  y, dy = jax.jit(lambda p, t: jax.jvp(lambda *a: rms_norm(*a, axis=axis), p, t))((x, scale), (dx, dscale))
  with jax.enable_x64(True):
    want_y, want_dy = jax.jit(lambda p, t: jax.jvp(lambda x, s: reference(x, s, _axes(shape, axis)), p, t))(
      (_f64(x), _f64(scale)), (_f64(dx), _f64(dscale))
    )
  _assert_close(y, want_y, 1e-4)
  _assert_close(dy, want_dy, 1e-4)


def test_hessian_and_grad_of_grad_match_float64_reference():
  x, scale, _ = _problem((3, 5), -1, seed=8)
  w = np.linspace(-1.0, 1.0, 15).reshape(3, 5)
  loss = lambda norm: lambda x, s: jnp.sum(jnp.sin(norm(x, s)) * w)
  penalty = lambda f: lambda x, s: jnp.sum(jax.grad(f, argnums=(0, 1))(x, s)[0] ** 2)
  got_h = jax.jit(jax.hessian(loss(rms_norm), argnums=(0, 1)))(x, scale)
  got_p = jax.jit(jax.grad(penalty(loss(rms_norm)), argnums=(0, 1)))(x, scale)
  with jax.enable_x64(True):
    ref = loss(lambda x, s: reference(x, s, (1,)))
    want_h = jax.jit(jax.hessian(ref, argnums=(0, 1)))(_f64(x), _f64(scale))
    want_p = jax.jit(jax.grad(penalty(ref), argnums=(0, 1)))(_f64(x), _f64(scale))
  for got_row, want_row in zip(got_h, want_h, strict=True):
    for g, w_ in zip(got_row, want_row, strict=True):
      _assert_close(g, w_, 2e-4)
  for g, w_ in zip(got_p, want_p, strict=True):
    _assert_close(g, w_, 2e-4)


def test_vmap_over_batched_scales_equals_separate_calls():
  x, _, dy = _problem((3, 7, 40), -1, seed=9)
  scales = jnp.asarray(np.random.default_rng(10).normal(1.0, 0.5, (3, 40)), jnp.float32)
  f = lambda x, s: jax.vjp(rms_norm, x, s)[1](dy[0])
  got = jax.jit(jax.vmap(f))(x, scales)
  f_alone = jax.jit(f)  # One compile for the three separate calls, not one per operation.
  for i in range(3):
    want = f_alone(x[i], scales[i])
    for g, w in zip(got, want, strict=True):
      np.testing.assert_allclose(g[i], w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  'kwargs', [{}, dict(epsilon=1e-3), dict(reduction_axes=(-2, -1), feature_axes=-1), dict(dtype=jnp.bfloat16)]
)
def test_module_equals_flax_rms_norm_with_its_defaults(kwargs):
  x = jax.random.normal(jax.random.key(0), (4, 3, 24)) * 2 + 1
  theirs = nnx.RMSNorm(24, rngs=nnx.Rngs(0), **kwargs)
  ours = RMSNorm(24, rngs=nnx.Rngs(0), **kwargs)
  for m in (theirs, ours):
    m.scale[...] = jax.random.normal(jax.random.key(1), (24,))
  # Jitted: one compile per module, not one per operation.
  y_ours, y_theirs = (nnx.jit(lambda m, x: m(x))(m, x) for m in (ours, theirs))
  assert ours.epsilon == theirs.epsilon and y_ours.dtype == y_theirs.dtype
  tol = 1e-2 if 'dtype' in kwargs else 1e-5
  np.testing.assert_allclose(np.asarray(y_ours, np.float32), np.asarray(y_theirs, np.float32), rtol=tol, atol=tol)
  grad = lambda m: nnx.jit(nnx.grad(lambda m: jnp.sum(jnp.sin(m(x).astype(jnp.float32)))))(m)
  np.testing.assert_allclose(grad(ours).scale[...], grad(theirs).scale[...], rtol=10 * tol, atol=10 * tol)
  assert ours.bias is None and set(nnx.state(ours).keys()) == {'scale'}
