"""`make_optimizer`: Adam as each of the paper's code bases ran it, with their gradient clipping and a schedule.

`config.optimizer` fields (defaults in `configs/common.py`; `optimizer_problems` checks them):
  name             'adam' (the one optimizer of every experiment in the paper)
  learning_rate    the peak learning rate
  b1, b2, eps      Adam's moment decays and denominator epsilon (eps added to sqrt(v), as in the papers' code)
  bias_correction  True: Adam as published (optax.adam). False: the order-embedding and skip-thoughts Theano code's
                   Adam, which writes the decays as 1 - b (0.1, 0.001) and corrects by (1 - 0.1^t), (1 - 0.001^t):
                   lr_t = lr * sqrt(1 - (1 - b2)^t) / (1 - (1 - b1)^t), i.e. effectively no bias correction.
  grad_clip        'none'; 'global_norm' (all gradients scaled together to L2 norm <= grad_clip_norm; skip-thoughts:
                   5); 'per_tensor_norm' (each tensor's gradient to L2 norm <= grad_clip_norm on its own;
                   order-embeddings: 2); 'attentive_reader' (docs/paper.md, section 2: with n the global L2 norm,
                   every gradient times c / sqrt(n) when n > c^2, c = grad_clip_norm)
  grad_clip_norm   the clipping threshold c
  schedule         'constant', 'cosine' (to 0 at the last step) or 'linear_decay' (to 0 at the last step), after
                   `warmup_steps` of linear warm-up from 0
  warmup_steps     0 for none
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('adam',)
GRAD_CLIPS = ('none', 'global_norm', 'per_tensor_norm', 'attentive_reader')
SCHEDULES = ('constant', 'cosine', 'linear_decay')


def optimizer_problems(opt: ml_collections.ConfigDict, prefix: str = 'optimizer') -> list[str]:
  """Problems with `config.optimizer`, each naming the field and the fix."""
  problems = []
  is_real = lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
  checks = {
    'name': (lambda v: v in OPTIMIZERS, f'one of {", ".join(OPTIMIZERS)}', 'adam'),
    'learning_rate': (lambda v: is_real(v) and v > 0, 'a positive number', 1e-3),
    'b1': (lambda v: is_real(v) and 0 <= v < 1, 'in [0, 1)', 0.9),
    'b2': (lambda v: is_real(v) and 0 <= v < 1, 'in [0, 1)', 0.999),
    'eps': (lambda v: is_real(v) and v > 0, 'a positive number', 1e-8),
    'bias_correction': (lambda v: isinstance(v, bool), 'true or false', 'true'),
    'grad_clip': (lambda v: v in GRAD_CLIPS, f'one of {", ".join(GRAD_CLIPS)}', 'global_norm'),
    'grad_clip_norm': (lambda v: is_real(v) and v >= 0, '>= 0', 5.0),
    'schedule': (lambda v: v in SCHEDULES, f'one of {", ".join(SCHEDULES)}', 'constant'),
    'warmup_steps': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, 'an int >= 0', 0),
  }
  for key, (ok, requirement, example) in checks.items():
    if key not in opt:
      problems.append(f'config.{prefix}.{key} is missing: start the config from configs.common.base_config().')
    elif not ok(opt[key]):
      problems.append(
        f'config.{prefix}.{key} must be {requirement}; got {opt[key]!r}. Fix: e.g. --config.{prefix}.{key}={example}'
      )
  if not problems and opt.grad_clip != 'none' and opt.grad_clip_norm <= 0:
    problems.append(
      f'config.{prefix}.grad_clip={opt.grad_clip!r} needs a positive grad_clip_norm; got {opt.grad_clip_norm!r}. '
      f'Fix: e.g. --config.{prefix}.grad_clip_norm=5, or --config.{prefix}.grad_clip=none.'
    )
  return problems


def learning_rate_schedule(opt: Mapping, total_steps: int) -> optax.Schedule:
  """The learning rate at each update: `opt.schedule` after `opt.warmup_steps` of linear warm-up."""
  lr, warmup = opt['learning_rate'], opt['warmup_steps']
  decay_steps = max(total_steps - warmup, 1)
  if opt['schedule'] == 'constant':
    after = optax.constant_schedule(lr)
  elif opt['schedule'] == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    after = optax.linear_schedule(lr, 0.0, decay_steps)
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def clip_per_tensor_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales each gradient tensor on its own to an L2 norm of at most `max_norm` (the order-embedding code)."""

  def update(updates, state, params=None):
    del params

    def clip(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g)))
      return jnp.where(norm > max_norm, g * (max_norm / jnp.maximum(norm, 1e-30)), g)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clip_attentive_reader(c: float) -> optax.GradientTransformation:
  """The attentive reader code's rule: n = global L2 norm; if n > c^2, every gradient times c / sqrt(n)."""

  def update(updates, state, params=None):
    del params
    n = optax.tree.norm(updates)
    factor = jnp.where(n > c * c, c / jnp.sqrt(jnp.maximum(n, 1e-30)), 1.0)
    return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class _TheanoAdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_theano_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """The order-embedding / skip-thoughts code's Adam direction, before the learning rate (see the module docstring).

  m_t = b1 m + (1 - b1) g, v_t = b2 v + (1 - b2) g^2, direction m_t / (sqrt(v_t) + eps), times
  sqrt(1 - (1 - b2)^t) / (1 - (1 - b1)^t): the code's "bias correction" with its decays written as 1 - b.
  """

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return _TheanoAdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    t = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    tf = t.astype(jnp.float32)
    factor = jnp.sqrt(1 - (1 - b2) ** tf) / (1 - (1 - b1) ** tf)
    direction = jax.tree.map(lambda m, v: factor * m / (jnp.sqrt(v) + eps), mu, nu)
    return direction, _TheanoAdamState(t, mu, nu)

  return optax.GradientTransformation(init, update)


