"""NNX normalization modules: `LayerNorm`, and the batch-normalization baseline `BatchNorm`.

Both are thin modules over pure functions, so the math lives in one place (`layernorm.ops`) and is tested there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from layernorm.ops import Axes, compute_dtype, layer_norm, normalized_axes


def _feature_shape(num_features: int | tuple[int, ...]) -> tuple[int, ...]:
  shape = (num_features,) if isinstance(num_features, int) else tuple(num_features)
  if not shape or any(not isinstance(n, int) or n <= 0 for n in shape):
    raise ValueError(f'num_features must be a positive int (or a tuple of them); got {num_features!r}.')
  return shape


class LayerNorm(nnx.Module):
  """Layer normalization with a learned per-feature gain (initialised to 1) and bias (initialised to 0).

  Args:
    num_features: size of the normalized axis (a tuple when `axis` names several axes).
    eps: added to the variance (1e-5, as in the authors' code).
    use_scale: learn the gain.
    use_bias: learn the bias.
    axis: the feature axis or axes of the input.
    rngs: unused by the constant initialisers; taken for flax's module convention.
  """

  def __init__(
    self,
    num_features: int | tuple[int, ...],
    *,
    eps: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    axis: Axes = -1,
    scale_init: float = 1.0,
    rngs: nnx.Rngs | None = None,
  ):
    del rngs  # Deterministic initialisation; kept for the (..., rngs=rngs) convention.
    shape = _feature_shape(num_features)
    n_axes = 1 if isinstance(axis, int) else len(tuple(axis))
    if n_axes != len(shape):
      raise ValueError(f'LayerNorm got {len(shape)} feature sizes {shape} for {n_axes} axes {axis!r}.')
    self.num_features = shape
    self.eps = eps
    self.axis = axis
    self.scale = nnx.Param(jnp.full(shape, scale_init, jnp.float32)) if use_scale else None
    self.bias = nnx.Param(jnp.zeros(shape, jnp.float32)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    scale = None if self.scale is None else self.scale[...]
    bias = None if self.bias is None else self.bias[...]
    return layer_norm(x, scale, bias, axis=self.axis, eps=self.eps)


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
