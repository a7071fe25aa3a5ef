"""NNX normalization modules: `LayerNorm` and `RMSNorm`, drop-ins for flax's, and the baseline `BatchNorm`.

All are thin modules over pure functions, so the math lives in one place (`layernorm.ops`) and is tested there.

`LayerNorm` and `RMSNorm` take `nnx.LayerNorm`'s and `nnx.RMSNorm`'s constructor arguments (flax 0.12) with the same
meaning, attribute names, parameter names, shapes and dtypes, and draw the same keys from `rngs`, so replacing
`nnx.LayerNorm` by `layernorm.LayerNorm` in a model builds the same parameters and computes the same function (up to
rounding) with the native CPU kernels and the accurate variance. Two deliberate differences, both documented where they
apply: `LayerNorm`'s `epsilon` defaults to 1e-5 (the paper's authors' code; flax: 1e-6), and the variance is always
the accurate one (`use_fast_variance` is accepted and ignored). `rngs` is optional: the default initializers are
constants, and without `rngs` the layer draws no keys (how the library's cells build their LNs).
"""

from __future__ import annotations

import math
import typing as tp
from types import MappingProxyType

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from layernorm.ops import Axes, compute_dtype, layer_norm, normalized_axes, rms_norm

Initializer = tp.Callable[..., jax.Array]
# flax's default initializers, as module-level singletons for the signatures.
ZEROS = nnx.initializers.zeros_init()
ONES = nnx.initializers.ones_init()


def _feature_shape(num_features: int | tuple[int, ...]) -> tuple[int, ...]:
  shape = (num_features,) if isinstance(num_features, int) else tuple(num_features)
  if not shape or any(not isinstance(n, int) or n <= 0 for n in shape):
    raise ValueError(f'num_features must be a positive int (or a tuple of them); got {num_features!r}.')
  return shape


def _initializer(init: Initializer | float) -> Initializer:
  """flax's initializer convention; a number is the constant initializer (the library's older `scale_init=0.1`)."""
  return nnx.initializers.constant(init) if isinstance(init, int | float) else init


def _param(init, shape, param_dtype, rngs, metadata) -> nnx.Param:
  # The same draw as flax (one `rngs.params()` per parameter), so swapping in this module leaves the keys of every
  # later layer unchanged. Without rngs a fixed key: the default initializers ignore it.
  key = rngs.params() if rngs is not None else jax.random.key(0)
  return nnx.Param(_initializer(init)(key, shape, param_dtype), **metadata)


def _resolve_aliases(name, epsilon, eps, default_eps, axis, reduction_axes, feature_axes):
  """Merges the library's older keywords (`eps`, `axis`) into flax's (`epsilon`, `reduction_axes`, `feature_axes`)."""
  if eps is not None and epsilon is not None and eps != epsilon:
    raise ValueError(f'{name} got epsilon={epsilon} and its alias eps={eps}; pass one of them.')
  epsilon = next((e for e in (epsilon, eps) if e is not None), default_eps)
  if axis is not None:
    if (reduction_axes, feature_axes) != (-1, -1):
      raise ValueError(
        f'{name} got axis={axis!r} and reduction_axes/feature_axes; `axis` sets both, so pass one or the others.'
      )
    reduction_axes = feature_axes = axis
  return epsilon, reduction_axes, feature_axes