def make_optimizer(opt: Mapping, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation for `config.optimizer` (see the module docstring) over a run of `total_steps`.

  Always the chain (clipping, Adam's direction, the learning rate), per parameter array, with `optax.identity()` where
  there is no clipping: one state layout for every configuration, which `experiments.loop.fused_adam` updates in one
  native pass on CPU (the loop's step calls `fused_adam.apply`, never this transformation's `update`, on CPU).

  Why not `optax.flatten` (all parameters concatenated into one vector, which ran here from e67e2e5): it made the
  attentive reader's step 5% faster and every model with a large weight matrix slower, MNIST's by 3-10x. XLA:CPU
  emits the concatenate of many arrays as one loop with a per-element choice of operand, unvectorised, with the bias
  gradients' reductions fused into it: 27 ms of a 30 ms step at batch 4 (benchmarks/README.md, "The regression
  table"). The native update makes no copy at all and is faster than both layouts on every experiment.
  """
  opt = ml_collections.ConfigDict(dict(opt))
  if opt.grad_clip == 'global_norm':
    clip = optax.clip_by_global_norm(opt.grad_clip_norm)
  elif opt.grad_clip == 'attentive_reader':
    clip = clip_attentive_reader(opt.grad_clip_norm)
  elif opt.grad_clip == 'per_tensor_norm':
    clip = clip_per_tensor_norm(opt.grad_clip_norm)
  else:
    clip = optax.identity()
  if opt.bias_correction:
    direction = optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps)
  else:
    direction = scale_by_theano_adam(opt.b1, opt.b2, opt.eps)
  if opt.schedule == 'constant' and opt.warmup_steps == 0:
    rate = optax.scale(-opt.learning_rate)  # As optax.adam does it: no step counter in the state.
  else:
    rate = optax.scale_by_learning_rate(learning_rate_schedule(opt, total_steps))
  return optax.chain(clip, direction, rate)
