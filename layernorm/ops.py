"""The pure layer-normalization op (Ba, Kiros & Hinton 2016, eq. 3-4 and appendix eq. 15-16).

`layer_norm` normalizes each example over its feature axes with the biased (divide-by-H) mean and variance,
adds `eps` to the variance as the authors' Theano code does, and applies an optional per-feature gain and bias:

    y = (x - mean) / sqrt(var + eps) * scale + bias

Statistics are computed in float32 (float64 for float64 input) whatever the input's precision; the output has the
input's dtype. The variance is the two-pass form mean((x - mean)^2), which stays accurate when |mean| >> std.

The derivative is hand-written as a `jax.custom_jvp` rule rather than left to autodiff of the forward, so that the
backward is the textbook closed form with fewer XLA kernels (forward+backward at 4096x1024: 9 against 11) and fewer
full-size intermediates (4 against 6). On XLA:CPU that is 10-15% faster at the two largest benchmark shapes and no
measurable change at smaller ones (benchmarks/README.md). The backward it gives is

    xhat = (x - mean) * rstd,  g = dy * scale,
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dscale = sum(dy * xhat),  dbias = sum(dy),

with means over the normalized axes and sums over the batch axes. It is written as a JVP that is linear in the
tangents (the map dx -> rstd * (dx - mean(dx) - xhat * mean(dx * xhat)) is its own transpose), so JAX transposes it
into exactly that backward for `grad`/`vjp`, while `jvp`, `jacfwd` and `hessian` keep working. A `jax.custom_vjp`
would give the same backward, measured no faster, but breaks forward-mode differentiation, which researchers use.

On CPU, float32 and float64 input normalized over trailing axes goes through native kernels (`layernorm.native`,
`csrc/layer_norm_cpu.cc`) that read each row once instead of XLA's several passes over the whole array: the forward
then costs about what `x * a + b` costs, and forward+backward is 2-4x faster (benchmarks/README.md). The forward's
statistics are a one-pass variance shifted by an estimate of each row's mean, with the exact second pass wherever that
estimate is off by over a standard deviation; against a float64 reference it is at least as accurate as the XLA path.
The derivative is the same closed form (`layernorm.native_path`: the backward kernel is the transpose of the tangent,
so forward mode keeps working). `impl='xla'` or `LAYERNORM_NATIVE=0` keeps XLA everywhere; GPUs and TPUs always use
XLA (`jax.lax.platform_dependent` chooses when the program is lowered).

`rms_norm` (Zhang & Sennrich 2019) is the same op without centering: y = x / sqrt(mean(x^2) + eps) * scale, on the
same paths (the kernels take a `center` flag) and with the same closed form minus its mean terms,
dx = rstd * (g - xhat * mean(g * xhat)).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from layernorm import native, native_path

Axes = int | Sequence[int]
IMPLEMENTATIONS = ('auto', 'xla')


def normalized_axes(axis: Axes, ndim: int) -> tuple[int, ...]:
  """Returns `axis` as a sorted tuple of non-negative axes of an `ndim`-dimensional array.

  Raises:
    ValueError: an axis is out of range or repeated, or no axis is given.
  """
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  if not axes:
    raise ValueError('layer_norm needs at least one axis to normalize over; got an empty tuple.')
  resolved = []
  for a in axes:
    if not isinstance(a, int):
      raise TypeError(f'layer_norm axes must be integers; got {a!r} of type {type(a).__name__}.')
    if not -ndim <= a < ndim:
      raise ValueError(
        f'layer_norm axis {a} is out of range for an input of rank {ndim}; expected an axis in [{-ndim}, {ndim - 1}].'
      )
    resolved.append(a % ndim)
  if len(set(resolved)) != len(resolved):
    raise ValueError(f'layer_norm axes {axes} name the same axis twice for an input of rank {ndim}.')
  return tuple(sorted(resolved))


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype statistics are computed in: float32, or float64 for float64 input."""
  return jnp.promote_types(dtype, jnp.float32)


def _check_input(x: jax.Array) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
      f'layer_norm expects a floating-point input (float16, bfloat16, float32 or float64); got {x.dtype}. '
      'Cast it first, e.g. x.astype(jnp.float32).'
    )


def _check_param(
  op: str, name: str, p: jax.Array | None, feature_shape: tuple[int, ...], axes: tuple[int, ...]
) -> None:
  if p is None:
    return
  if tuple(jnp.shape(p)) != feature_shape:
    raise ValueError(
      f'{op} {name} has shape {tuple(jnp.shape(p))}; expected {feature_shape}, the shape of the input over the '
      f'normalized axes {axes}.'
    )


