"""Layer norm against its memory floor, flax's `nnx.LayerNorm` and PyTorch's `F.layer_norm`, forward and backward.

    python -m benchmarks.layer_norm [--shapes 4x1000,128x1000] [--repeats 30] [--json OUT] [--op rms_norm]

`--op rms_norm` times `rms_norm` (scale only, no bias; the same kernels with centering off) against the floor
`x * a`, flax's `nnx.RMSNorm` and PyTorch's `F.rms_norm` instead; the column names then read `rms_norm` for ours.

Normalization is over the last axis, with a per-feature scale and bias, eps 1e-5 everywhere. Every candidate is timed
in the same process, round-robin (benchmarks/timing.py), so the ratios are what to read; absolute times on a shared
CPU drift from run to run.

The floors are the cheapest computations that move the same bytes:
  * forward: a jitted `x * a + b` with per-feature `a`, `b`: reads x once, writes y once.
  * forward+backward: the forward and the VJP of that same affine map: `y = x*a + b`, `dx = dy*a`,
    `da = sum(dy*x)`, `db = sum(dy)` over the batch axes. It reads x and dy and writes y and dx, and reduces over the
    batch like a layer norm's dscale and dbias do: the same inputs, outputs and column reductions as a layer norm's
    forward+backward, without the per-row statistics.
Forward+backward of every candidate computes y and the three gradients from (x, scale, bias, dy) in one call: a jitted
`jax.vjp` for JAX, `F.layer_norm(...).backward(dy)` for PyTorch. PyTorch's forward runs under `torch.inference_mode`.
PyTorch is optional: without it (it is not in the project's venv) its column is skipped. To include it:
    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install torch==2.13.0 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8
    LD_PRELOAD=libtcmalloc_minimal.so.4 /tmp/benchvenv/bin/python -m benchmarks.layer_norm
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import timing
from experiments import cli_errors
from experiments.flag_spelling import add_flag
from layernorm import layer_norm, native, rms_norm

try:
  import torch
  import torch.nn.functional as torch_functional
except ImportError:  # PyTorch is optional and not in the project's venv.
  torch = None

EPS = 1e-5
DEFAULT_SHAPES = '4x1000,128x1000,3200x400,4096x1024,32x512x768'
PASSES = ('fwd', 'fwd+bwd')
OURS = 'layer_norm'
OURS_XLA = 'layer_norm xla'  # The same op with impl='xla': what the native CPU kernel is measured against.
# A jitted function of the same arguments that computes nothing (it returns a scalar zero; returning x would copy
# it): the per-call cost of dispatching any jitted function, which bounds every JAX candidate from below at small
# shapes. A reference line, not an implementation.
DISPATCH = 'jit dispatch'
FLOOR = 'floor'

# Instructions of a compiled computation that do not launch work of their own.
_FREE_OPCODES = frozenset(['parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast'])


def kernel_count(compiled_text: str) -> int:
  """Kernels in a compiled XLA program: the instructions of its entry computation (and loop bodies) that do work.

  A fusion counts once however many ops it holds; a loop counts its body's kernels once.
  """
  computations: dict[str, list[str]] = {}
  entry, current = None, None
  for line in compiled_text.splitlines():
    header = re.match(r'^(ENTRY )?%(\S+) .*\{$', line)
    if header:
      current = header.group(2)
      computations[current] = []
      if header.group(1):
        entry = current
    elif current is not None and line.strip() != '}':
      computations[current].append(line)

  def count(name: str) -> int:
    total = 0
    for line in computations.get(name, []):
      op = re.match(r'^\s+(?:ROOT )?%\S+ = .*?\b([a-z][a-z0-9-]*)\(', line)
      if op is None or op.group(1) in _FREE_OPCODES:
        continue
      if op.group(1) == 'while':
        body = re.search(r'body=%([^,\s]+)', line)
        total += count(body.group(1)) if body else 1
      else:
        total += 1
    return total

  return count(entry) if entry else 0


def parse_shapes(text: str) -> list[tuple[int, ...]]:
  shapes = []
  for item in text.split(','):
    try:
      shape = tuple(int(n) for n in item.strip().lower().split('x'))
    except ValueError:
      raise SystemExit(f'--shapes: cannot read {item!r}; write shapes like 4x1000,32x512x768.') from None
    if len(shape) < 2 or min(shape) < 1:
      raise SystemExit(f'--shapes: {item!r} needs at least two positive sizes (batch x features).')
    shapes.append(shape)
  return shapes


def flax_apply(features: int, use_fast_variance: bool, dtype, module_type=nnx.LayerNorm) -> tuple[Callable, object]:
  # dtype: flax computes in float32 for bfloat16 input but returns float32 unless told the output dtype; the other
  # candidates return the input's dtype, and the VJP's cotangent must match the output.
  module = module_type(
    features, epsilon=EPS, use_fast_variance=use_fast_variance, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)
  )
  graphdef, params = nnx.split(module)
  return (lambda x, p: nnx.merge(graphdef, p)(x)), params


def with_vjp(fn):
  """fn(x, *params) -> its output and the VJP at the last argument, dy, in one call."""

  def run(x, *rest):
    *params, dy = rest
    y, pullback = jax.vjp(fn, x, *params)
    return y, *pullback(dy)

  return run


def _jax_candidates(x, scale, bias, dy, op: str = 'layer_norm') -> dict[str, dict[str, tuple[Callable, tuple]]]:
  """pass -> name -> (jitted function, its arguments). For `op='rms_norm'` the functions take (x, scale) only."""
  if op == 'rms_norm':
    return _rms_candidates(x, scale, dy)
  features = x.shape[-1]

  def affine(x, a, b):
    return x * a + b

  def ours(x, scale, bias):
    return layer_norm(x, scale, bias, eps=EPS)

  def ours_xla(x, scale, bias):
    return layer_norm(x, scale, bias, eps=EPS, impl='xla')

  fwd = {
    FLOOR: (jax.jit(affine), (x, scale, bias)),
    DISPATCH: (jax.jit(lambda x, scale, bias: jnp.zeros((), x.dtype)), (x, scale, bias)),
    OURS: (jax.jit(ours), (x, scale, bias)),
    OURS_XLA: (jax.jit(ours_xla), (x, scale, bias)),
  }
  fwd_bwd = {
    FLOOR: (jax.jit(with_vjp(affine)), (x, scale, bias, dy)),
    OURS: (jax.jit(with_vjp(ours)), (x, scale, bias, dy)),
    OURS_XLA: (jax.jit(with_vjp(ours_xla)), (x, scale, bias, dy)),
  }
  for name, fast in (('flax', True), ('flax two-pass', False)):
    apply, params = flax_apply(features, fast, x.dtype)
    params['scale'][...] = scale
    params['bias'][...] = bias
    fwd[name] = (jax.jit(apply), (x, params))
    fwd_bwd[name] = (jax.jit(with_vjp(apply)), (x, params, dy))
  return {'fwd': fwd, 'fwd+bwd': fwd_bwd}


def _rms_candidates(x, scale, dy) -> dict[str, dict[str, tuple[Callable, tuple]]]:
  """As `_jax_candidates` for RMS norm: floor `x * a` (reads x once, writes y once; its VJP also reduces dy * x)."""
  scale_only = lambda x, a: x * a
  ours = lambda x, s: rms_norm(x, s, eps=EPS)
  ours_xla = lambda x, s: rms_norm(x, s, eps=EPS, impl='xla')
  apply, params = flax_apply(x.shape[-1], True, x.dtype, nnx.RMSNorm)
  params['scale'][...] = scale
  fwd, fwd_bwd = {}, {}
  for name, fn, args in (
    (FLOOR, scale_only, (x, scale)),
    ('rms_norm', ours, (x, scale)),
    ('rms_norm xla', ours_xla, (x, scale)),
    ('flax', apply, (x, params)),
  ):
    fwd[name] = (jax.jit(fn), args)
    fwd_bwd[name] = (jax.jit(with_vjp(fn)), (*args, dy))
  fwd[DISPATCH] = (jax.jit(lambda x, s: jnp.zeros((), x.dtype)), (x, scale))
  return {'fwd': fwd, 'fwd+bwd': fwd_bwd}


def _torch_candidates(x, scale, bias, dy, op: str = 'layer_norm') -> dict[str, Callable]:
  # NumPy has no bfloat16 that torch.from_numpy reads: go through float32 and cast on the torch side.
  torch_dtype = getattr(torch, jnp.dtype(x.dtype).name)
  xt, st, bt, dyt = (torch.from_numpy(np.asarray(a, np.float32)).to(torch_dtype) for a in (x, scale, bias, dy))
  shape = (x.shape[-1],)
  if op == 'rms_norm':
    norm = lambda x, s, b: torch_functional.rms_norm(x, shape, s, EPS)
  else:
    norm = lambda x, s, b: torch_functional.layer_norm(x, shape, s, b, EPS)

  def fwd():
    with torch.inference_mode():
      norm(xt, st, bt)

  xg, sg, bg = (t.clone().requires_grad_() for t in (xt, st, bt))

  def fwd_bwd():
    xg.grad = sg.grad = bg.grad = None
    norm(xg, sg, bg).backward(dyt)

  return {'fwd': fwd, 'fwd+bwd': fwd_bwd}


def measure(shape, dtype, repeats: int, warmup: int, use_torch: bool, op: str = 'layer_norm') -> list[dict]:
  rng = np.random.default_rng(0)
  features = shape[-1]
  x = jnp.asarray(rng.normal(1.0, 2.0, shape), dtype)
  dy = jnp.asarray(rng.normal(0.0, 1.0, shape), dtype)
  scale = jnp.asarray(rng.normal(1.0, 0.1, features), dtype)
  bias = jnp.asarray(rng.normal(0.0, 0.1, features), dtype)
  candidates = _jax_candidates(x, scale, bias, dy, op)
  torch_fns = _torch_candidates(x, scale, bias, dy, op) if use_torch else {}
  rows = []
  for pass_name in PASSES:
    fns = {name: (lambda fn=fn, args=args: fn(*args)) for name, (fn, args) in candidates[pass_name].items()}
    kernels = {
      name: kernel_count(fn.lower(*args).compile().as_text()) for name, (fn, args) in candidates[pass_name].items()
    }
    if pass_name in torch_fns:
      fns['torch'] = torch_fns[pass_name]
    samples = timing.compare(fns, repeats=repeats, warmup=warmup)
    floor, ours = samples[FLOOR], samples[op]
    for name, s in samples.items():
      rows.append(
        {
          'shape': list(shape),
          'pass': pass_name,
          'impl': name,
          'kernels': kernels.get(name),
          'min_us': s.min * 1e6,
          'median_us': s.median * 1e6,
          'max_us': s.max * 1e6,
          'x_floor': s.median / floor.median,
          'x_floor_min': s.min / floor.min,
          'x_ours': s.median / ours.median,
          'x_ours_min': s.min / ours.min,
          'samples_us': [t * 1e6 for t in s.seconds],
        }
      )
  return rows


def in_graph_us(shape, dtype, calls: int, repeats: int) -> dict[str, float]:
  """Microseconds per forward layer norm when `calls` of them run inside one jitted loop: the op's cost without the
  per-call dispatch that dominates small shapes. Min over `repeats` runs of the loop.

  Each step normalizes the previous output times 0.5, an elementwise op before each layer norm as in a model (a
  residual add, say); the figure includes that multiply. Normalizing the carry itself would add a copy per step on
  the native path, not a model's pattern: a loop carry must stay in one buffer, which a custom call cannot write while
  reading it.
  """
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(1.0, 2.0, shape), dtype)
  scale = jnp.asarray(rng.normal(1.0, 0.1, shape[-1]), dtype)
  bias = jnp.asarray(rng.normal(0.0, 0.1, shape[-1]), dtype)
  out = {}
  for name, impl in ((OURS, 'auto'), (OURS_XLA, 'xla')):
    step = lambda i, y, impl=impl: layer_norm(y * 0.5, scale, bias, eps=EPS, impl=impl)
    loop = jax.jit(lambda y, step=step: jax.lax.fori_loop(0, calls, step, y))
    samples = timing.compare({name: lambda loop=loop: loop(x)}, repeats=repeats, warmup=1)
    out[name] = samples[name].min / calls * 1e6
  return out


def format_table(rows: list[dict]) -> str:
  header = ('shape', 'pass', 'impl', 'kernels', 'min us', 'median us', 'max us', 'x floor', 'x ours')
  lines = []
  for r in rows:
    lines.append(
      (
        'x'.join(map(str, r['shape'])),
        r['pass'],
        r['impl'],
        '-' if r['kernels'] is None else str(r['kernels']),
        f'{r["min_us"]:.1f}',
        f'{r["median_us"]:.1f}',
        f'{r["max_us"]:.1f}',
        f'{r["x_floor"]:.2f}',
        f'{r["x_ours"]:.2f}',
      )
    )
  # shape, pass and impl are text; each shape-and-pass block is set apart.
  return timing.text_table(header, lines, text_columns={0, 1, 2}, group_by=2)


def summarize(rows: list[dict], op: str = OURS) -> str:
  """One line per shape and pass: ours against the floor target and against every other implementation."""
  targets = {'fwd': 1.3, 'fwd+bwd': 3.0}
  out = []
  for r in rows:
    if r['impl'] != op:
      continue
    same = [o for o in rows if o['shape'] == r['shape'] and o['pass'] == r['pass']]
    others = [o for o in same if o['impl'] not in (op, FLOOR, DISPATCH)]
    verdict = 'met' if r['x_floor'] <= targets[r['pass']] else 'NOT met'
    beats = ', '.join(f'{o["impl"]} {o["x_ours"]:.2f}x' for o in others)
    out.append(
      f'{"x".join(map(str, r["shape"])):>10} {r["pass"]:<8} {r["x_floor"]:.2f}x floor '
      f'(target <= {targets[r["pass"]]}: {verdict}); others take: {beats}'
    )
  return '\n'.join(out)


def environment(use_torch: bool) -> dict:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  env = {
    'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
    'cpu': cpu,
    'cpus_usable': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
    'allocator': timing.allocator(),
    'python': platform.python_version(),
    'jax': jax.__version__,
    'flax': flax.__version__,
    'jax_device': str(jax.devices()[0]),
    'torch': torch.__version__ if torch is not None else None,
    'torch_threads': torch.get_num_threads() if torch is not None else None,
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'native_kernel': native.available(np.float32),
  }
  if not use_torch:
    env['torch_note'] = (
      'PyTorch not installed: torch column skipped.' if torch is None else 'PyTorch skipped (--no_torch).'
    )
  return env


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> None:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shapes', default=DEFAULT_SHAPES, help='comma-separated, e.g. 4x1000,32x512x768')
  timing.add_sampling_arguments(parser, repeats=30, warmup=3)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  add_flag(parser, '--no_torch', action='store_true', help='skip PyTorch even when it is installed')
  add_flag(
    parser,
    '--in_graph',
    type=int,
    default=0,
    metavar='N',
    help='also time N forward calls inside one jitted loop per shape',
  )
  parser.add_argument('--op', default='layer_norm', choices=['layer_norm', 'rms_norm'], help='the op to time')
  args = parser.parse_args(argv)

  use_torch = torch is not None and not args.no_torch
  env = environment(use_torch)
  software = f', torch {env["torch"]} ({env["torch_threads"]} threads)' if use_torch else f', {env["torch_note"]}'
  software += f'; native CPU kernel: {"on" if env["native_kernel"] else "off (XLA path)"}'
  timing.print_header(
    f'{args.op} benchmark', env, software, f'dtype {args.dtype}, {args.repeats} samples per candidate'
  )

  rows = []
  for shape in parse_shapes(args.shapes):
    shape_rows = measure(shape, jnp.dtype(args.dtype), args.repeats, args.warmup, use_torch, args.op)
    rows += shape_rows
    print(f'# measured {"x".join(map(str, shape))}', file=sys.stderr, flush=True)
  timing.print_results(
    env,
    format_table(rows),
    f'x floor: median / the floor median; x ours: median / {args.op} median (above 1: {args.op} is faster).',
  )
  print()
  print(summarize(rows, args.op))
  if args.in_graph and args.op == 'layer_norm':
    print(f'\nin a jitted loop of {args.in_graph} calls (no per-call dispatch), us per forward layer norm, min:')
    for shape in parse_shapes(args.shapes):
      costs = in_graph_us(shape, jnp.dtype(args.dtype), args.in_graph, max(3, args.repeats // 5))
      print(f'{"x".join(map(str, shape)):>10} ' + ', '.join(f'{name} {us:.2f}' for name, us in costs.items()))
  timing.write_json(
    args.json, {'environment': env, 'op': args.op, 'dtype': args.dtype, 'repeats': args.repeats, 'rows': rows}
  )


if __name__ == '__main__':
  sys.exit(main())