class _Norm(nnx.Module):
  """What `LayerNorm` and `RMSNorm` share: parameters, dtype promotion, axes, and the choice of computation path."""

  center = True  # Subtract the mean (layer norm) or not (RMS norm).

  def _init_params(self, num_features, param_dtype, use_scale, use_bias, scale_init, bias_init, rngs, metadata):
    shape = _feature_shape(num_features)
    if not isinstance(num_features, int) and len(shape) != len(_as_tuple(self.feature_axes)):
      raise ValueError(
        f'{type(self).__name__} got {len(shape)} feature sizes {shape} for feature axes {self.feature_axes!r}.'
      )
    scale_metadata, bias_metadata = metadata
    self.scale = _param(scale_init, shape, param_dtype, rngs, scale_metadata) if use_scale else nnx.data(None)
    self.bias = _param(bias_init, shape, param_dtype, rngs, bias_metadata) if use_bias else nnx.data(None)

  @property
  def eps(self) -> float:
    """The library's older name of `epsilon`."""
    return self.epsilon

  @property
  def axis(self) -> Axes:
    """The library's older name of the normalized axes (`reduction_axes`)."""
    return self.reduction_axes

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Normalizes `x` over `reduction_axes`; `mask` (broadcastable to x) restricts the statistics, as in flax."""
    scale = None if self.scale is None else self.scale[...]
    bias = None if self.bias is None else self.bias[...]
    x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
    reduce = normalized_axes(self.reduction_axes, x.ndim)
    features = normalized_axes(self.feature_axes, x.ndim)
    feature_shape = tuple(x.shape[a] for a in features)
    scale, bias = (_per_feature(self, n, p, feature_shape) for n, p in (('scale', scale), ('bias', bias)))
    if mask is not None or self.axis_name is not None:
      return _general_norm(self, x, scale, bias, reduce, features, mask)
    op = layer_norm if self.center else lambda x, s, b, **kw: rms_norm(x, s, **kw)
    if set(features) <= set(reduce):
      # Parameters broadcast to the normalized block, so the op (and its native kernel) applies them.
      shape = tuple(x.shape[a] if a in features else 1 for a in reduce)
      block = lambda p: None if p is None else jnp.broadcast_to(p.reshape(shape), tuple(x.shape[a] for a in reduce))
      return op(x, block(scale), block(bias), axis=reduce, eps=self.epsilon)
    # Parameters that vary along a batch axis: normalize in the statistics' dtype, then apply them.
    y = op(x.astype(compute_dtype(x.dtype)), None, None, axis=reduce, eps=self.epsilon)
    return _apply_params(y, scale, bias, features).astype(x.dtype)


def _as_tuple(axes: Axes) -> tuple[int, ...]:
  return (axes,) if isinstance(axes, int) else tuple(axes)


def _per_feature(module, name, p, feature_shape):
  """A parameter of `num_features` elements reshaped to the input's feature axes, as flax does, or None."""
  if p is None:
    return None
  if p.size != math.prod(feature_shape):
    raise ValueError(
      f'{type(module).__name__} {name} has shape {tuple(p.shape)}; expected {feature_shape}, the shape of the input '
      f'over the feature axes {module.feature_axes!r}.'
    )
  return p.reshape(feature_shape)


def _apply_params(y, scale, bias, features):
  shape = [y.shape[a] if a in features else 1 for a in range(y.ndim)]
  if scale is not None:
    y = y * scale.astype(y.dtype).reshape(shape)
  if bias is not None:
    y = y + bias.astype(y.dtype).reshape(shape)
  return y


def _general_norm(module, x, scale, bias, reduce, features, mask):
  """flax's two-pass statistics with a mask and/or a mean across the devices of `axis_name` (pmap, shard_map or vmap
  axes), in jnp and differentiated by autodiff: the op's closed-form derivative assumes local, unmasked statistics."""

  def mean(v):
    m = jnp.mean(v, axis=reduce, keepdims=True, where=mask)
    if module.axis_name is None:
      return m
    return jax.lax.pmean(m, module.axis_name, axis_index_groups=module.axis_index_groups)

  xf = x.astype(compute_dtype(x.dtype))
  mu = mean(xf) if module.center else jnp.zeros((), xf.dtype)
  y = (xf - mu) * jax.lax.rsqrt(mean(jnp.square(xf - mu)) + module.epsilon)
  return _apply_params(y, scale, bias, features).astype(x.dtype)


