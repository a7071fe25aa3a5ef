"""The native CPU kernels (`layernorm.native`) made a differentiable `layer_norm` over the last axis.

Values come from the kernels, derivatives from jnp:
  * `_forward` (custom_jvp) returns (y, mean, rstd) from the forward kernel. Its JVP rule calls `_forward` again for the
    primal values and gives the tangent of y through `tangent_p` below, and those of the statistics in jnp.
  * `tangent_p` is a primitive for the tangent of y, linear in (dx, dscale, dbias) with (x, mean, rstd, scale) as
    residuals: dy = rstd * (dx - mean(dx) - xhat * mean(dx * xhat)) * scale + xhat * dscale + dbias. It runs as jnp
    (forward mode), and its transpose, which `grad` and `vjp` use, is the backward kernel: dx, dscale and dbias in one
    sweep that reads x and dy once, where XLA's backward reads them several times.
  * `_backward` (custom_jvp) is that kernel call, differentiated as the jnp transpose of `tangent`.
RMS norm is the same machinery with `center=False` (a static argument, a primitive parameter and a kernel attribute):
the kernels return mean = 0, so xhat = (x - mean) * rstd holds unchanged, and the tangent drops its mean(dx) term,
dxhat = rstd * (dx - xhat * mean(dx * xhat)).
So `grad` runs both kernels, `jvp` runs the forward kernel and jnp, and derivatives of any order end in jnp: hessian,
jacfwd and grad-of-grad work and agree with the XLA path (tests/test_native.py).

A `jax.custom_vjp` would give the kernels with less code but no forward mode; JAX no longer has custom_transpose, hence
the primitive. Its operands are grouped: x and dx (P, N, H), mean and rstd (P, N), scale, dscale and dbias (P, H), P
parameter rows each serving N rows, so that vmap over batched parameters stays one kernel call (P grows).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from layernorm import native


def layer_norm_last_axis(
  x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, eps: float, center: bool = True
) -> jax.Array:
  """Layer norm (RMS norm without `center`) of x over its last axis; scale and bias (H,) in x's dtype, or None.

  CPU only.
  """
  y, _, _ = _forward(x, scale, bias, eps, center)
  return y


def _identity_params(h: int, dtype, scale, bias):
  # NumPy constants become literals in the program; jnp.ones would be a kernel launched on every call.
  scale = np.ones((h,), dtype) if scale is None else scale
  bias = np.zeros((h,), dtype) if bias is None else bias
  return scale, bias


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _forward(x, scale, bias, eps, center):
  return native.forward(x, *_identity_params(x.shape[-1], x.dtype, scale, bias), eps, center)


@_forward.defjvp
def _forward_jvp(eps, center, primals, tangents):
  x, scale, bias = primals
  dx, dscale, dbias = tangents
  y, mean, rstd = _forward(x, scale, bias, eps, center)
  h = x.shape[-1]
  # Absent parameters have no tangent: zeros, so the tangent's bias and scale terms vanish.
  dscale = jnp.zeros((h,), x.dtype) if scale is None else dscale
  dbias = jnp.zeros((h,), x.dtype) if bias is None else dbias
  scale, _ = _identity_params(h, x.dtype, scale, None)
  rows = (1, -1, h)
  dy = tangent_p.bind(
    x.reshape(rows),
    mean.reshape(1, -1),
    rstd.reshape(1, -1),
    jnp.reshape(scale, (1, h)),
    dx.reshape(rows),
    dscale.reshape(1, h),
    dbias.reshape(1, h),
    center=center,
  ).reshape(x.shape)
  # The statistics' tangents, used only by higher-order derivatives (XLA drops them otherwise):
  # d mean = mean(dx) (0 for RMS); d rstd = -rstd^3 / 2 * d var, with d var = 2 / rstd * mean(xhat * dx) for both
  # (for layer norm the mean's own tangent drops out of d var because mean(x - mean) = 0).
  xhat = (x - mean[..., None]) * rstd[..., None]
  dmean = jnp.mean(dx, axis=-1) if center else jnp.zeros_like(mean)
  drstd = -jnp.square(rstd) * jnp.mean(dx * xhat, axis=-1)
  return (y, mean, rstd), (dy, dmean, drstd)


def tangent(x, mean, rstd, scale, dx, dscale, dbias, *, center=True):
  """The tangent of y in jnp, grouped shapes (module docstring)."""
  xhat = (x - mean[..., None]) * rstd[..., None]
  centered = dx - jnp.mean(dx, axis=-1, keepdims=True) if center else dx
  dxhat = rstd[..., None] * (centered - xhat * jnp.mean(dx * xhat, axis=-1, keepdims=True))
  return dxhat * scale[:, None, :] + xhat * dscale[:, None, :] + dbias[:, None, :]


def backward_reference(x, mean, rstd, scale, ct, center=True):
  """(dx, dscale, dbias): the transpose of `tangent` at cotangent ct, by JAX, in jnp."""
  zeros = (jnp.zeros_like(x), jnp.zeros_like(scale), jnp.zeros_like(scale))
  linear = lambda dx, ds, db: tangent(x, mean, rstd, scale, dx, ds, db, center=center)
  return jax.linear_transpose(linear, *zeros)(ct)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _backward(x, mean, rstd, scale, ct, center):
  return native.backward(x, mean, rstd, scale, ct, center)


@_backward.defjvp
def _backward_jvp(center, primals, tangents):
  out = _backward(*primals, center)
  _, out_tangents = jax.jvp(lambda *a: backward_reference(*a, center), primals, tangents)
  return out, out_tangents


tangent_p = Primitive('layer_norm_tangent')
tangent_p.def_impl(tangent)
tangent_p.def_abstract_eval(lambda x, *_, center: x)
mlir.register_lowering(tangent_p, mlir.lower_fun(tangent, multiple_results=False))


def _tangent_jvp(primals, tangents, *, center):
  # Forward mode of the tangent itself (higher-order derivatives): jnp.
  linear = functools.partial(tangent, center=center)
  return jax.jvp(linear, primals, tuple(ad.instantiate_zeros(t) for t in tangents))


def _tangent_transpose(ct, x, mean, rstd, scale, dx, dscale, dbias, *, center):
  if any(ad.is_undefined_primal(r) for r in (x, mean, rstd, scale)):
    raise NotImplementedError('layer_norm_tangent is linear only in (dx, dscale, dbias).')
  if type(ct) is ad.Zero:
    return (None,) * 7
  grads = _backward(x, mean, rstd, scale, ct, center)
  return (None,) * 4 + tuple(
    g if ad.is_undefined_primal(t) else None for g, t in zip(grads, (dx, dscale, dbias), strict=True)
  )


def _tangent_batch(args, dims, *, center):
  # The batch axis joins the group axis P: every operand gets it in front (broadcast where absent), then (B, P, ...)
  # becomes (B * P, ...), so one kernel call serves the whole batch.
  size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
  grouped = []
  for a, d in zip(args, dims, strict=True):
    a = jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
    grouped.append(a.reshape(size * a.shape[1], *a.shape[2:]))
  out = tangent_p.bind(*grouped, center=center)
  return out.reshape(size, -1, *out.shape[1:]), 0


ad.primitive_jvps[tangent_p] = _tangent_jvp
ad.primitive_transposes[tangent_p] = _tangent_transpose
batching.primitive_batchers[tangent_p] = _tangent_batch
