"""Layer-normalized recurrent cells against their plain counterparts: LN-LSTM vs LSTM, LN-GRU vs GRU.

    python -m benchmarks.cells [--hidden 400,1000] [--batch 32,128] [--steps 100] [--repeats 10] [--json OUT]
        [--floor] [--random_cotangent] [--scan_too]

Each cell of `layernorm.cells` runs through `layernorm.unroll` over `--steps` time steps, input size = hidden size,
float32, jitted: the LSTMs and GRUs on their fused paths (`layernorm.fused_lstm`, `layernorm.fused_gru`),
AffineLSTMCell as one `lax.scan` of the cell. `--scan_too` adds the plain and LN cells of each family through
`unroll(impl='scan')`, the generic scan, to the same round-robin. Two passes:
  * fwd: the outputs of every step.
  * fwd+bwd: the gradient of the sum of the outputs with respect to the parameters and the inputs.
For every configuration the plain and the normalized cell of one family are timed side by side, round-robin, in this
process (benchmarks/timing.py), so the ratio LN / plain is what to read; absolute times on a shared CPU drift.
The issue's target: LN forward+backward at most 1.10x the plain cell's.
`--floor` adds, for the LSTM family, `AffineLSTMCell`: the LN-LSTM with each layer norm replaced by `x * scale + bias`
(the same parameters, residuals and per-step gain and bias gradients, no statistics), which splits LN's cost into
what any per-feature gain and bias in the cell costs and what the normalization itself adds.

Pin a core and use tcmalloc for figures worth comparing:
    LD_PRELOAD=libtcmalloc_minimal.so.4 taskset -c 0 .venv/bin/python -m benchmarks.cells
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import timing
from benchmarks.layer_norm import environment, kernel_count
from experiments import cli_errors
from experiments.flag_spelling import add_flag
from layernorm import GRUCell, LNGRUCell, LNLSTMCell, LSTMCell, unroll
from layernorm.cells import _lstm_update

FAMILIES = {'lstm': (LSTMCell, LNLSTMCell), 'gru': (GRUCell, LNGRUCell)}
PASSES = ('fwd', 'fwd+bwd')
TARGET_FWD_BWD = 1.10


class AffineLSTMCell(LNLSTMCell):
  """`LNLSTMCell` with every layer norm replaced by `x * scale + bias`: the LN-LSTM's floor (see --floor)."""

  def __call__(self, carry, x):
    c_BxH, h_BxH = carry
    affine = lambda ln, z: z * ln.scale[...] + ln.bias[...]
    gates_Bx4H = affine(self.ln_i, self.dense_i(x)) + affine(self.ln_h, self.dense_h(h_BxH)) + self.bias[...]
    new_c_BxH, o_BxH = _lstm_update(gates_Bx4H, c_BxH)
    new_h_BxH = o_BxH * jnp.tanh(affine(self.ln_c, new_c_BxH))
    return (new_c_BxH, new_h_BxH), new_h_BxH


FLOORS = {'lstm': AffineLSTMCell}
FUSED = ('lstm', 'gru')  # Families whose cells `unroll` runs fused (`--scan_too` compares with the scan).


