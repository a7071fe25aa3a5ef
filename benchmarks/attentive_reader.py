"""The attentive reader's training step: LN-LSTM reader against the plain-LSTM reader, side by side in one process.

    nice -n 10 .venv/bin/python -m benchmarks.attentive_reader [--repeats 10] [--norms none,ln,bn]

Each candidate is one jitted training step (forward, backward, Adam with the code's clipping) of the CPU-scale
config (`configs/attentive_reader.py`: dim 128, batch 64, procedural passages padded to 42 tokens), on the same
batch, timed round-robin by `benchmarks.timing.compare`. Reports ms per step, examples/s and the cost relative to
the first norm. The PyTorch comparison of the issue is not here (torch is not in requirements.txt; see README).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from benchmarks import timing
from configs import attentive_reader as ar_config
from experiments import attentive_reader as ar
from experiments.loop import make_optimizer


class Step:
  """One jitted training step of the reader of `norm`; calling it trains once on a fixed batch."""

  def __init__(self, norm: str, data):
    config = ar_config.get_config(f'norm={norm}')
    task = ar.build_task(config, data)
    self.model = task.build_model(nnx.Rngs(0))
    self.optimizer = nnx.Optimizer(self.model, make_optimizer(config.optimizer, 1_000), wrt=nnx.Param)
    self.batch = jax.device_put(task.train_data.batch(np.arange(config.batch_size)))
    self.batch_size = config.batch_size
    self.key = jax.random.key(0)

    @nnx.jit
    def step(model, optimizer, batch, key):
      (loss, _), grads = nnx.value_and_grad(lambda m: task.loss_fn(m, batch, key), has_aux=True)(model)
      optimizer.update(model, grads)
      return loss

    self._step = step

  def __call__(self):
    return self._step(self.model, self.optimizer, self.batch, self.key)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--norms', default='none,ln')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  args = parser.parse_args(argv)
  norms = args.norms.split(',')
  data = ar.load_data(ar_config.get_config().data)
  steps = {norm: Step(norm, data) for norm in norms}
  samples = timing.compare(steps, repeats=args.repeats, warmup=args.warmup)
  base = samples[norms[0]].median
  print(f'{"norm":<14} {"ms/step (median)":>17} {"min":>8} {"examples/s":>11} {"vs " + norms[0]:>9}')
  for norm, s in samples.items():
    rate = steps[norm].batch_size / s.median
    print(f'{norm:<14} {1e3 * s.median:>17.1f} {1e3 * s.min:>8.1f} {rate:>11.0f} {s.median / base - 1:>+8.1%}')


if __name__ == '__main__':
  main()
