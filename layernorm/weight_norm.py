"""Weight normalization (Salimans & Kingma 2016), the paper's second baseline (§5.1, Table 1).

Each output unit i has its incoming weight vector re-parametrised as a direction `v_i` and a length `g_i`:

    w_i = g_i * v_i / ||v_i||,        y = x w + b

In the paper's unified notation `h_i = f(g_i / sigma_i * (a_i - mu_i) + b_i)` this is `a_i = v_i^T x`, `mu_i = 0`
and `sigma_i = ||v_i||`: the normalization depends on the weights only, never on the data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from layernorm.ops import compute_dtype

Initializer = nnx.initializers.Initializer
default_kernel_init = nnx.initializers.lecun_normal()  # nnx.Linear's default.
default_bias_init = nnx.initializers.zeros_init()


def _positive_int(name: str, value: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f'WeightNormLinear {name} must be a positive int; got {value!r}.')
  return value


def direction_norms(direction: jax.Array) -> jax.Array:
  """||v_i||: the L2 norm of each output unit's incoming weight vector (the columns of an (in, out) kernel)."""
  v = direction.astype(compute_dtype(direction.dtype))
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=0))


class WeightNormLinear(nnx.Module):
  """A linear layer `y = x w + b` with weight-normalized columns `w_i = g_i v_i / ||v_i||`.

  Parameters (shapes for `in_features=D`, `out_features=H`): `direction` (v, shape (D, H), one column per output
  unit, the layout of `nnx.Linear.kernel`), `scale` (g, shape (H,)) and `bias` (b, shape (H,)).

  Initialisation: v from `kernel_init` (flax's `nnx.Linear` default, LeCun normal) and, by default, g = ||v_i||, so
  the initial effective weight *is* v and the layer starts as exactly the function `nnx.Linear` would build from the
  same key; only the parametrisation (and so the gradient geometry) differs. LeCun normal gives columns of norm
  about 1, i.e. unit-variance summed inputs for unit-variance inputs. A float `scale_init` instead sets every g_i
  to that constant (the initial weight then has v's direction and that norm). Salimans & Kingma's data-dependent
  initialisation is not implemented.

  The output is invariant to re-scaling v (any column by any positive factor): only its direction is used. A
  column of v that is exactly zero has no direction and gives NaN.

  Args:
    in_features: size of the input's last axis.
    out_features: number of output units.
    use_bias: learn the bias b (initialised by `bias_init`, zeros by default).
    scale_init: None for g = ||v_i|| at initialisation, or a constant initial gain.
    kernel_init: initialiser of the direction v, called with shape (in_features, out_features).
    bias_init: initialiser of the bias.
    dtype: dtype of the computation (None: promote input and parameters).
    param_dtype: dtype of the parameters.
    rngs: the `params` stream initialises v (then b), in the order `nnx.Linear` uses.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    scale_init: float | None = None,
    kernel_init: Initializer = default_kernel_init,
    bias_init: Initializer = default_bias_init,
    dtype: jnp.dtype | None = None,
    param_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.in_features = _positive_int('in_features', in_features)
    self.out_features = _positive_int('out_features', out_features)
    self.use_bias = use_bias
    self.dtype = dtype
    direction = kernel_init(rngs.params(), (in_features, out_features), param_dtype)
    self.direction = nnx.Param(direction)
    if scale_init is None:
      scale = direction_norms(direction).astype(param_dtype)
    else:
      scale = jnp.full((out_features,), scale_init, param_dtype)
    self.scale = nnx.Param(scale)
    self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None

  def weight(self) -> jax.Array:
    """The effective (in_features, out_features) weight `g_i v_i / ||v_i||`, computed in float32 or wider."""
    v = self.direction[...]
    v = v.astype(compute_dtype(v.dtype))
    return v * (self.scale[...].astype(v.dtype) / direction_norms(v))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != self.in_features:
      raise ValueError(
        f'WeightNormLinear expects inputs whose last axis has in_features={self.in_features} entries; got an '
        f'input of shape {x.shape}.'
      )
    dtype = self.dtype or jnp.result_type(x.dtype, self.direction[...].dtype)
    y = jnp.dot(x.astype(dtype), self.weight().astype(dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y


WeightNorm = WeightNormLinear
"""The name DESIGN.md gives the weight-normalization baseline."""
