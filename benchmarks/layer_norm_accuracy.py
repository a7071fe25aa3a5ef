"""Layer norm's float32 error against a float64 reference: the native CPU kernels, the XLA path, flax and PyTorch.

    python -m benchmarks.layer_norm_accuracy [--shapes 128x1000,3200x400] [--offsets 0,100,10000]

Inputs are `offset + N(0, 1)` in float32 (a common offset many standard deviations away from zero is where variance
formulas lose precision), scale ~ N(1, 0.1), bias ~ N(0, 0.1), eps 1e-5. The reference is the textbook formula in
float64 on the same float32 inputs: forward y, and the backward dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
g = dy * scale, for a cotangent dy ~ N(0, 1). Printed: the largest absolute error over the array, forward and dx.
PyTorch is optional (see benchmarks/layer_norm.py for a venv with it).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import timing
from benchmarks.layer_norm import flax_apply, parse_shapes
from experiments import cli_errors
from layernorm import layer_norm

try:
  import torch
except ImportError:  # Optional.
  torch = None

EPS = 1e-5


def reference(x, scale, bias, dy):
  x, scale, bias, dy = (np.asarray(a, np.float64) for a in (x, scale, bias, dy))
  mean = x.mean(-1, keepdims=True)
  rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + EPS)
  xhat = (x - mean) * rstd
  g = dy * scale
  dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
  return xhat * scale + bias, dx


def candidates(features: int) -> dict:
  """name -> f(x, scale, bias, dy) returning (y, dx) as NumPy arrays."""

  def jax_fn(fn):
    run = jax.jit(lambda x, s, b, dy: (lambda y, pull: (y, pull(dy)[0]))(*jax.vjp(lambda x: fn(x, s, b), x)))
    return lambda *a: tuple(np.asarray(v) for v in run(*a))

  def flax_fn(fast):
    apply, params = flax_apply(features, fast, jnp.float32)

    def with_params(x, s, b):
      return apply(x, {**params, 'scale': nnx.Param(s), 'bias': nnx.Param(b)})

    return jax_fn(with_params)

  out = {
    'layer_norm': jax_fn(lambda x, s, b: layer_norm(x, s, b, eps=EPS)),
    'layer_norm xla': jax_fn(lambda x, s, b: layer_norm(x, s, b, eps=EPS, impl='xla')),
    'flax': flax_fn(True),
    'flax two-pass': flax_fn(False),
  }
  if torch is not None:

    def torch_fn(x, s, b, dy):
      xt = torch.from_numpy(np.array(x)).requires_grad_()
      y = torch.nn.functional.layer_norm(
        xt, (features,), torch.from_numpy(np.array(s)), torch.from_numpy(np.array(b)), EPS
      )
      y.backward(torch.from_numpy(np.array(dy)))
      return y.detach().numpy(), xt.grad.numpy()

    out['torch'] = torch_fn
  return out


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> None:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shapes', default='128x1000,3200x400,4096x1024')
  parser.add_argument('--offsets', default='0,100,10000', help='comma-separated common offsets, in standard deviations')
  args = parser.parse_args(argv)
  offsets = [float(v) for v in args.offsets.split(',')]
  rows = []
  for shape in parse_shapes(args.shapes):
    rng = np.random.default_rng(0)
    features = shape[-1]
    scale = rng.normal(1.0, 0.1, features).astype(np.float32)
    bias = rng.normal(0.0, 0.1, features).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    noise = rng.normal(size=shape)
    fns = candidates(features)
    for offset in offsets:
      x = (offset + noise).astype(np.float32)
      want_y, want_dx = reference(x, scale, bias, dy)
      for name, fn in fns.items():
        y, dx = fn(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias), jnp.asarray(dy))
        rows.append(
          (
            'x'.join(map(str, shape)),
            f'{offset:g}',
            name,
            f'{np.abs(y - want_y).max():.2e}',
            f'{np.abs(dx - want_dx).max():.2e}',
          )
        )
  header = ('shape', 'offset', 'impl', 'max |y error|', 'max |dx error|')
  print(timing.text_table(header, rows, text_columns={0, 1, 2}, group_by=2))


if __name__ == '__main__':
  sys.exit(main())