def _broadcastable(p: jax.Array, shape: tuple[int, ...], axes: tuple[int, ...]) -> jax.Array:
  """Reshapes a per-feature parameter so it broadcasts against an input of `shape` normalized over `axes`."""
  return p.reshape([shape[a] if a in axes else 1 for a in range(len(shape))])


def layer_norm(
  x: jax.Array,
  scale: jax.Array | None = None,
  bias: jax.Array | None = None,
  *,
  axis: Axes = -1,
  eps: float = 1e-5,
  impl: str = 'auto',
) -> jax.Array:
  """Layer normalization over `axis`, with an optional gain `scale` and offset `bias`.

  Args:
    x: floating-point input of any rank.
    scale: per-feature gain of shape `tuple(x.shape[a] for a in sorted axes)`, or None.
    bias: per-feature offset of the same shape as `scale`, or None.
    axis: the axis or tuple of axes that hold one example's features; any other axis is a batch axis.
    eps: added to the variance before the square root (1e-5, as in the authors' code).
    impl: 'auto' runs the native CPU kernel (`layernorm.native`) where it applies, float32 or float64 input
      normalized over trailing axes on CPU, and XLA elsewhere; 'xla' always uses XLA (for comparisons).

  Returns:
    The normalized array, with the dtype and shape of `x`.

  Raises:
    TypeError: `x` is not floating point, or `eps` is a traced value (it must be a Python number).
    ValueError: an axis is out of range, `scale` or `bias` has the wrong shape, or `impl` is unknown.
  """
  return _normalize_op('layer_norm', x, scale, bias, axis, eps, impl, center=True)


def rms_norm(
  x: jax.Array,
  scale: jax.Array | None = None,
  *,
  axis: Axes = -1,
  eps: float = 1e-6,
  impl: str = 'auto',
) -> jax.Array:
  """RMS normalization (Zhang & Sennrich 2019) over `axis`: `y = x / sqrt(mean(x^2) + eps) * scale`.

  The same op as `layer_norm` without the centering (no mean subtracted, no bias), on the same native CPU kernels
  and with the same float32 statistics, dtype rules and derivatives (jit, grad, jvp, hessian, vmap).

  Args:
    x: floating-point input of any rank.
    scale: per-feature gain of shape `tuple(x.shape[a] for a in sorted axes)`, or None.
    axis: the axis or tuple of axes that hold one example's features.
    eps: added to the mean square before the square root (1e-6, flax's `nnx.RMSNorm` default).
    impl: as in `layer_norm`.

  Returns:
    The normalized array, with the dtype and shape of `x`.

  Raises:
    As `layer_norm`.
  """
  return _normalize_op('rms_norm', x, scale, None, axis, eps, impl, center=False)


