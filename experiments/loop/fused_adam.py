"""The optimizer update of a training step, with the norms the loop logs: one native pass on CPU, optax elsewhere.

`apply(opt, total_steps, tx, grads, opt_state, params)` returns the new parameters, the new optimizer state and the
norms (|g| before clipping, |u|, |p'|). Its result is `make_optimizer`'s per-parameter optax update, whichever path
runs:

- On CPU with float32 parameters: `csrc/adam_cpu.cc`, one FFI call for all parameter arrays, which reads and writes
  each array once, in place, and sums the norms on the way (see the file for why: at MNIST's batch 4 the optax update
  and the loop's norms were 9 passes over the 1000x1000 layer per step).
- Elsewhere (GPU, other dtypes, `LAYERNORM_NATIVE=0`, no compiler): `tx.update`, `optax.apply_updates` and
  `optax.tree.norm`, which XLA fuses well enough off CPU.

Both keep the same optimizer state (optax's per-parameter layout of `make_optimizer`), so a checkpoint moves between
them. The two agree to float32 rounding (tests/test_optimizer.py), not bit for bit: a division by 1 - b1^t is a
multiplication by its reciprocal here, and the norms are summed in double precision.

Trade-off: a second implementation of Adam and its clipping rules to keep equal to optax's (tested against it for
every configuration `make_optimizer` offers), against the loop's step within a few percent of a minimal optax step.
"""

from __future__ import annotations

import functools
import subprocess
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layernorm import native

SOURCES = (Path(__file__).parent / 'csrc' / 'adam_cpu.cc',)
TARGET = ('loop_adam_update_f32', 'AdamUpdateF32')
CLIP_CODES = {'none': 0, 'global_norm': 1, 'per_tensor_norm': 2, 'attentive_reader': 3}


class Norms(NamedTuple):
  grad: jax.Array  # |g|, before clipping
  update: jax.Array  # |u| = |p' - p|
  param: jax.Array  # |p'|


@functools.cache
def _load() -> bool:
  try:
    native.register_library('loop_adam_cpu', SOURCES, (TARGET,), extra_flags=('-fno-math-errno',))
  except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as error:
    warnings.warn(
      f'experiments.loop: the native optimizer update is unavailable ({error}); using optax, slower on CPU.',
      RuntimeWarning,
      stacklevel=3,
    )
    return False
  return True


def native_applies(params) -> bool:
  """Whether the native update runs for these parameters: on CPU, allowed by LAYERNORM_NATIVE, all float32, built."""
  leaves = jax.tree.leaves(params)
  return (
    jax.default_backend() == 'cpu'
    and native.enabled()
    and bool(leaves)
    and all(leaf.dtype == jnp.float32 for leaf in leaves)
    and _load()
  )


def apply(opt, total_steps: int, tx: optax.GradientTransformation, grads, opt_state, params):
  """(params', opt_state', Norms) after one update of `tx` = `make_optimizer(opt, total_steps)`."""
  if not (native_applies(params) and _is_make_optimizer_state(opt_state)):
    updates, new_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    return new_params, new_state, Norms(optax.tree.norm(grads), optax.tree.norm(updates), optax.tree.norm(new_params))
  return _native_apply(opt, total_steps, grads, opt_state, params)


def _is_make_optimizer_state(opt_state) -> bool:
  """Whether the state has `make_optimizer`'s layout (clipping, Adam with mu and nu, rate): a transformation built
  another way (a test's, a user's) takes the optax path."""
  return (
    isinstance(opt_state, tuple)
    and len(opt_state) == 3
    and all(hasattr(opt_state[1], name) for name in ('count', 'mu', 'nu'))
    and isinstance(opt_state[2], optax.EmptyState | optax.ScaleByScheduleState)
  )


def _native_apply(opt, total_steps, grads, opt_state, params):
  # Imported here: optim imports this module.
  from experiments.loop import optim

  clip_state, adam_state, lr_state = opt_state
  t = optax.safe_increment(adam_state.count)
  tf = t.astype(jnp.float32)
  b1, b2 = opt['b1'], opt['b2']
  if opt['bias_correction']:  # optax.scale_by_adam: mu / (1 - b1^t), nu / (1 - b2^t).
    a, b = 1 / (1 - b1**tf), 1 / (1 - b2**tf)
  else:  # optim.scale_by_theano_adam: its factor on mu, nu uncorrected.
    a, b = jnp.sqrt(1 - (1 - b2) ** tf) / (1 - (1 - b1) ** tf), jnp.ones((), jnp.float32)
  if isinstance(lr_state, optax.ScaleByScheduleState):
    lr = optim.learning_rate_schedule(opt, total_steps)(lr_state.count)
    lr_state = optax.ScaleByScheduleState(count=optax.safe_increment(lr_state.count))
  else:
    lr = jnp.asarray(opt['learning_rate'], jnp.float32)
  clip = opt['grad_clip']
  hyper = jnp.stack(
    [jnp.asarray(v, jnp.float32) for v in (lr, b1, b2, opt['eps'], a, b, opt['grad_clip_norm'], 1 - b1, 1 - b2)]
  )

  p_leaves, treedef = jax.tree.flatten(params)
  g_leaves = treedef.flatten_up_to(grads)
  mu_leaves = treedef.flatten_up_to(adam_state.mu)
  nu_leaves = treedef.flatten_up_to(adam_state.nu)
  operands, results, aliases = [hyper], [], {}
  for i, group in enumerate(zip(p_leaves, g_leaves, mu_leaves, nu_leaves, strict=True)):
    operands += group
    for k, j in ((0, 0), (2, 1), (3, 2)):  # param -> param', mu -> mu', nu -> nu': updated in place.
      aliases[1 + 4 * i + k] = 3 * i + j
    results += [jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (group[0], group[2], group[3])]
  results.append(jax.ShapeDtypeStruct((3,), jnp.float32))
  call = jax.ffi.ffi_call(TARGET[0], results, input_output_aliases=aliases)
  out = call(*operands, clip=np.int64(CLIP_CODES[clip]))
  new_params = jax.tree.unflatten(treedef, out[0:-1:3])
  mu = jax.tree.unflatten(treedef, out[1:-1:3])
  nu = jax.tree.unflatten(treedef, out[2:-1:3])
  norms = out[-1]
  new_adam = type(adam_state)(count=t, mu=mu, nu=nu)
  return new_params, (clip_state, new_adam, lr_state), Norms(norms[0], norms[1], norms[2])