class LayerNorm(_Norm):
  """Layer normalization (Ba, Kiros & Hinton 2016) with flax's `nnx.LayerNorm` interface.

  Every argument of `nnx.LayerNorm` (flax 0.12.8) is accepted and means what it means there; differences:
    * `epsilon` defaults to 1e-5, as in the authors' code (flax: 1e-6). Pass `epsilon=1e-6` to match flax's default.
    * `use_fast_variance` is accepted and ignored: the variance is always the accurate one, mean((x - mean)^2) (the
      native kernel's shifted one-pass form falls back to it wherever it would be less accurate), which is what flax
      computes with `use_fast_variance=False`. flax's default (True), E[x^2] - E[x]^2, loses precision when
      |mean| >> std, so outputs then differ from flax's default by that error.
    * `rngs` may be omitted (no keys drawn; the default initializers are constants).
    * `num_features` may be a tuple, one size per feature axis (then the parameters have that shape).
  Older keywords stay: `eps` (= `epsilon`), `axis` (sets `reduction_axes` and `feature_axes`) and a number as
  `scale_init`/`bias_init` (a constant). Statistics are float32 (or float64) whatever the precision; the result has
  the promoted dtype of input and parameters, or `dtype`. With `mask` or `axis_name` the computation is flax's
  two-pass formula in jnp; otherwise it is `layernorm.layer_norm` (the native CPU kernels where they apply).

  Args:
    num_features: number of features (the size of the feature axes).
    epsilon: added to the variance (1e-5).
    dtype: dtype of the computation's inputs and result (default: promoted from input and parameters).
    param_dtype: dtype of the parameters (float32).
    use_bias: learn the bias (initialised by `bias_init`, zeros).
    use_scale: learn the gain (initialised by `scale_init`, ones: the paper's defaults).
    bias_init, scale_init: flax initializers, or numbers.
    reduction_axes: axes the statistics are computed over (-1).
    feature_axes: axes with a learned gain and bias each (-1).
    axis_name, axis_index_groups: average the statistics over a named (device) axis, as flax.
    use_fast_variance: accepted for flax compatibility; ignored (see above).
    promote_dtype: flax's dtype promotion function for (input, scale, bias).
    rngs: keys for the initializers, or None.
    bias_metadata, scale_metadata: metadata of the parameters.
    eps, axis: older names (see above).
  """

  def __init__(
    self,
    num_features: int | tuple[int, ...],
    *,
    epsilon: float | None = None,
    dtype: tp.Any = None,
    param_dtype: tp.Any = jnp.float32,
    use_bias: bool = True,
    use_scale: bool = True,
    bias_init: Initializer | float = ZEROS,
    scale_init: Initializer | float = ONES,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    axis_name: str | None = None,
    axis_index_groups: tp.Any = None,
    use_fast_variance: bool = True,
    promote_dtype: tp.Callable = dtypes.promote_dtype,
    rngs: nnx.Rngs | None = None,
    bias_metadata: tp.Mapping[str, tp.Any] = MappingProxyType({}),
    scale_metadata: tp.Mapping[str, tp.Any] = MappingProxyType({}),
    eps: float | None = None,
    axis: Axes | None = None,
  ):
    epsilon, reduction_axes, feature_axes = _resolve_aliases(
      'LayerNorm', epsilon, eps, 1e-5, axis, reduction_axes, feature_axes
    )
    self.num_features = num_features
    self.epsilon = epsilon
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.use_bias = use_bias
    self.use_scale = use_scale
    self.reduction_axes = reduction_axes
    self.feature_axes = feature_axes
    self.axis_name = axis_name
    self.axis_index_groups = axis_index_groups
    self.use_fast_variance = use_fast_variance
    self.promote_dtype = promote_dtype
    metadata = (scale_metadata, bias_metadata)
    self._init_params(num_features, param_dtype, use_scale, use_bias, scale_init, bias_init, rngs, metadata)


class RMSNorm(_Norm):
  """RMS normalization (Zhang & Sennrich 2019) with flax's `nnx.RMSNorm` interface: `x / sqrt(mean(x^2) + eps) * g`.

  Every argument of `nnx.RMSNorm` (flax 0.12.8) is accepted with flax's meaning and defaults (`epsilon` 1e-6: RMS
  norm is not the paper's, so nothing overrides flax here). `use_fast_variance` is accepted and has nothing to choose
  (there is no mean to subtract). `rngs` may be omitted; `num_features` may be a tuple; `eps` and `axis` are accepted
  as in `LayerNorm`. Without `mask` or `axis_name` it runs `layernorm.rms_norm` (the native CPU kernels).

  Args:
    num_features: number of features.
    epsilon: added to the mean square (1e-6).
    dtype, param_dtype, use_scale, scale_init, reduction_axes, feature_axes, axis_name, axis_index_groups,
    use_fast_variance, promote_dtype, rngs, scale_metadata, eps, axis: as in `LayerNorm`.
  """

  center = False

  def __init__(
    self,
    num_features: int | tuple[int, ...],
    *,
    epsilon: float | None = None,
    dtype: tp.Any = None,
    param_dtype: tp.Any = jnp.float32,
    use_scale: bool = True,
    scale_init: Initializer | float = nnx.initializers.ones,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    axis_name: str | None = None,
    axis_index_groups: tp.Any = None,
    use_fast_variance: bool = True,
    promote_dtype: tp.Callable = dtypes.promote_dtype,
    rngs: nnx.Rngs | None = None,
    scale_metadata: tp.Mapping[str, tp.Any] = MappingProxyType({}),
    eps: float | None = None,
    axis: Axes | None = None,
  ):
    epsilon, reduction_axes, feature_axes = _resolve_aliases(
      'RMSNorm', epsilon, eps, 1e-6, axis, reduction_axes, feature_axes
    )
    self.num_features = num_features
    self.epsilon = epsilon
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.use_scale = use_scale
    self.reduction_axes = reduction_axes
    self.feature_axes = feature_axes
    self.axis_name = axis_name
    self.axis_index_groups = axis_index_groups
    self.use_fast_variance = use_fast_variance
    self.promote_dtype = promote_dtype
    self._init_params(num_features, param_dtype, use_scale, False, scale_init, None, rngs, (scale_metadata, {}))


