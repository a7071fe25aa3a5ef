"""The loop's optimizer update (experiments.loop.fused_adam) is per-parameter optax, whichever path runs.

The native CPU update and the optax fallback are compared, over several steps, with `make_optimizer`'s own optax
transformation and `optax.apply_updates` for every configuration `make_optimizer` offers: each clipping rule, both
Adam variants, a constant rate and a warmed-up schedule. Gradients alternate between small and large (large enough
to clip) so that every clipping branch is taken.
"""

from __future__ import annotations

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.loop import fused_adam, optim
from experiments.loop.optim import GRAD_CLIPS

PARAMS = {
  'dense': {'kernel': jax.random.normal(jax.random.key(0), (37, 70)), 'bias': jnp.zeros(70)},
  'ln': {'scale': jnp.ones(33)},  # 33, 70, 37 * 70: no array a multiple of the kernel's 16 lanes.
}
STEPS = 5


def opt_config(**overrides):
  base = dict(
    name='adam',
    learning_rate=1e-2,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    bias_correction=True,
    grad_clip='none',
    grad_clip_norm=1.0,
    schedule='constant',
    warmup_steps=0,
  )
  return {**base, **overrides}


def gradients(step: int):
  key = jax.random.key(100 + step)
  scale = 3.0 if step % 2 else 0.01  # Above and below every clipping threshold in turn.
  leaves, treedef = jax.tree.flatten(PARAMS)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])


def run_optax(opt, total_steps=20):
  tx = optim.make_optimizer(opt, total_steps)
  params, state = PARAMS, tx.init(PARAMS)
  norms = []
  for step in range(STEPS):
    grads = gradients(step)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    norms.append([optax.tree.norm(grads), optax.tree.norm(updates), optax.tree.norm(params)])
  return params, state, np.array(norms)


def run_fused(opt, total_steps=20):
  tx = optim.make_optimizer(opt, total_steps)
  update = jax.jit(lambda g, s, p: fused_adam.apply(opt, total_steps, tx, g, s, p))
  params, state = PARAMS, tx.init(PARAMS)
  norms = []
  for step in range(STEPS):
    params, state, n = update(gradients(step), state, params)
    norms.append(list(n))
  return params, state, np.array(norms)


def assert_close_trees(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=True):
    g, w = np.asarray(g), np.asarray(w)
    assert g.dtype == w.dtype, path
    # Float rounding: a few ulps of the array's largest value after 5 steps (a bug is off by orders more).
    np.testing.assert_allclose(g, w, rtol=0, atol=2e-6 * max(np.abs(w).max(), 1e-30), err_msg=str(path))


CONFIGS = [
  opt_config(grad_clip=clip, bias_correction=bias_correction, **schedule)
  for clip, bias_correction, schedule in itertools.product(
    GRAD_CLIPS, (True, False), ({}, {'schedule': 'cosine', 'warmup_steps': 2}, {'schedule': 'linear_decay'})
  )
]


def config_id(opt) -> str:
  return f'{opt["grad_clip"]}-bc{int(opt["bias_correction"])}-{opt["schedule"]}'


@pytest.mark.parametrize('native', [True, False], ids=['native', 'optax'])
@pytest.mark.parametrize('opt', CONFIGS, ids=config_id)
def test_the_update_is_per_parameter_optax(opt, native, monkeypatch):
  monkeypatch.setenv('LAYERNORM_NATIVE', '1' if native else '0')
  assert fused_adam.native_applies(PARAMS) is native
  want_params, want_state, want_norms = run_optax(opt)
  got_params, got_state, got_norms = run_fused(opt)
  assert_close_trees(got_params, want_params)
  assert_close_trees(got_state, want_state)  # The same state layout too: checkpoints move between the paths.
  np.testing.assert_allclose(got_norms, want_norms, rtol=2e-6)


def test_clipping_changes_the_update():
  """Guards the comparison above: with a threshold the large gradients exceed, every rule moves the parameters
  differently from no clipping, so a kernel that ignored its clip code would fail the test above."""
  unclipped, _, _ = run_fused(opt_config())
  for clip in ('global_norm', 'per_tensor_norm', 'attentive_reader'):
    clipped, _, _ = run_fused(opt_config(grad_clip=clip))
    assert float(jnp.max(jnp.abs(clipped['dense']['kernel'] - unclipped['dense']['kernel']))) > 1e-4, clip


def test_the_native_update_works_in_place_on_donated_state():
  """In a jitted function that donates the state, as the loop's chunk does: the update aliases its inputs and
  returns the same values as without donation."""
  opt = opt_config(grad_clip='global_norm')
  tx = optim.make_optimizer(opt, 20)
  step = lambda carry, g: (fused_adam.apply(opt, 20, tx, g, carry[1], carry[0])[:2], None)
  run = jax.jit(lambda carry, gs: jax.lax.scan(step, carry, gs)[0], donate_argnums=0)
  grads = jax.tree.map(lambda *g: jnp.stack(g), *[gradients(s) for s in range(STEPS)])
  params, state = run((jax.tree.map(jnp.copy, PARAMS), tx.init(PARAMS)), grads)
  want_params, want_state, _ = run_optax(opt)
  assert_close_trees(params, want_params)
  assert_close_trees(state, want_state)


def test_other_dtypes_take_the_optax_path():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
  assert not fused_adam.native_applies(params)
  assert fused_adam.native_applies(PARAMS) == fused_adam._load()


@pytest.mark.parametrize('clip', ['global_norm', 'per_tensor_norm'])
def test_a_model_large_enough_for_the_thread_pool_gets_the_same_update(clip, monkeypatch):
  """Above 2^18 elements the kernel splits the work over XLA's thread pool: the same update as optax, and the same
  bits on every call (each piece's sums are added in a fixed order, whichever thread ran it)."""
  big = {'kernel': jax.random.normal(jax.random.key(1), (700, 400)), 'small': jnp.ones(3)}
  monkeypatch.setattr(sys.modules[__name__], 'PARAMS', big)
  opt = opt_config(grad_clip=clip)
  want_params, want_state, want_norms = run_optax(opt)
  got_params, got_state, got_norms = run_fused(opt)
  assert_close_trees(got_params, want_params)
  assert_close_trees(got_state, want_state)
  np.testing.assert_allclose(got_norms, want_norms, rtol=2e-6)
  again_params, again_state, again_norms = run_fused(opt)
  for a, b in zip(
    jax.tree.leaves((got_params, got_state, got_norms)),
    jax.tree.leaves((again_params, again_state, again_norms)),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)
