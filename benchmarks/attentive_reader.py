"""The attentive reader's training step: LN-LSTM reader against the plain-LSTM reader and against PyTorch, in one run.

    python -m benchmarks.attentive_reader [--repeats 10] [--norms none,ln,bn] [--no_torch]
        [--torch_modes eager,compile] [--torch_threads 2] [--json OUT]

Each JAX candidate is the training step of the CPU-scale config (`configs/attentive_reader.py`: dim 128, batch 64,
procedural passages padded to 42 tokens, queries to 4) as the experiment's loop runs it: the loop's jitted chunk of
`steps_per_dispatch` (10) steps in one call (forward, backward, the code's clipping, Adam, the loop's norm metrics),
on one batch repeated, timed round-robin by `benchmarks.timing.compare` and reported per step. The process keeps freed
memory as every experiment's command line does (`experiments.allocator`; `LAYERNORM_KEEP_MEMORY=0` for glibc's
default). Reports ms per step, examples/s, the cost relative to the first norm (LN's cost with the default
`--norms none,ln`) and each candidate's time over the JAX LN-LSTM's.

When torch imports (it is not in requirements.txt: `pip install -r benchmarks/requirements.txt`), the same LN-LSTM
reader written in PyTorch (`benchmarks/attentive_reader_torch.py`: an `nn.LSTMCell`-style loop with `nn.LayerNorm`,
started from the JAX LN reader's weights) joins the same round-robin: one training step (forward, backward, the same
clipping, Adam) in eager mode and with `torch.compile` (`compile`); if compiling fails, TorchScript (`script`, the
cells scripted) stands in and the run says so. `--torch_threads` defaults to the CPUs this process may use (what
XLA's thread pool uses), so that both frameworks get the same cores; pin them with `taskset`.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
from flax import nnx

from benchmarks import timing
from benchmarks.layer_norm import environment
from configs import attentive_reader as ar_config
from experiments import allocator, cli_errors
from experiments import attentive_reader as ar
from experiments.flag_spelling import add_flag
from experiments.loop import state as state_lib
from experiments.loop import steps as loop_steps

try:
  import torch

  from benchmarks import attentive_reader_torch as ar_torch
except ImportError:
  torch = ar_torch = None

TORCH_MODES = ('eager', 'compile', 'script')
INSTALL_TORCH = 'PyTorch not installed: its candidates skipped (pip install -r benchmarks/requirements.txt).'


class Step:
  """The training steps of the reader of `norm` as the experiment runs them: one call of the loop's jitted chunk
  (`experiments.loop.steps.jitted_steps`: `steps_per_dispatch` steps in one `lax.scan`, forward, backward, the
  code's clipping, Adam, the loop's norm metrics, the state donated), on one fixed batch repeated."""

  def __init__(self, norm: str, data):
    config = ar_config.get_config(f'norm={norm}')
    task = ar.build_task(config, data)
    total_steps = config.num_train_steps
    self.parts = state_lib.build(config, task.build_model, total_steps)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
    opt_key = loop_steps.optimizer_key(config.optimizer, total_steps)
    self._chunk, _ = loop_steps.jitted_steps(
      task.loss_fn, task.eval_fn, self.parts.train_def, self.parts.eval_def, opt_key, mesh
    )
    self.state = state_lib.initial_state(self.parts, config.seed)
    self.batch = task.train_data.batch(np.arange(config.batch_size))
    self.steps_per_call = config.steps_per_dispatch
    self.batches = jax.device_put(jax.tree.map(lambda a: np.stack([a] * self.steps_per_call), self.batch))
    self.batch_size = config.batch_size

  def model(self) -> nnx.Module:
    """The reader with the current weights (a copy: the next call donates the state)."""
    state = jax.tree.map(np.asarray, (self.state['params'], self.state['rest']))
    return nnx.merge(self.parts.train_def, *state)

  def __call__(self):
    self.state, metrics = self._chunk(self.state, self.batches)
    return metrics


def torch_steps(jax_model, batch: dict, entity_ids, config, modes: list[str]) -> dict:
  """name -> a PyTorch training step of the LN reader with `jax_model`'s weights, one per mode.

  A `torch.compile` that fails (it compiles on its first call, here) is replaced by TorchScript, with a line saying so.
  """
  steps = {}
  torch_batch = ar_torch.to_torch_batch(batch)
  opt = dict(learning_rate=config.optimizer.learning_rate, clip=config.optimizer.grad_clip_norm)
  for mode in modes:
    step = ar_torch.TrainStep(ar_torch.from_jax(jax_model), torch_batch, entity_ids, compile=mode, **opt)
    if mode == 'compile':
      print('# torch.compile: compiling (minutes on 2 cores) ...', file=sys.stderr, flush=True)
      try:
        step()
      except Exception as e:  # Any compiler failure: fall back, and say why.
        reason = (str(e).strip().splitlines() or [''])[0][:200]
        print(f'# torch.compile failed on this CPU ({type(e).__name__}: {reason}); TorchScript instead.')
        mode = 'script'
        step = ar_torch.TrainStep(ar_torch.from_jax(jax_model), torch_batch, entity_ids, compile=mode, **opt)
    steps[f'torch ln {mode}'] = step
  return steps


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> None:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--norms', default='none,ln', help='JAX readers, comma-separated; the first is the reference')
  add_flag(parser, '--no_torch', action='store_true', help='skip PyTorch even when it is installed')
  add_flag(parser, '--torch_modes', default='eager,compile', help=f'of {", ".join(TORCH_MODES)}')
  add_flag(
    parser,
    '--torch_threads',
    type=timing.positive_int,
    default=len(os.sched_getaffinity(0)),
    help='torch.set_num_threads',
  )
  timing.add_sampling_arguments(parser, repeats=10, warmup=2)
  args = parser.parse_args(argv)
  allocator.keep_freed_memory()  # As every experiment's command line does (LAYERNORM_KEEP_MEMORY=0: glibc's default).
  norms = args.norms.split(',')
  modes = [m for m in args.torch_modes.split(',') if m]
  if any(m not in TORCH_MODES for m in modes):
    raise SystemExit(f'--torch_modes: choose from {", ".join(TORCH_MODES)}; got {args.torch_modes!r}.')
  use_torch = torch is not None and not args.no_torch and bool(modes)
  if use_torch:
    torch.set_num_threads(args.torch_threads)
  env = environment(use_torch)
  software = f', torch {env["torch"]} ({env["torch_threads"]} threads)' if use_torch else ''
  timing.print_header(
    'attentive reader training step (CPU-scale config)', env, software, f'{args.repeats} samples per candidate'
  )
  if torch is None and not args.no_torch:
    print(f'# {INSTALL_TORCH}')

  config = ar_config.get_config()
  data = ar.load_data(config.data)
  steps = {f'jax {norm}': Step(norm, data) for norm in norms}
  fns = dict(steps)
  if use_torch:
    if 'ln' not in norms:
      raise SystemExit('The PyTorch reader is the LN-LSTM one: keep ln in --norms (or pass --no_torch).')
    ln = steps['jax ln']
    fns.update(torch_steps(ln.model(), ln.batch, data.entity_ids, config, modes))
  per_call = timing.compare(fns, repeats=args.repeats, warmup=args.warmup)
  # Seconds per training step: a JAX call runs steps_per_dispatch steps, a PyTorch call one.
  samples = {
    name: timing.Samples(tuple(t / getattr(fns[name], 'steps_per_call', 1) for t in s.seconds))
    for name, s in per_call.items()
  }

  first, ours = f'jax {norms[0]}', samples.get('jax ln')
  header = ['candidate', 'ms/step median', 'min', 'max', 'examples/s', f'vs {first}', 'time / jax ln']
  lines = []
  for name, s in samples.items():
    lines.append(
      [
        name,
        f'{1e3 * s.median:.1f}',
        f'{1e3 * s.min:.1f}',
        f'{1e3 * s.max:.1f}',
        f'{config.batch_size / s.median:.0f}',
        f'{s.median / samples[first].median - 1:+.1%}',
        f'{s.median / ours.median:.2f}' if ours else '-',
      ]
    )
  legend = [
    f'batch {config.batch_size}, dim {config.model.dim}, vocabulary {len(data.vocab)}, passages padded to '
    f'{steps[first].batch["passage"].shape[1]} tokens, queries to {steps[first].batch["query"].shape[1]}; JAX: '
    f"the loop's jitted chunk of {steps[first].steps_per_call} steps per call, timed per step.",
    f"vs {first}: median / its median - 1 (with --norms none,ln, the jax ln line is LN's cost; target < 10%).",
    "time / jax ln: median / the JAX LN reader's median; for torch ln eager, how many times faster ours is per "
    'training example (target >= 2).',
  ]
  timing.print_results(env, timing.text_table(header, lines, text_columns={0}), *legend)
  timing.write_json(
    args.json,
    {'environment': env, 'args': vars(args), 'seconds': {name: list(s.seconds) for name, s in samples.items()}},
  )


if __name__ == '__main__':
  sys.exit(main())