def batch_norm_statistics(
  x: jax.Array, batch_axes: tuple[int, ...], *, unbiased: bool = False
) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of `x` over `batch_axes` (two-pass, in float32 or wider).

  With `unbiased`, the variance divides by n - 1 instead of n, as the paper's batch-size-4 baseline does.
  """
  x = x.astype(compute_dtype(x.dtype))
  n = 1
  for a in batch_axes:
    n *= x.shape[a]
  if unbiased and n < 2:
    raise ValueError(f'the unbiased batch variance needs at least 2 examples per batch; got {n}.')
  mean = jnp.mean(x, axis=batch_axes)
  var = jnp.mean(jnp.square(x - jnp.expand_dims(mean, batch_axes)), axis=batch_axes)
  if unbiased:
    var = var * (n / (n - 1))
  return mean, var


class BatchNorm(nnx.Module):
  """Batch normalization (Ioffe & Szegedy 2015), the paper's main baseline.

  In training mode (`use_running_average=False`) it normalizes with the statistics of the current batch over every
  axis but the feature axis and updates exponential running averages; in evaluation mode it uses those averages.
  `model.train()` and `model.eval()` switch the mode, as for flax's modules.

  Args:
    num_features: size of the feature axis.
    use_running_average: evaluation mode.
    momentum: decay of the running averages.
    eps: added to the variance.
    unbiased: use the unbiased (n - 1) batch variance, as the paper does at batch size 4.
    axis: the feature axis.
    scale_init: initial gain (1; recurrent batch norm uses 0.1).
    use_scale: learn the gain.
    use_bias: learn the bias.
    rngs: unused by the constant initialisers; taken for flax's module convention.
  """

  def __init__(
    self,
    num_features: int,
    *,
    use_running_average: bool = False,
    momentum: float = 0.99,
    eps: float = 1e-5,
    unbiased: bool = False,
    axis: int = -1,
    scale_init: float = 1.0,
    use_scale: bool = True,
    use_bias: bool = True,
    rngs: nnx.Rngs | None = None,
  ):
    del rngs
    (n,) = _feature_shape(num_features)
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f'BatchNorm momentum must be in [0, 1); got {momentum}.')
    self.num_features = n
    self.use_running_average = use_running_average
    self.momentum = momentum
    self.eps = eps
    self.unbiased = unbiased
    self.axis = axis
    self.mean = nnx.BatchStat(jnp.zeros((n,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((n,), jnp.float32))
    self.scale = nnx.Param(jnp.full((n,), scale_init, jnp.float32)) if use_scale else None
    self.bias = nnx.Param(jnp.zeros((n,), jnp.float32)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    (feature_axis,) = normalized_axes(self.axis, x.ndim)
    if x.shape[feature_axis] != self.num_features:
      raise ValueError(
        f'BatchNorm was built for {self.num_features} features but the input has {x.shape[feature_axis]} on '
        f'axis {self.axis} (shape {x.shape}).'
      )
    batch_axes = tuple(a for a in range(x.ndim) if a != feature_axis)
    if self.use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      mean, var = batch_norm_statistics(x, batch_axes, unbiased=self.unbiased)
      m = self.momentum
      self.mean[...] = m * self.mean[...] + (1 - m) * jax.lax.stop_gradient(mean)
      self.var[...] = m * self.var[...] + (1 - m) * jax.lax.stop_gradient(var)
    dtype = compute_dtype(x.dtype)
    shape = [x.shape[a] if a == feature_axis else 1 for a in range(x.ndim)]
    y = (x.astype(dtype) - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + self.eps)
    if self.scale is not None:
      y = y * self.scale[...].reshape(shape)
    if self.bias is not None:
      y = y + self.bias[...].reshape(shape)
    return y.astype(x.dtype)
