"""The model and its training state: built once per config, initialised from the seed, placed on devices.

The state is a plain dict {params, rest, opt_state, step, rng}: `params` are the model's `nnx.Param`s (trained),
`rest` every other variable (BatchNorm statistics; carried along and checkpointed), `rng` the key data of the run's
training key. No random stream lives in the model: a step's randomness is `fold_in(training key, step)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import NamedSharding

from experiments.loop import optim


def model_rngs(seed: int | jax.Array) -> nnx.Rngs:
  """The `nnx.Rngs` the loop builds the model with (exposed so tests and scripts can rebuild the same init)."""
  return nnx.Rngs(jax.random.fold_in(jax.random.key(seed), 0))


def train_key(seed: int | jax.Array) -> jax.Array:
  """The run's training key; step `s` draws from `fold_in(train_key(seed), s)`."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def eval_key(seed: int) -> jax.Array:
  """The evaluation key; batch b of split i at step s draws from fold_in(fold_in(fold_in(key, i), s), b)."""
  return jax.random.fold_in(jax.random.key(seed), 2)


@dataclasses.dataclass(frozen=True)
class Parts:
  train_def: nnx.GraphDef  # The model's structure in train mode (BatchNorm on batch statistics) ...
  eval_def: nnx.GraphDef  # ... and in eval mode (on running averages).
  tx: optax.GradientTransformation
  init: Callable[[int], dict[str, Any]]  # Pure: seed -> the initial state {params, rest, opt_state, step, rng}.
  abstract_state: dict[str, Any]  # Its shapes and dtypes.


def build(config: ml_collections.ConfigDict, build_model: Callable[[nnx.Rngs], nnx.Module], total_steps: int) -> Parts:
  """The model's two graph definitions, the optimizer and the (abstract) initial state of a run of `config`."""
  tx = optim.make_optimizer(config.optimizer, total_steps)
  defs = {}

  def init(seed):
    # Traced (under jit or eval_shape): one compile for the whole initialisation instead of one per eager op, and
    # no compile at all when only the shapes are needed (resuming, `load_model`). The seed is an argument: with
    # every input a constant, XLA would constant-fold the whole random initialisation at compile time, slowly.
    model = build_model(model_rngs(seed))
    model.eval()
    defs['eval'] = nnx.split(model, nnx.Param, ...)[0]
    model.train()
    defs['train'], params, rest = nnx.split(model, nnx.Param, ...)
    return {
      'params': params,
      'rest': rest,  # Every non-parameter variable: BatchNorm statistics.
      'opt_state': tx.init(params),
      'step': jnp.zeros((), jnp.int32),
      'rng': jax.random.key_data(train_key(seed)),
    }

  abstract = jax.eval_shape(init, config.seed)
  return Parts(defs['train'], defs['eval'], tx, init, abstract)


def initial_state(parts: Parts, seed: int, sharding: NamedSharding | None = None) -> dict[str, Any]:
  # Compiled without LLVM optimisation: it runs once, and its unrolled random-number hashing otherwise takes seconds
  # to compile (0.5 s against 4 s for the smoke MLP on a busy 2-core machine).
  init = jax.jit(parts.init, out_shardings=sharding).lower(seed)
  return init.compile(compiler_options={'xla_backend_optimization_level': 0})(seed)


def abstract_on(parts: Parts, sharding) -> dict[str, Any]:
  """The state's ShapeDtypeStructs placed with `sharding` (what a checkpoint restores into)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), parts.abstract_state)
