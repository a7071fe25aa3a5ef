"""Evaluation: per-example metrics averaged over whole splits, and whole-split evaluators that run on the host.

Two kinds, both returning scalars logged as `eval/<name>/<metric>`:
* `Task.eval_fn` on each split of `Task.eval_data`, in batches of `config.eval_batch_size` (the last one padded by
  repeating a real example and masked out, so every example counts once). A metric is either per-example values [B]
  (a plain mean over the split) or a (values [B], weights [B]) pair, whose mean is sum(w * v) / sum(w) over the
  split: a token-level NLL returns each sequence's mean NLL per token with its token count as the weight, and gets
  the sum over all tokens / the number of tokens (not a mean of per-sequence means).
* `Task.evaluators[name](model, context)`: anything that needs a whole split at once or host-side code (retrieval
  R@K over folds, scikit-learn classifiers on frozen features, samples written as PNGs), with the model in eval mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.loop import data as data_lib
from experiments.loop.checkpoints import to_host


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What an evaluator may use besides the model."""

  step: int  # The training step of the model being evaluated.
  workdir: str  # Where pictures may go (write only when `is_writer`).
  rng: jax.Array  # A key for this evaluator at this step (the same on a resumed run).
  final: bool  # True for the end-of-run evaluation (on the best model, if the run selects one).
  is_writer: bool  # Process 0 of a multi-host run: the one that writes files.


Evaluator = Callable[[nnx.Module, EvalContext], Mapping[str, float]]


def evaluate_splits(
  state: dict,
  step: int,
  splits: Mapping[str, data_lib.Source],
  names: Iterable[str],
  eval_batch: Callable,
  eval_key: np.ndarray,
  batch_size: int,
  mesh: jax.sharding.Mesh,
) -> dict[str, float]:
  """`eval/<split>/<metric>` for each split in `names`: the (weighted) mean of `eval_fn`'s values over the split."""
  num_devices = mesh.devices.size
  sharding = NamedSharding(mesh, P('data'))
  split_index = {name: i for i, name in enumerate(splits)}  # Fixed by the task's order, whichever are evaluated.
  results = {}
  for split in names:
    source = splits[split]
    n = len(source)
    size = -(-min(batch_size, n) // num_devices) * num_devices
    sums = []
    for batch_index, start in enumerate(range(0, n, size)):
      idx = np.arange(start, start + size)
      mask = idx < n
      idx = np.where(mask, idx, 0)  # Padding repeats a real example (masked out), never NaN-prone zeros.
      batch = data_lib.put_global(source, idx, sharding, 0, lambda s, i: s.batch(i))
      mask = jax.device_put(mask, sharding) if jax.process_count() == 1 else data_lib.put_mask(mask, sharding)
      args = (batch, mask, eval_key, split_index[split], step, batch_index)
      sums.append(eval_batch(state['params'], state['rest'], *args))
    # Summed on the host, in float64, once the device is done: no extra dispatch or compile per batch.
    sums = [jax.tree.map(to_host, s) for s in sums]
    for name in sums[0]:
      total = math.fsum(float(s[name][0]) for s in sums)
      weight = math.fsum(float(s[name][1]) for s in sums)
      results[f'eval/{split}/{name}'] = total / weight if weight else float('nan')
  return results


def run_evaluators(
  model: nnx.Module, evaluators: Mapping[str, Evaluator], names: Iterable[str], context: EvalContext, seed_key
) -> dict[str, float]:
  """`eval/<name>/<metric>` for each evaluator in `names`, run on `model` (in eval mode)."""
  results = {}
  for i, name in enumerate(evaluators):
    if name not in names:
      continue
    rng = jax.random.fold_in(jax.random.fold_in(seed_key, 1_000 + i), context.step)
    values = evaluators[name](model, dataclasses.replace(context, rng=rng))
    for metric, value in values.items():
      results[f'eval/{name}/{metric}'] = float(value)
  return results
