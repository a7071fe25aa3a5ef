"""`Task`: everything an experiment gives the loop. Plain functions and data; the loop does the rest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from experiments.loop.data import Source
from experiments.loop.evaluation import Evaluator

Batch = dict[str, jax.Array]
Data = Source | Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
  """What an experiment gives the loop.

  Attributes:
    build_model: makes the model from `nnx.Rngs`; its `nnx.Param`s are trained, every other variable (BatchNorm
      statistics) is carried along and checkpointed. The Rngs serve initialisation only: no random stream is kept in
      the model or its checkpoints.
    loss_fn: (model in train mode, batch, rng) -> (scalar training loss, {name: scalar} extra metrics). It may update
      the model's non-parameter variables (BatchNorm statistics). `rng` is the step's key, `fold_in(run key, step)`:
      draw dropout masks and samples from it, so that every step has its own noise and a resumed run the same.
    eval_fn: (model in eval mode, batch, rng) -> {name: per-example values [B], or (values [B], weights [B])}; the
      loop takes the mean over each split of `eval_data`, sum(w * v) / sum(w) for a pair (a token-level NLL: each
      sequence's mean NLL per token, weighted by its token count). None if the task only has `evaluators`.
    train_data: a dict of arrays with a common leading (example) dimension, or a `Source` (see
      `experiments.loop.data`: batches built on the host from example indices, memory-mapped arrays).
    eval_data: {split name: the same kinds}, evaluated in this order.
    evaluators: {name: (model in eval mode, EvalContext) -> {metric: scalar}}: whole-split or host-side evaluation,
      logged as `eval/<name>/<metric>`.
    final_only: names of eval splits or evaluators run only once, after the last step, on the selected model
      (`config.best_metric`; the last one otherwise): e.g. ('test',).
    metadata: JSON-able facts the model needs besides its weights (vocabulary, input sizes, normalization
      statistics), written to the workdir's task.json so that scripts rebuild the model without the data set.
  """

  build_model: Callable[[nnx.Rngs], nnx.Module]
  loss_fn: Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
  eval_fn: Callable[[nnx.Module, Batch, jax.Array], dict[str, Any]] | None
  train_data: Data
  eval_data: Mapping[str, Data] = dataclasses.field(default_factory=dict)
  evaluators: Mapping[str, Evaluator] = dataclasses.field(default_factory=dict)
  final_only: tuple[str, ...] = ()
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
