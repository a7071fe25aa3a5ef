"""Step arithmetic: which examples each step sees, and where the stop points (log, evaluate, checkpoint) are.

Steps are counted from 0 (before training) to `total_steps` (after the last update). The data order of epoch `e` is
`default_rng([seed, e]).permutation(n)` with the last partial batch dropped, so the batch a step sees is a function
of (seed, step) alone and a resumed run sees the same batches. Every periodic action uses one predicate:
`step % every == 0 or step == total_steps`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import ml_collections
import numpy as np

from experiments.loop.errors import ConfigError


@functools.lru_cache(maxsize=2)
def uniform_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The default data order of an epoch: a permutation drawn from (seed, epoch) alone."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When things happen, in steps."""

  seed: int
  num_examples: int
  batch_size: int
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int  # eval_every_steps, or eval_every_epochs * steps_per_epoch.
  checkpoint_every: int
  keep_every: int = 0  # Checkpoints at multiples of this are kept for good (0: none).

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_examples: int) -> Schedule:
    steps_per_epoch = num_examples // config.batch_size
    if steps_per_epoch == 0:
      raise ConfigError(
        f'config.batch_size={config.batch_size} is larger than the training set ({num_examples} examples). '
        'Fix: a smaller --config.batch_size.'
      )
    total = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    eval_steps = config.get('eval_every_steps', 0) or 0
    return cls(
      seed=config.seed,
      num_examples=num_examples,
      batch_size=config.batch_size,
      steps_per_epoch=steps_per_epoch,
      total_steps=total,
      log_every=config.log_every_steps,
      eval_every=eval_steps if eval_steps > 0 else config.eval_every_epochs * steps_per_epoch,
      checkpoint_every=config.checkpoint_every_steps,
      keep_every=config.get('keep_every_steps', 0) or 0,
    )

  def _due(self, step: int, every: int) -> bool:
    return step % every == 0 or step == self.total_steps

  def is_log(self, step: int) -> bool:
    return self._due(step, self.log_every)

  def is_eval(self, step: int) -> bool:
    return self._due(step, self.eval_every)

  def is_checkpoint(self, step: int) -> bool:
    return self._due(step, self.checkpoint_every) or self.is_kept(step)

  def is_kept(self, step: int) -> bool:
    """A checkpoint kept for good (for curves of scores over training), besides the newest few."""
    return self.keep_every > 0 and step % self.keep_every == 0

  def next_stop(self, step: int) -> int:
    nxt = lambda every: (step // every + 1) * every
    everies = [self.log_every, self.eval_every, self.checkpoint_every] + ([self.keep_every] if self.keep_every else [])
    return min(*(nxt(e) for e in everies), self.total_steps)

  def epoch(self, step: int) -> int | float:
    """The epoch count after `step` steps: an int at epoch ends, else a float."""
    epoch = step / self.steps_per_epoch
    return step // self.steps_per_epoch if step % self.steps_per_epoch == 0 else epoch

  def indices(self, first_step: int, num_steps: int, order: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Example indices [num_steps, batch_size] of the batches of steps first_step + 1 ... first_step + num_steps.

    Args:
      order: epoch -> the permutation of the examples in that epoch (cache it: it is asked once per step); by
        default `uniform_order`.
    """
    order = order or functools.partial(uniform_order, self.seed, num_examples=self.num_examples)
    rows = []
    for s in range(first_step, first_step + num_steps):
      epoch, i = divmod(s, self.steps_per_epoch)
      rows.append(order(epoch)[i * self.batch_size : (i + 1) * self.batch_size])
    return np.stack(rows)


def chunk_size(remaining: int, steps_per_dispatch: int) -> int:
  """Steps for the next dispatch: the full stack, else the largest power of two that fits before the stop point.

  Powers of two bound the number of compiled variants (log2 of steps_per_dispatch of them), where any remainder
  would compile anew; the decomposition depends only on the stop points, so a resumed run dispatches the same way.
  """
  if remaining >= steps_per_dispatch:
    return steps_per_dispatch
  return 1 << (remaining.bit_length() - 1)
