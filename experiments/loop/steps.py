"""The jitted steps: a chunk of training steps in one `lax.scan`, and one evaluation batch.

Pure functions of their arguments, compiled once per (task functions, model structure, optimizer, mesh) and shared
by every run in the process with the same key (a resume in a notebook, a sweep in one process, the tests).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.loop import fused_adam, optim

# Metrics the loop adds to the task's; a NaN or Inf in any of these stops the run.
GUARDED_METRICS = ('loss', 'grad_norm', 'param_norm', 'update_norm')


def optimizer_key(optimizer_config, total_steps: int) -> str:
  """A hashable, exact key for the jit cache: the optimizer's fields (nested ones too) and the schedule's length."""
  return json.dumps({'optimizer': optimizer_config.to_dict(), 'total_steps': total_steps}, sort_keys=True)


def step_rng(state_rng: jax.Array, step: jax.Array) -> jax.Array:
  """The randomness of training step `step` (dropout, sampling): a function of the run's key and the step alone."""
  return jax.random.fold_in(jax.random.wrap_key_data(state_rng), step)


def _per_example(name: str, value, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum of values, sum of weights) over the unmasked examples; `value` is [B] or ([B] values, [B] weights)."""
  values, weights = value if isinstance(value, tuple) else (value, None)
  if jnp.shape(values) != mask.shape or (weights is not None and jnp.shape(weights) != mask.shape):
    raise ValueError(
      f'Task.eval_fn must return per-example values [{mask.shape[0]}] (or a (values, weights) pair of them); '
      f'{name!r} has {jnp.shape(values)}.'
    )
  weights = jnp.ones(mask.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  weights = jnp.where(mask, weights, 0.0)
  return jnp.sum(weights * values.astype(jnp.float32)), jnp.sum(weights)


@functools.lru_cache(maxsize=16)
def jitted_steps(
  loss_fn: Callable, eval_fn: Callable | None, train_def: nnx.GraphDef, eval_def: nnx.GraphDef, opt_key: str, mesh
) -> tuple[Callable, Callable]:
  """The jitted training chunk and eval batch for this key (`opt_key` from `optimizer_key`)."""
  spec = json.loads(opt_key)
  tx = optim.make_optimizer(spec['optimizer'], spec['total_steps'])

  def one_step(state, batch):
    step = state['step']
    rng = step_rng(state['rng'], step)

    def loss_of(params, rest):
      # NNX lets a trace mutate only the variables created in it, and `grad` passes `rest` (not differentiated) in
      # as is: rebuilding it here gives BatchNorm fresh variables it may update.
      model = nnx.merge(train_def, params, jax.tree.map(lambda x: x, rest))
      loss, extra = loss_fn(model, batch, rng)
      return loss, (extra, nnx.split(model, nnx.Param, ...)[2])

    (loss, (extra, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(state['params'], state['rest'])
    if jnp.shape(loss) != ():
      raise ValueError(f'Task.loss_fn must return a scalar loss; got shape {jnp.shape(loss)}.')
    for name, value in extra.items():
      if jnp.shape(value) != () or name in GUARDED_METRICS:
        raise ValueError(f'Task.loss_fn extra metric {name!r} must be a scalar not named {GUARDED_METRICS}.')
    # Clipping, Adam, the learning rate, the new parameters and their norms: one native pass on CPU.
    params, opt_state, norms = fused_adam.apply(
      spec['optimizer'], spec['total_steps'], tx, grads, state['opt_state'], state['params']
    )
    metrics = {
      'loss': loss,
      **extra,
      'grad_norm': norms.grad,
      'param_norm': norms.param,
      'update_norm': norms.update,
    }
    new_state = {'params': params, 'rest': rest, 'opt_state': opt_state, 'step': step + 1, 'rng': state['rng']}
    return new_state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

  def train_chunk(state, batches):
    return jax.lax.scan(one_step, state, batches)

  def eval_batch(params, rest, batch, mask, eval_key, split_index, step, batch_index):
    rng = jax.random.wrap_key_data(eval_key)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, split_index), step), batch_index)
    values = eval_fn(nnx.merge(eval_def, params, rest), batch, rng)
    return {name: _per_example(name, v, mask) for name, v in values.items()}

  replicated = NamedSharding(mesh, P())
  train_chunk = jax.jit(
    train_chunk,
    in_shardings=(replicated, NamedSharding(mesh, P(None, 'data'))),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )
  return train_chunk, jax.jit(eval_batch, out_shardings=replicated)
