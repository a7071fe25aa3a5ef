"""Skip-thoughts: layer norm's cost per training step, and the memory of one paper-scale step.

    python -m benchmarks.skip_thoughts [--scale cpu|paper] [--repeats 5] [--warmup 1] [--json OUT]

One jitted training step (the experiment's loss, its optimizer: global-norm clipping and the Theano Adam) on a fixed
batch of 64 triples whose three sentences all have the longest length: at paper scale 29 words + EOS over 20,000
words; at CPU scale the procedural corpus's vocabulary and its longest padded length (16 steps),
with norm=none and norm=ln timed side by side, round-robin. `--memory` prints XLA's memory analysis of the compiled
step (arguments, outputs, temporaries) instead: the peak of one step without running it.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
from flax import nnx

from benchmarks import timing
from configs import skip_thoughts as st_config
from experiments import cli_errors, loop
from experiments.data import text as text_lib
from experiments.skip_thoughts import procedural, task

SCALES = {'cpu': '', 'paper': 'paper'}


def _sizes(config, scale: str) -> tuple[int, int]:
  """(vocabulary size, padded steps): the paper's 20,000 words and 30 steps, or the procedural run's own."""
  if scale == 'paper':
    return config.data.vocab_size, config.data.max_len  # The longest sentence (29 words) and its EOS step.
  sentences = procedural.corpus(config.data.num_stories, config.data.seed)
  longest = max(len(s) for s in sentences) + 1
  vocab = text_lib.build_vocab(sentences, config.data.vocab_size)
  return len(vocab), text_lib.bucket(longest, config.data.pad_multiple)


def _step(config, scale: str, steps: int = 1):
  vocab_size, t = _sizes(config, scale)
  model = task.build_model(config.model, vocab_size, nnx.Rngs(0))
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  tx = loop.make_optimizer(config.optimizer, steps)
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  batch = {}
  for role in ('prev', 'centre', 'next'):
    batch[role] = rng.integers(2, vocab_size, (config.batch_size, t)).astype(np.int32)
    batch[f'{role}_len'] = np.full(config.batch_size, t, np.int32)

  @jax.jit
  def step(params, opt_state, batch):
    loss_of = lambda p: task.loss_fn(nnx.merge(graph, p, rest), batch, None)[0]
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return jax.tree.map(lambda p, u: p + u, params, updates), opt_state, loss

  return step, (params, opt_state, batch)


def memory(scale: str) -> dict:
  out = {}
  for norm in ('none', 'ln'):
    config = st_config.get_config(','.join(filter(None, [SCALES[scale], f'norm={norm}'])))
    step, args = _step(config, scale)
    analysis = step.lower(*args).compile().memory_analysis()
    out[norm] = {
      k: getattr(analysis, f'{k}_size_in_bytes') / 2**20 for k in ('argument', 'output', 'temp', 'generated_code')
    }
  return out


def measure(scale: str, repeats: int, warmup: int) -> dict:
  calls = {}
  for norm in ('none', 'ln'):
    config = st_config.get_config(','.join(filter(None, [SCALES[scale], f'norm={norm}'])))
    step, args = _step(config, scale)
    state = list(args)

    def call(step=step, state=state):
      state[0], state[1], loss = step(*state)
      return loss

    calls[norm] = call
  samples = timing.compare(calls, repeats=repeats, warmup=warmup)
  none, ln = samples['none'].median, samples['ln'].median
  best = {f'{norm}_min_s': samples[norm].min for norm in ('none', 'ln')}
  return {'scale': scale, 'none_s': none, 'ln_s': ln, 'ln_cost_pct': 100 * (ln / none - 1), **best}


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--scale', choices=SCALES, default='cpu')
  parser.add_argument('--memory', action='store_true', help='XLA memory analysis of the compiled step.')
  parser.add_argument('--repeats', type=timing.positive_int, default=5)
  parser.add_argument('--warmup', type=timing.positive_int, default=1)
  args = parser.parse_args(argv)
  if args.memory:
    for norm, sizes in memory(args.scale).items():
      print(f'{args.scale} norm={norm}: ' + ', '.join(f'{k} {v:.0f} MiB' for k, v in sizes.items()))
    return 0
  r = measure(args.scale, args.repeats, args.warmup)
  print(f'{r["scale"]}: none {r["none_s"] * 1e3:.1f} ms/step, ln {r["ln_s"] * 1e3:.1f} ms/step, '
        f'LN costs {r["ln_cost_pct"]:+.1f}% of the step (median of {args.repeats}); '
        f'best: none {r["none_min_s"] * 1e3:.1f}, ln {r["ln_min_s"] * 1e3:.1f} ms/step')  # fmt: skip
  return 0


if __name__ == '__main__':
  sys.exit(main())