def parse_ints(flag: str, text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise SystemExit(f'{flag}: cannot read {text!r}; write positive integers like 400,1000.') from None
  if not values or min(values) < 1:
    raise SystemExit(f'{flag}: needs positive integers; got {text!r}.')
  return values


def _programs(cell_cls: type, hidden: int, dys=None, impl: str = 'auto') -> tuple[dict[str, Callable], object]:
  """pass -> jitted function of (params, xs), and the cell's parameters.

  fwd+bwd: the gradient of sum(outputs), or with `dys` the VJP of the outputs with that cotangent (PERFORMANCE.md: an
  all-ones cotangent lets XLA fold work out of elementwise code but not out of a custom call).
  """
  cell = cell_cls(hidden, hidden, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(cell, nnx.Param, ...)

  def outputs(params, xs_TxBxD):
    # Time-major, so neither cell pays for moving the time axis to the front and back.
    _, ys_TxBxH = unroll(nnx.merge(graphdef, params, rest), xs_TxBxD, time_major=True, impl=impl)
    return ys_TxBxH

  def grads(params, xs_TxBxD):
    if dys is not None:
      return jax.vjp(outputs, params, xs_TxBxD)[1](dys)
    return jax.grad(lambda p, x: jnp.sum(outputs(p, x)), argnums=(0, 1))(params, xs_TxBxD)

  return {'fwd': jax.jit(outputs), 'fwd+bwd': jax.jit(grads)}, params


def measure(
  family: str,
  hidden: int,
  batch: int,
  steps: int,
  repeats: int,
  warmup: int,
  floor: bool = False,
  random_cotangent: bool = False,
  scan_too: bool = False,
) -> list[dict]:
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(0.0, 1.0, (steps, batch, hidden)), jnp.float32)
  dys = jnp.asarray(rng.normal(0.0, 1.0, (steps, batch, hidden)), jnp.float32) if random_cotangent else None
  plain_cls, ln_cls = FAMILIES[family]
  classes = (plain_cls, FLOORS[family], ln_cls) if floor and family in FLOORS else (plain_cls, ln_cls)
  candidates = [(cls.__name__, cls, 'auto') for cls in classes]
  if scan_too and family in FUSED:  # The same cells through unroll's generic scan, beside the fused path.
    candidates += [(f'{cls.__name__} (scan)', cls, 'scan') for cls in (plain_cls, ln_cls)]
  fns, kernels = {}, {}
  for name, cls, impl in candidates:
    programs, params = _programs(cls, hidden, dys, impl)
    for pass_name, fn in programs.items():
      key = (name, pass_name)
      fns[key] = lambda fn=fn, params=params: fn(params, xs)
      kernels[key] = kernel_count(fn.lower(params, xs).compile().as_text())
  # Both passes of both cells in one round-robin: a burst of load from elsewhere hits every candidate alike.
  samples = timing.compare({f'{c} {p}': fn for (c, p), fn in fns.items()}, repeats=repeats, warmup=warmup)
  rows = []
  for pass_name in PASSES:
    plain = samples[f'{plain_cls.__name__} {pass_name}']
    for name, _, _ in candidates:
      s = samples[f'{name} {pass_name}']
      rows.append(
        {
          'family': family,
          'hidden': hidden,
          'batch': batch,
          'steps': steps,
          'pass': pass_name,
          'cell': name,
          'kernels_per_program': kernels[(name, pass_name)],
          'min_ms': s.min * 1e3,
          'median_ms': s.median * 1e3,
          'max_ms': s.max * 1e3,
          'x_plain': s.median / plain.median,
          'x_plain_min': s.min / plain.min,
          'samples_ms': [t * 1e3 for t in s.seconds],
        }
      )
  return rows


def format_table(rows: list[dict]) -> str:
  header = ('family', 'H', 'B', 'pass', 'cell', 'kernels', 'min ms', 'median ms', 'max ms', 'x plain', 'x plain (min)')
  lines = [
    (
      r['family'],
      str(r['hidden']),
      str(r['batch']),
      r['pass'],
      r['cell'],
      str(r['kernels_per_program']),
      f'{r["min_ms"]:.2f}',
      f'{r["median_ms"]:.2f}',
      f'{r["max_ms"]:.2f}',
      f'{r["x_plain"]:.3f}',
      f'{r["x_plain_min"]:.3f}',
    )
    for r in rows
  ]
  return timing.text_table(header, lines, text_columns={0, 3, 4}, group_by=4)


def summarize(rows: list[dict]) -> str:
  out = []
  for r in rows:
    if r['x_plain'] == 1.0 and r['cell'] in ('LSTMCell', 'GRUCell'):
      continue
    verdict = ''
    if r['pass'] == 'fwd+bwd' and r['cell'] in ('LNLSTMCell', 'LNGRUCell'):
      verdict = f' (target <= {TARGET_FWD_BWD}: {"met" if r["x_plain"] <= TARGET_FWD_BWD else "NOT met"})'
    out.append(
      f'{r["family"]:>4} H={r["hidden"]:<5} B={r["batch"]:<4} {r["pass"]:<8} {r["cell"]} / plain: '
      f'{r["x_plain"]:.3f} median, {r["x_plain_min"]:.3f} min{verdict}'
    )
  return '\n'.join(out)


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> None:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--cells', default='lstm,gru', help='comma-separated families: lstm, gru')
  parser.add_argument('--hidden', default='400,1000', help='hidden (= input) sizes, comma-separated')
  parser.add_argument('--batch', default='32,128', help='batch sizes, comma-separated')
  parser.add_argument('--steps', type=int, default=100, help='time steps of the scan')
  parser.add_argument('--floor', action='store_true', help='also time AffineLSTMCell (LN replaced by x*scale+bias)')
  add_flag(
    parser, '--random_cotangent', action='store_true', help='fwd+bwd: the VJP with a random cotangent, not grad(sum)'
  )
  add_flag(parser, '--scan_too', action='store_true', help="also time each family's cells through unroll(impl='scan')")
  timing.add_sampling_arguments(parser, repeats=10, warmup=2)
  args = parser.parse_args(argv)
  families = [f.strip() for f in args.cells.split(',') if f.strip()]
  if not families or any(f not in FAMILIES for f in families):
    raise SystemExit(f'--cells: choose from {", ".join(FAMILIES)}; got {args.cells!r}.')
  if args.steps < 1:
    raise SystemExit('--steps must be at least 1.')
  hiddens, batches = parse_ints('--hidden', args.hidden), parse_ints('--batch', args.batch)

  env = environment(use_torch=False)
  env.pop('torch_note', None)
  timing.print_header(
    'recurrent cells benchmark', env, f'; float32, {args.steps}-step scan', f'{args.repeats} samples per candidate'
  )

  rows = []
  for family in families:
    for hidden in hiddens:
      for batch in batches:
        rows += measure(
          family, hidden, batch, args.steps, args.repeats, args.warmup, args.floor, args.random_cotangent, args.scan_too
        )
        print(f'# measured {family} H={hidden} B={batch}', file=sys.stderr, flush=True)
  timing.print_results(
    env, format_table(rows), 'x plain: median / the plain cell median of the same pass; (min): min / min.'
  )
  print()
  print(summarize(rows))
  timing.write_json(args.json, {'environment': env, 'args': vars(args), 'rows': rows})


if __name__ == '__main__':
  sys.exit(main())