def _normalize_op(op, x, scale, bias, axis, eps, impl, *, center):
  """`layer_norm` (center) or `rms_norm` (not center): checks the arguments and picks the native or the XLA path."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'{op} impl must be one of {IMPLEMENTATIONS}; got {impl!r}.')
  x = jnp.asarray(x)
  _check_input(x)
  axes = normalized_axes(axis, x.ndim)
  feature_shape = tuple(x.shape[a] for a in axes)
  _check_param(op, 'scale', scale, feature_shape, axes)
  _check_param(op, 'bias', bias, feature_shape, axes)

  # Parameters enter the custom-derivative function already in the compute dtype: the cast's own derivative then
  # returns their gradients in their dtype, and an integer parameter (zero derivative) needs no special case.
  dtype = compute_dtype(x.dtype)
  scale = None if scale is None else jnp.asarray(scale).astype(dtype)
  bias = None if bias is None else jnp.asarray(bias).astype(dtype)
  try:
    eps = float(eps)
  except jax.errors.ConcretizationTypeError:
    raise TypeError(
      f'{op} eps must be a Python number, not a traced value: the hand-written derivative treats it as a '
      "constant. Under jit, mark it static (e.g. jax.jit(f, static_argnames='eps'))."
    ) from None
  if impl == 'auto' and _native_applies(x, axes):
    return jax.lax.platform_dependent(
      x,
      scale,
      bias,
      cpu=lambda x, scale, bias: _native_layer_norm(x, scale, bias, axes, eps, center),
      default=lambda x, scale, bias: _layer_norm(x, scale, bias, axes, eps, center),
    )
  return _layer_norm(x, scale, bias, axes, eps, center)


def _native_applies(x: jax.Array, axes: tuple[int, ...]) -> bool:
  """Whether the native CPU kernel can compute this call: float32/float64, trailing axes, non-empty, kernel built."""
  trailing = axes == tuple(range(x.ndim - len(axes), x.ndim))
  return trailing and x.size > 0 and native.available(x.dtype)


def _native_layer_norm(x, scale, bias, axes, eps, center):
  """The CPU path: the kernels on x viewed as rows of the normalized features (a free reshape for trailing axes)."""
  rows = x.reshape(*x.shape[: x.ndim - len(axes)], -1)
  flat = lambda p: None if p is None else p.reshape(-1)
  return native_path.layer_norm_last_axis(rows, flat(scale), flat(bias), eps, center).reshape(x.shape)


def _statistics(x: jax.Array, axes: tuple[int, ...], eps: float, center: bool) -> tuple[jax.Array, jax.Array]:
  """Returns mean and rstd = 1 / sqrt(var + eps) (kept dims, compute dtype), with the two-pass variance.

  Without `center` (RMS norm) the mean is a zero of the statistics' shape and var is mean(x^2).
  """
  x = x.astype(compute_dtype(x.dtype))
  if not center:
    ms = jnp.mean(jnp.square(x), axis=axes, keepdims=True)
    return jnp.zeros_like(ms), jax.lax.rsqrt(ms + eps)
  mean = jnp.mean(x, axis=axes, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True) + eps)
  return mean, rstd


def _normalize(x: jax.Array, mean: jax.Array, rstd: jax.Array) -> jax.Array:
  """Returns xhat = (x - mean) * rstd in the dtype of the statistics."""
  return (x.astype(mean.dtype) - mean) * rstd


def _affine(xhat: jax.Array, scale: jax.Array | None, bias: jax.Array | None, axes: tuple[int, ...]) -> jax.Array:
  """Returns xhat * scale + bias (each optional) in xhat's dtype."""
  y = xhat if scale is None else xhat * _broadcastable(scale.astype(xhat.dtype), xhat.shape, axes)
  if bias is not None:
    y = y + _broadcastable(bias.astype(xhat.dtype), xhat.shape, axes)
  return y


# eps is a non-differentiable argument: custom_jvp needs a fixed pytree of differentiable inputs, and nobody
# differentiates with respect to eps. It must be a Python number (it is converted in `layer_norm`).
@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _layer_norm(x, scale, bias, axes, eps, center):
  y = _affine(_normalize(x, *_statistics(x, axes, eps, center)), scale, bias, axes)
  return y.astype(x.dtype)


@_layer_norm.defjvp
def _layer_norm_jvp(axes, eps, center, primals, tangents):
  x, scale, bias = primals
  dx, dscale, dbias = tangents
  mean, rstd = _statistics(x, axes, eps, center)
  # Two optimization barriers, one feeding the output and one feeding the derivative, so that XLA computes xhat
  # inside each consumer from x and the per-row statistics instead of sharing one full-size xhat (and broadcast
  # copies of rstd and scale) between the forward and the backward. On XLA:CPU this removes two full-size
  # intermediate buffers from forward+backward and measured 10-15% faster at 4096x1024 and 32x512x768, no change
  # at smaller shapes (benchmarks/README.md); it costs nothing when the op is not differentiated (the primal
  # function above has no barrier). Not measured on a GPU.
  # The second barrier lists its operands in another order so that XLA cannot merge the two.
  y = _affine(_normalize(*jax.lax.optimization_barrier((x, mean, rstd))), scale, bias, axes)
  mean, rstd, x, scale = jax.lax.optimization_barrier((mean, rstd, x, scale))
  xhat = _normalize(x, mean, rstd)
  s = None if scale is None else _broadcastable(scale.astype(xhat.dtype), x.shape, axes)
  # Tangent of xhat, linear in dx with x, mean and rstd as its residuals, so that its transpose is the closed-form
  # backward.
  dx = dx.astype(xhat.dtype)
  centered = dx - jnp.mean(dx, axis=axes, keepdims=True) if center else dx  # RMS norm has no mean term.
  dxhat = rstd * (centered - xhat * jnp.mean(dx * xhat, axis=axes, keepdims=True))
  dy = dxhat if s is None else dxhat * s
  if scale is not None:
    dy = dy + xhat * _broadcastable(dscale.astype(xhat.dtype), x.shape, axes)
  if bias is not None:
    dy = dy + _broadcastable(dbias.astype(xhat.dtype), x.shape, axes)
  return y.astype(x.dtype), dy.astype(x.dtype)
