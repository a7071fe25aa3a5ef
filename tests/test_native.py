"""The native CPU kernel behind `layer_norm`: against a float64 reference and the XLA path, under vmap and
derivatives, and its build, cache, switch and fallback. (tests/test_ops.py runs the op's whole contract on both paths.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layernorm import layer_norm, native, native_path


def reference(x, scale=None, bias=None, eps=1e-5):
  x = np.asarray(x, np.float64)
  mean = x.mean(-1, keepdims=True)
  y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
  if scale is not None:
    y = y * np.asarray(scale, np.float64)
  if bias is not None:
    y = y + np.asarray(bias, np.float64)
  return y


def compiled_text(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


@pytest.fixture(autouse=True)
def kernel_on(monkeypatch):
  monkeypatch.setenv(native.ENV_SWITCH, '1')


def test_kernel_builds_and_runs_on_this_machine():
  # CI and the development machines have a C++ compiler: if this fails, layer_norm runs 1.5-4x slower.
  assert native.available(np.float32) and native.available(np.float64)
  x = jnp.ones((4, 8))
  assert 'layernorm_forward_f32' in compiled_text(layer_norm, x)
  assert 'layernorm_forward_f32' not in compiled_text(lambda x: layer_norm(x, impl='xla'), x)


# Feature counts around the kernel's vector width (16 floats) and its 4-vector unroll (64), row counts that are not a
# multiple of its 4-row blocks, rows above and below its 2 KiB blocking threshold, and a rank-3 input.
@pytest.mark.parametrize(
  'shape', [(1, 1), (3, 5), (7, 16), (5, 17), (6, 63), (9, 64), (2, 130), (11, 400), (3, 1000), (2, 3, 129)]
)
@pytest.mark.parametrize('affine', [False, True])
def test_matches_float64_reference(shape, affine):
  rng = np.random.default_rng(sum(shape))
  x = rng.normal(3.0, 2.0, shape).astype(np.float32)
  scale, bias = (rng.normal(size=shape[-1:]).astype(np.float32) for _ in range(2)) if affine else (None, None)
  y = layer_norm(x, scale, bias)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, reference(x, scale, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shape', [(3, 5), (7, 16), (6, 63), (11, 400), (3, 1000)])
def test_rms_forward_kernel_returns_zero_mean_and_the_root_mean_square(shape):
  assert native.available(np.float32)  # Builds and registers the kernels when this test runs first.
  x = np.random.default_rng(sum(shape)).normal(3.0, 2.0, shape).astype(np.float32)
  scale, bias = np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)
  y, mean, rstd = native.forward(x, scale, bias, 1e-6, False)
  x64 = x.astype(np.float64)
  want_rstd = 1 / np.sqrt((x64 * x64).mean(-1) + 1e-6)
  np.testing.assert_array_equal(mean, 0.0)
  np.testing.assert_allclose(rstd, want_rstd, rtol=1e-6)
  np.testing.assert_allclose(y, x64 * want_rstd[:, None], rtol=1e-5, atol=1e-6)


def test_float64_input_is_computed_in_float64():
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x = rng.normal(5.0, 0.1, (6, 333))
    assert 'layernorm_forward_f64' in compiled_text(layer_norm, x)
    np.testing.assert_allclose(layer_norm(x), reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('offset', [1e2, 1e4])
def test_large_common_offset_is_as_accurate_as_xla(offset):
  rng = np.random.default_rng(1)
  x = (offset + rng.normal(size=(64, 768))).astype(np.float32)
  want = reference(x)
  native_error = np.abs(np.asarray(layer_norm(x)) - want).max()
  xla_error = np.abs(np.asarray(layer_norm(x, impl='xla')) - want).max()
  assert native_error <= 1.5 * xla_error, (native_error, xla_error)


def test_rows_whose_first_features_differ_take_the_exact_variance():
  # The one-pass variance is shifted by the mean of a row's first 16 features; here that shift is 50 standard
  # deviations away, where the one-pass form would lose about 2500x more precision than the kernel's second pass.
  rng = np.random.default_rng(2)
  x = np.concatenate([np.full((5, 16), 50.0), rng.normal(size=(5, 300))], axis=1).astype(np.float32)
  np.testing.assert_allclose(layer_norm(x), reference(x), rtol=1e-6, atol=1e-6)


def test_constant_rows_give_the_bias():
  x = np.full((3, 40), 7.0, np.float32)
  bias = np.arange(40, dtype=np.float32)
  np.testing.assert_array_equal(layer_norm(x, None, bias), np.broadcast_to(bias, x.shape))


def test_a_non_finite_value_spoils_only_its_own_row_as_on_the_xla_path():
  x = np.random.default_rng(7).normal(size=(5, 40)).astype(np.float32)
  x[1, 3], x[3, 30] = np.inf, np.nan
  got, want = np.asarray(layer_norm(x)), np.asarray(layer_norm(x, impl='xla'))
  np.testing.assert_array_equal(np.isnan(got).all(axis=1), [False, True, False, True, False])
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  np.testing.assert_allclose(got[[0, 2, 4]], reference(x[[0, 2, 4]]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('in_axes', [(0, 0, 0), (0, None, None), (None, 0, 0), (1, 0, None)])
def test_vmap_with_batched_parameters_equals_a_loop(in_axes):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 7, 48)).astype(np.float32)
  scale = rng.normal(size=(5, 48)).astype(np.float32)
  bias = rng.normal(size=(5, 48)).astype(np.float32)
  args = [a if axis is not None else a[0] for a, axis in zip((x, scale, bias), in_axes, strict=True)]
  if in_axes[0] == 1:
    args[0] = np.swapaxes(x, 0, 1)
  got = jax.vmap(layer_norm, in_axes=in_axes, out_axes=0)(*args)

  def example(i):
    return [a if axis is None else np.take(a, i, axis=axis) for a, axis in zip(args, in_axes, strict=True)]

  want = np.stack([layer_norm(*example(i), impl='xla') for i in range(5)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _loss(impl):
  return lambda x, s, b: jnp.sum(jnp.sin(layer_norm(x, s, b, impl=impl)) * jnp.arange(x.shape[-1]))


def test_gradients_equal_the_xla_path():
  rng = np.random.default_rng(4)
  x, dy = (rng.normal(1.0, 2.0, (33, 70)).astype(np.float32) for _ in range(2))
  scale, bias = rng.normal(size=70).astype(np.float32), rng.normal(size=70).astype(np.float32)
  for got, want in zip(
    jax.grad(_loss('auto'), (0, 1, 2))(x, scale, bias), jax.grad(_loss('xla'), (0, 1, 2))(x, scale, bias), strict=True
  ):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Forward mode goes through the kernel's own rule too.
  got = jax.jvp(lambda x: layer_norm(x, scale, bias), (x,), (dy,))
  want = jax.jvp(lambda x: layer_norm(x, scale, bias, impl='xla'), (x,), (dy,))
  np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)


def test_second_derivatives_equal_the_xla_path():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 9)).astype(np.float32)
  scale, bias = rng.normal(size=9).astype(np.float32), rng.normal(size=9).astype(np.float32)
  # Jitted: one compile per derivative program, not one per operation of the differentiated rules.
  hessian = lambda impl: jax.jit(jax.hessian(lambda x: _loss(impl)(x, scale, bias)))(x)
  np.testing.assert_allclose(hessian('auto'), hessian('xla'), rtol=1e-3, atol=1e-4)
  # Differentiating a derivative with respect to the parameters reaches the rule's statistics' tangents.
  grad_scale = lambda impl: jax.jit(jax.grad(lambda s: jnp.sum(jax.grad(_loss(impl))(x, s, bias) ** 2)))(scale)
  np.testing.assert_allclose(grad_scale('auto'), grad_scale('xla'), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('center', [True, False], ids=['layer_norm', 'rms_norm'])
@pytest.mark.parametrize('groups,rows,features', [(1, 1, 5), (1, 200, 33), (3, 70, 64), (2, 5, 1000)])
def test_backward_kernel_equals_the_transpose_of_the_tangent(groups, rows, features, center):
  # 200 and 3 x 70 rows cross the kernel's 64-row flush of its column sums; 33 features leave a scalar tail.
  rng = np.random.default_rng(groups * rows)
  x = rng.normal(2.0, 3.0, (groups, rows, features)).astype(np.float32)
  if center:
    mean, rstd = x.mean(-1), 1 / np.sqrt(x.var(-1) + 1e-5)
  else:  # RMS: the forward kernel's statistics are mean 0 and rstd = 1 / sqrt(mean(x^2) + eps).
    mean, rstd = np.zeros(x.shape[:-1], np.float32), 1 / np.sqrt((x * x).mean(-1) + 1e-5)
  mean, rstd = mean.astype(np.float32), rstd.astype(np.float32)
  scale = rng.normal(size=(groups, features)).astype(np.float32)
  ct = rng.normal(size=x.shape).astype(np.float32)
  got = native.backward(x, mean, rstd, scale, ct, center)
  with jax.enable_x64(True):
    args = (np.asarray(a, np.float64) for a in (x, mean, rstd, scale, ct))
    want = native_path.backward_reference(*args, center=center)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * np.abs(w).max())


def test_grad_of_vmap_with_batched_parameters_equals_the_xla_path():
  # vmap first: the tangent primitive's batching rule folds the batch into its parameter groups.
  rng = np.random.default_rng(6)
  x = rng.normal(size=(4, 6, 40)).astype(np.float32)
  scale, bias = rng.normal(size=(4, 40)).astype(np.float32), rng.normal(size=(4, 40)).astype(np.float32)

  def loss(impl):
    ln = jax.vmap(lambda x, s, b: layer_norm(x, s, b, impl=impl))
    return lambda x, s, b: jnp.sum(jnp.sin(ln(x, s, b)) * jnp.arange(40))

  for got, want in zip(
    jax.grad(loss('auto'), (0, 1, 2))(x, scale, bias), jax.grad(loss('xla'), (0, 1, 2))(x, scale, bias), strict=True
  ):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_grad_runs_both_kernels_and_forward_mode_runs_none_backward():
  x, s = jnp.ones((4, 8)), jnp.ones(8)
  grad_text = compiled_text(jax.grad(lambda x, s: jnp.sum(layer_norm(x, s) ** 2), (0, 1)), x, s)
  assert 'layernorm_forward_f32' in grad_text and 'layernorm_backward_f32' in grad_text
  jvp_text = compiled_text(lambda x, t: jax.jvp(lambda x: layer_norm(x, s), (x,), (t,)), x, x)
  assert 'layernorm_forward_f32' in jvp_text and 'layernorm_backward_f32' not in jvp_text


def test_programs_lowered_for_a_gpu_keep_the_xla_path():
  # The kernels are registered for CPU only: a program exported or compiled for a GPU must not name them.
  grad = jax.jit(jax.grad(lambda x, s: jnp.sum(layer_norm(x, s) ** 2), (0, 1)))
  args = (jnp.ones((4, 8)), jnp.ones(8))
  assert 'layernorm_' not in grad.trace(*args).lower(lowering_platforms=('cuda',)).as_text()
  assert 'layernorm_backward_f32' in grad.trace(*args).lower(lowering_platforms=('cpu', 'cuda')).as_text()


def test_switch_turns_the_kernel_off_and_rejects_other_values(monkeypatch):
  # Read when a call is traced, so a fresh function: jax.jit(layer_norm) traced earlier would be reused as it was.
  monkeypatch.setenv(native.ENV_SWITCH, '0')
  assert 'layernorm_forward' not in compiled_text(lambda x: layer_norm(x), jnp.ones((4, 8)))
  monkeypatch.setenv(native.ENV_SWITCH, 'yes')
  with pytest.raises(ValueError, match='LAYERNORM_NATIVE must be 0'):
    layer_norm(jnp.ones((4, 8)))


def test_unknown_impl_is_an_error():
  with pytest.raises(ValueError, match="impl must be one of \\('auto', 'xla'\\)"):
    layer_norm(jnp.ones((4, 8)), impl='pallas')


def test_other_dtypes_and_axes_use_xla():
  x = jnp.ones((4, 8, 6))
  assert 'layernorm_forward' not in compiled_text(layer_norm, x.astype(jnp.bfloat16))
  assert 'layernorm_forward' not in compiled_text(lambda x: layer_norm(x, axis=1), x)
  assert 'layernorm_forward_f32' in compiled_text(lambda x: layer_norm(x, axis=(1, 2)), x)


def tiny_source(tmp_path) -> tuple:
  """A one-function C++ file: the cache rules under test are the same for any source, and building the real kernels
  (-O3, several files) would cost about 10 s a build; they are built, and tested, everywhere else in this file."""
  source = tmp_path / 'src' / 'probe.cc'
  source.parent.mkdir()
  source.write_text('extern "C" int LayerNormProbe() { return 7; }\n')
  return (source,)


def test_build_is_cached_and_a_failing_compiler_is_reported(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  compiler, sources = native._compiler(), tiny_source(tmp_path)
  path = native.build(compiler, sources, stem='probe')
  assert path.parent == tmp_path / 'layernorm' and path.exists() and path.name.startswith('probe-')
  stamp = path.stat().st_mtime_ns
  assert native.build(compiler, sources, stem='probe') == path and path.stat().st_mtime_ns == stamp
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # No temporary file left behind.
  with pytest.raises(RuntimeError, match='failed'):
    native.build('false', sources, stem='probe')  # A "compiler" that exits 1.
  assert [p.name for p in path.parent.iterdir()] == [path.name]
  sources[0].write_text(sources[0].read_text() + '// edited\n')  # Another source: another library, not the stale one.
  assert native.build(compiler, sources, stem='probe') != path


def test_a_damaged_cached_library_is_built_again(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  compiler, sources = native._compiler(), tiny_source(tmp_path)
  path = native.library_path(compiler, sources, stem='probe')
  path.parent.mkdir(parents=True)
  path.write_bytes(b'not a shared library')
  library = native.load_library(compiler, sources, stem='probe')
  assert library.LayerNormProbe() == 7
  assert path.read_bytes()[:4] == b'\x7fELF'


def test_without_a_compiler_layer_norm_warns_and_uses_xla(monkeypatch):
  monkeypatch.setattr(native, '_compiler', lambda: None)
  with pytest.warns(RuntimeWarning, match='no C\\+\\+ compiler found.*LAYERNORM_NATIVE=0'):
    assert native._load.__wrapped__() is False
