"""Training throughput of each experiment's CPU-scale config, with layer norm and RMSNorm against the baseline.

    python -m benchmarks.experiments_throughput [--experiments mnist,draw,order_embeddings,handwriting] [--repeats 10]
        [--json OUT]

For every experiment, its default config (`configs/<name>.py`, the CPU scale) with `norm=none`, `ln` and `rms`,
on its own data (`build_task`), trained by the loop's jitted chunk of `config.steps_per_dispatch` steps, as
`benchmarks.mnist_throughput.LoopChunk` issues it; the norms are timed side by side, round-robin, after warm-up.
A timed call is one dispatch, the loop's steady state between stop points (evaluation and checkpoints left out).

    LD_PRELOAD=libtcmalloc_minimal.so.4 taskset -c 0 .venv/bin/python -m benchmarks.experiments_throughput
"""

from __future__ import annotations

import sys

from benchmarks import timing
from benchmarks.layer_norm import environment
from benchmarks.mnist_throughput import LoopChunk
from configs import draw as draw_config
from configs import handwriting as handwriting_config
from configs import mnist as mnist_config
from configs import order_embeddings as order_embeddings_config
from experiments import cli_errors, draw, handwriting, mnist, order_embeddings

EXPERIMENTS = {
  'mnist': (mnist_config, mnist),
  'draw': (draw_config, draw),
  # GRU vs LN-GRU sentence encoder; a dispatch includes building its batches (features, padding) as the loop does.
  'order_embeddings': (order_embeddings_config, order_embeddings),
  'handwriting': (handwriting_config, handwriting),
}
NORMS = ('none', 'ln', 'rms')


def measure(name: str, repeats: int, warmup: int) -> list[dict]:
  config_module, experiment = EXPERIMENTS[name]
  chunks = {}
  for norm in NORMS:
    config = config_module.get_config(f'norm={norm}')
    experiment.validate(config)
    chunks[norm] = LoopChunk(config, experiment.build_task(config))
  samples = timing.compare(chunks, repeats=repeats, warmup=warmup)
  rows = []
  for norm, s in samples.items():
    per_call = chunks[norm].examples_per_call
    rows.append(
      {
        'experiment': name,
        'norm': norm,
        'batch': chunks[norm].config.batch_size,
        'steps_per_call': chunks[norm].steps_per_call,
        'examples_per_s_median': per_call / s.median,
        'examples_per_s_best': per_call / s.min,
        'examples_per_s_worst': per_call / s.max,
        'ms_per_step_median': s.median / chunks[norm].steps_per_call * 1e3,
        # Time ratio: above 1, LN is slower than the baseline.
        'x_none': s.median / samples['none'].median,
        'samples_s': list(s.seconds),
      }
    )
  return rows


def format_table(rows: list[dict]) -> str:
  header = ('experiment', 'norm', 'B', 'steps/call', 'ex/s median', 'ex/s best', 'ex/s worst', 'ms/step', 'time x none')
  lines = [
    (
      r['experiment'],
      r['norm'],
      str(r['batch']),
      str(r['steps_per_call']),
      f'{r["examples_per_s_median"]:.0f}',
      f'{r["examples_per_s_best"]:.0f}',
      f'{r["examples_per_s_worst"]:.0f}',
      f'{r["ms_per_step_median"]:.2f}',
      f'{r["x_none"]:.3f}',
    )
    for r in rows
  ]
  return timing.text_table(header, lines, text_columns={0, 1})


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> None:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--experiments', default=','.join(EXPERIMENTS), help='comma-separated: ' + ', '.join(EXPERIMENTS))
  timing.add_sampling_arguments(parser, repeats=10, warmup=2)
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.experiments.split(',') if n.strip()]
  if not names or any(n not in EXPERIMENTS for n in names):
    raise SystemExit(f'--experiments: choose from {", ".join(EXPERIMENTS)}; got {args.experiments!r}.')

  env = environment(use_torch=False)
  env.pop('torch_note', None)
  timing.print_header(
    'experiments training throughput (CPU-scale configs)', env, '', f'{args.repeats} samples per candidate'
  )
  rows = []
  for name in names:
    rows += measure(name, args.repeats, args.warmup)
    print(f'# measured {name}', file=sys.stderr, flush=True)
  timing.print_results(
    env,
    format_table(rows),
    'time x none: median time per dispatch / the norm=none median (above 1: the norm is slower).',
  )
  timing.write_json(args.json, {'environment': env, 'args': vars(args), 'rows': rows})


if __name__ == '__main__':
  sys.exit(main())
