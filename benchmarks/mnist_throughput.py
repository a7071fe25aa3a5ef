"""Training throughput of the Figure 6 network (784-1000-1000-10) on the project's loop, against PyTorch eager.

    python -m benchmarks.mnist_throughput [--batch 4,128] [--norms none,ln,bn] [--repeats 10] [--json OUT]

The JAX side is the loop of `experiments/loop/` as a user gets it from `configs/mnist.py:norm=...,batch_size=...`:
its jitted chunk of `config.steps_per_dispatch` training steps in one `lax.scan` (donated state, Adam, per-step
metrics), fed the stacked batches its `Schedule` picks, gathered and put on the device by the host as the loop does.
One timed call is one such dispatch; it is the loop's steady state between stop points (logging, evaluation and
checkpoints are left out). The data are random uint8 "images" of 784 pixels: throughput does not depend on them.

PyTorch (optional; skipped when not importable): the same model in an eager loop, the same number of steps per
timed call: `Linear` layers (no bias before a normalization), `LayerNorm` / `BatchNorm1d` (on the logits too),
ReLU, He truncated-normal init (flax's `variance_scaling(2, 'fan_in', 'truncated_normal')`), Adam 1e-3, mean
cross-entropy, and the batch's error, as the JAX step computes. It runs at 1 thread and at PyTorch's default, both
in the same round-robin; the better of the two is the one compared. The issue's goal: at least 3x PyTorch at batch 4,
no slower at batch 128.

    LD_PRELOAD=libtcmalloc_minimal.so.4 taskset -c 0 /tmp/benchvenv/bin/python -m benchmarks.mnist_throughput
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from benchmarks import timing
from benchmarks.layer_norm import environment
from configs import mnist as mnist_config
from experiments import cli_errors, loop, mnist
from experiments.flag_spelling import add_flag
from experiments.loop import data as data_lib
from experiments.loop import state as state_lib
from experiments.loop import steps

try:
  import torch
except ImportError:  # PyTorch is optional and not in the project's venv.
  torch = None

NORMS = ('none', 'ln', 'bn')
IN_FEATURES = 784
NUM_TRAIN = 10_000
GOAL_SMALL_BATCH, GOAL_LARGE_BATCH = 3.0, 1.0


class LoopChunk:
  """One dispatch of the training loop's jitted chunk, exactly as `experiments.loop.train` issues it.

  Calling it trains `config.steps_per_dispatch` steps on the batches the loop's schedule picks next, and returns the
  chunk's per-step metrics (still on the device) for the timer to wait on.
  """

  def __init__(self, config: ml_collections.ConfigDict, task: loop.Task):
    # Any train data the loop takes (a dict of arrays or a Source with its own order), batched as the loop does.
    self.source = data_lib.as_source(task.train_data, 'train_data')
    self.config, self.task = config, task
    self.schedule = loop.Schedule.from_config(config, len(self.source))
    self.order = functools.lru_cache(maxsize=2)(lambda epoch: data_lib.epoch_order(self.source, config.seed, epoch))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self.stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, 'data'))
    parts = state_lib.build(config, task.build_model, self.schedule.total_steps)
    self.state = state_lib.initial_state(parts, config.seed, replicated)
    optimizer_key = steps.optimizer_key(config.optimizer, self.schedule.total_steps)
    self.train_chunk, _ = steps.jitted_steps(
      task.loss_fn, task.eval_fn, parts.train_def, parts.eval_def, optimizer_key, mesh
    )
    self.step = 0
    self.steps_per_call = config.steps_per_dispatch
    self.examples_per_call = self.steps_per_call * config.batch_size

  def next_batches(self):
    """The stacked batches of the next dispatch, on the device, as the loop builds them."""
    idx = self.schedule.indices(self.step, self.steps_per_call, self.order)
    stack = lambda source, i: data_lib.stack_padded([source.batch(row) for row in i])
    return data_lib.put_global(self.source, idx, self.stacked, 1, stack)

  def __call__(self):
    self.state, metrics = self.train_chunk(self.state, self.next_batches())
    self.step += self.steps_per_call
    return metrics


def synthetic_mnist(num_examples: int = NUM_TRAIN, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {
    'image': rng.integers(0, 256, (num_examples, IN_FEATURES), dtype=np.uint8),
    'label': rng.integers(0, 10, num_examples).astype(np.int32),
  }


def jax_candidate(norm: str, batch_size: int, data: dict[str, np.ndarray]) -> LoopChunk:
  config = mnist_config.get_config(f'norm={norm},batch_size={batch_size}')
  task = loop.Task(
    build_model=functools.partial(mnist.build_model, config.model, IN_FEATURES),
    loss_fn=mnist.loss_fn,
    eval_fn=mnist.eval_fn,
    train_data=data,
    eval_data={},
  )
  return LoopChunk(config, task)


def _torch_mlp(norm: str, hidden: tuple[int, ...], bn_momentum: float, eps: float) -> torch.nn.Module:
  layers = []
  sizes = [IN_FEATURES, *hidden]
  for a, b in itertools.pairwise(sizes):
    layers.append(torch.nn.Linear(a, b, bias=norm == 'none'))
    if norm == 'ln':
      layers.append(torch.nn.LayerNorm(b, eps=eps))
    elif norm == 'bn':
      # PyTorch's momentum weighs the new batch: flax's 0.99 decay is PyTorch's 0.01.
      layers.append(torch.nn.BatchNorm1d(b, eps=eps, momentum=1 - bn_momentum))
    layers.append(torch.nn.ReLU())
  layers.append(torch.nn.Linear(sizes[-1], 10, bias=norm != 'bn'))
  if norm == 'bn':
    layers.append(torch.nn.BatchNorm1d(10, eps=eps, momentum=1 - bn_momentum))
  model = torch.nn.Sequential(*layers)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.Linear):
        # flax's variance_scaling(2, fan_in, truncated_normal): N(0, 2/fan_in) truncated at 2 std, rescaled.
        std = math.sqrt(2.0 / m.in_features) / 0.87962566103423978
        torch.nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
        if m.bias is not None:
          m.bias.zero_()
  return model


class TorchChunk:
  """`steps` eager PyTorch training steps of the same model on the same batch order; runs at `threads` threads."""

  def __init__(self, config: ml_collections.ConfigDict, data: dict[str, np.ndarray], threads: int):
    torch.manual_seed(0)
    self.threads = threads
    self.model = _torch_mlp(
      config.model.norm, tuple(config.model.hidden_sizes), config.model.bn_momentum, config.model.eps
    ).train()
    opt = config.optimizer
    self.optimizer = torch.optim.Adam(
      self.model.parameters(), lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps
    )
    self.schedule = loop.Schedule.from_config(config, len(data['label']))
    self.images, self.labels = torch.from_numpy(data['image']), torch.from_numpy(data['label']).long()
    self.steps_per_call = config.steps_per_dispatch
    self.step = 0

  def __call__(self):
    torch.set_num_threads(self.threads)
    idx = torch.from_numpy(self.schedule.indices(self.step, self.steps_per_call))
    errors = []
    for i in range(self.steps_per_call):
      x = self.images[idx[i]].float() / 255.0
      y = self.labels[idx[i]]
      logits = self.model(x)
      loss = torch.nn.functional.cross_entropy(logits, y)
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      self.optimizer.step()
      errors.append((logits.detach().argmax(-1) != y).float().mean())
    self.step += self.steps_per_call
    return None


def measure(batch_size: int, norms: list[str], repeats: int, warmup: int, torch_threads: list[int]) -> list[dict]:
  data = synthetic_mnist()
  fns: dict[str, Callable] = {}
  examples: dict[str, int] = {}
  for norm in norms:
    chunk = jax_candidate(norm, batch_size, data)
    fns[f'jax {norm}'] = chunk
    examples[f'jax {norm}'] = chunk.examples_per_call
    for threads in torch_threads:
      tc = TorchChunk(chunk.config, data, threads)
      fns[f'torch{threads} {norm}'] = tc
      examples[f'torch{threads} {norm}'] = tc.steps_per_call * batch_size
  samples = timing.compare(fns, repeats=repeats, warmup=warmup)
  rows = []
  for name, s in samples.items():
    impl, norm = name.split(' ')
    rows.append(
      {
        'batch': batch_size,
        'norm': norm,
        'impl': impl,
        'steps_per_call': examples[name] // batch_size,
        'examples_per_s_median': examples[name] / s.median,
        'examples_per_s_best': examples[name] / s.min,
        'examples_per_s_worst': examples[name] / s.max,
        'ms_per_step_median': s.median / (examples[name] // batch_size) * 1e3,
        'samples_s': list(s.seconds),
      }
    )
  return rows


def summarize(rows: list[dict]) -> list[str]:
  out = []
  for r in rows:
    if r['impl'] != 'jax':
      continue
    torch_rows = [t for t in rows if t['batch'] == r['batch'] and t['norm'] == r['norm'] and t['impl'] != 'jax']
    if not torch_rows:
      continue
    best = max(torch_rows, key=lambda t: t['examples_per_s_median'])
    ratio = r['examples_per_s_median'] / best['examples_per_s_median']
    goal = GOAL_SMALL_BATCH if r['batch'] <= 4 else GOAL_LARGE_BATCH
    verdict = 'met' if ratio >= goal else 'NOT met'
    r['x_torch'], r['torch_best'] = ratio, best['impl']
    out.append(
      f'B={r["batch"]:<4} norm={r["norm"]:<4} jax {r["examples_per_s_median"]:9.0f} ex/s, best torch ({best["impl"]}) '
      f'{best["examples_per_s_median"]:9.0f} ex/s: {ratio:.2f}x (goal >= {goal}: {verdict})'
    )
  return out


def format_table(rows: list[dict]) -> str:
  header = ('B', 'norm', 'impl', 'steps/call', 'ex/s median', 'ex/s best', 'ex/s worst', 'ms/step median')
  lines = [
    (
      str(r['batch']),
      r['norm'],
      r['impl'],
      str(r['steps_per_call']),
      f'{r["examples_per_s_median"]:.0f}',
      f'{r["examples_per_s_best"]:.0f}',
      f'{r["examples_per_s_worst"]:.0f}',
      f'{r["ms_per_step_median"]:.3f}',
    )
    for r in rows
  ]
  return timing.text_table(header, lines, text_columns={1, 2})


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> None:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', default='4,128', help='batch sizes, comma-separated')
  parser.add_argument('--norms', default=','.join(NORMS), help='comma-separated: none, ln, bn')
  timing.add_sampling_arguments(parser, repeats=10, warmup=2)
  add_flag(parser, '--torch_threads', default='1,0', help='PyTorch thread counts to try; 0: its default')
  add_flag(parser, '--no_torch', action='store_true', help='skip PyTorch even when it is installed')
  args = parser.parse_args(argv)
  norms = [n.strip() for n in args.norms.split(',') if n.strip()]
  if not norms or any(n not in NORMS for n in norms):
    raise SystemExit(f'--norms: choose from {", ".join(NORMS)}; got {args.norms!r}.')
  batches = [int(b) for b in args.batch.split(',') if b.strip()]
  use_torch = torch is not None and not args.no_torch
  default_threads = torch.get_num_threads() if torch is not None else 0
  torch_threads = []
  if use_torch:
    wanted = [int(t) or default_threads for t in args.torch_threads.split(',') if t.strip()]
    torch_threads = list(dict.fromkeys(wanted))  # The default is 1 on one pinned core: time it once.

  env = environment(use_torch)
  env['torch_threads_default'] = default_threads if torch is not None else None
  env['torch_threads_tried'] = torch_threads
  software = (
    f'; torch {env["torch"]}, threads tried {torch_threads} (default {default_threads})' if use_torch else '; no torch'
  )
  timing.print_header('MNIST Figure 6 training throughput', env, software, f'{args.repeats} samples per candidate')

  rows = []
  for batch_size in batches:
    rows += measure(
      batch_size, [n for n in norms if n != 'bn' or batch_size >= 2], args.repeats, args.warmup, torch_threads
    )
    print(f'# measured batch {batch_size}', file=sys.stderr, flush=True)
  timing.print_results(env, format_table(rows))
  print('\n'.join(summarize(rows)))
  timing.write_json(args.json, {'environment': env, 'args': vars(args), 'rows': rows})


if __name__ == '__main__':
  sys.exit(main())
