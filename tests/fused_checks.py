"""What tests/test_fused_lstm.py and tests/test_fused_gru.py check alike about `unroll`'s fused path
(`layernorm.fused_rnn`): the sizes, random data, a loss of every output and of the final carry with its gradients,
the comparison with the scan against float64, the jnp step path against the native one, and the hoisted projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import native, unroll

B, T, D, H = 5, 7, 6, 20  # H = 20: rows that are not a multiple of the kernels' 16-float vectors.
LENGTHS = np.array([7, 3, 0, 1, 6])  # A full, a short, an empty and a one-step example.


def randn(seed, shape, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def random_carry(cell, seed=2, scale=1.0):
  """A random carry of the cell's structure for batch B: (c, h) for the LSTMs, h for the GRUs."""
  zeros = cell.initialize_carry((B, D))
  leaves, treedef = jax.tree.flatten(zeros)
  return jax.tree.unflatten(treedef, [randn(seed + i, a.shape, scale) for i, a in enumerate(leaves)])


def loss_and_grads(cell, xs, carry, lengths, impl, time_major=False):
  """A loss of every output and of the final carry, its value, (final carry, outputs), and its gradients wrt the
  parameters, inputs and initial carry."""
  graphdef, params = nnx.split(cell)
  ct_ys = randn(40, (T, B, H) if time_major else (B, T, H)).astype(xs.dtype)
  ct_carry = [randn(41 + i, (B, H)).astype(xs.dtype) for i in range(len(jax.tree.leaves(carry)))]

  def loss(params, xs, carry):
    new_carry, ys = unroll(
      nnx.merge(graphdef, params), xs, carry=carry, seq_lengths=lengths, time_major=time_major, impl=impl
    )
    carry_terms = sum(jnp.sum(a * ct) for a, ct in zip(jax.tree.leaves(new_carry), ct_carry, strict=True))
    return jnp.sum(ys * ct_ys) + carry_terms, (new_carry, ys)

  (value, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, carry)
  return (value, outputs, grads)


def max_error(tree, reference):
  """The largest error of any leaf, relative to that leaf's largest magnitude."""

  def error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

  return max(jax.tree.leaves(jax.tree.map(error, tree, reference)))


def fused_and_scan_errors(cell, xs, carry, lengths, time_major):
  """The largest relative error of the fused path's and of the scan's loss, outputs and gradients against the scan
  in float64."""
  fused = loss_and_grads(cell, xs, carry, lengths, 'auto', time_major)
  scan = loss_and_grads(cell, xs, carry, lengths, 'scan', time_major)
  with jax.enable_x64(True):
    graphdef, state = nnx.split(cell)
    cell64 = nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))
    as64 = lambda a: jnp.asarray(a, jnp.float64)
    reference = jax.device_get(loss_and_grads(cell64, as64(xs), jax.tree.map(as64, carry), lengths, 'scan', time_major))
  return max_error(fused, reference), max_error(scan, reference)


def jnp_and_native_paths(cell, monkeypatch):
  """`loss_and_grads` of the fused path with the native step kernels, and with `LAYERNORM_NATIVE=0` (the jnp step
  and JAX's transpose; the variable is read when the step is traced)."""
  xs, carry, lengths = randn(1, (B, T, D)), random_carry(cell), jnp.asarray(LENGTHS)
  native_path = loss_and_grads(cell, xs, carry, lengths, 'auto')
  monkeypatch.setenv('LAYERNORM_NATIVE', '0')
  return loss_and_grads(cell, xs, carry, lengths, 'auto'), native_path


def dot_generals(cell, **unroll_kwargs) -> tuple[int, int, int]:
  """(scans, matmuls, matmuls inside a scan) of `unroll(cell, **unroll_kwargs)`'s forward over 50 steps."""
  graphdef, state = nnx.split(cell)
  unrolled = lambda s, xs: unroll(nnx.merge(graphdef, s), xs, **unroll_kwargs)
  counts = {'scan': 0, 'dot': 0, 'dot in scan': 0}

  def walk(jaxpr, in_scan):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'scan':
        counts['scan'] += 1
      if eqn.primitive.name == 'dot_general':
        counts['dot'] += 1
        counts['dot in scan'] += in_scan
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub, in_scan or eqn.primitive.name == 'scan')

  walk(jax.make_jaxpr(unrolled)(state, randn(1, (B, 50, D))).jaxpr, False)
  return counts['scan'], counts['dot'], counts['dot in scan']


def check_step_kernels(kind, packed, norm: str, eps: float = 1e-5):
  """The native step kernels of `kind` equal its jnp reference, forward and backward, at steps where rows 2 and 3 are
  padding, whose cotangents pass the step untouched. Returns the kernels' backward outputs and the carry's
  cotangent."""
  assert native.available(np.float32)
  width = kind.width * H
  px, gh = randn(1, (B, width), 2.0), randn(2, (B, width), 2.0)
  carry = tuple(randn(3 + i, (B, H)) for i in range(kind.carry_size))
  dcarry = tuple(randn(13 + i, (B, H)) for i in range(kind.carry_size))
  dy = randn(7, (B, H))
  lengths, t = jnp.asarray(LENGTHS, jnp.int32), jnp.int32(2)
  got = kind.kernel_forward(px, gh, *carry, lengths, t, packed, eps, norm)
  (*want, y) = kind.reference_step(px, gh, carry, lengths, t, packed, eps, norm)
  for g, w in zip(got, [*want[0], y], strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6)
  got = kind.kernel_backward(px, gh, *carry, *dcarry, dy, lengths, t, packed, eps, norm)
  dpx, dgh, dprev, dpacked = kind.reference_step_backward(px, gh, carry, dcarry, dy, lengths, t, packed, eps, norm)
  names = ['d px', 'd gh', *(f'd carry {i} (skip part)' for i in range(kind.carry_size)), 'd packed']
  for name, g, w in zip(names, got, [dpx, dgh, *dprev, dpacked], strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
  for g, d in zip(got[2:-1], dcarry, strict=True):
    np.testing.assert_array_equal(g[2:4], d[2:4])
  assert not np.any(got[0][2:4]) and not np.any(got[1][2:4])
  return got, dcarry


def check_padding(cell, carry):
  """Padded steps freeze the carry and have outputs and input gradients 0; the returned carry is the one after each
  example's last valid step. Returns `loss_and_grads`."""
  xs, lengths = randn(1, (B, T, D)), jnp.asarray(LENGTHS)
  result = loss_and_grads(cell, xs, carry, lengths, 'auto')
  _, (new_carry, ys), (_, d_xs, _) = result
  assert jax.tree.structure(new_carry) == jax.tree.structure(carry)  # The cell's own carry structure.
  h = jax.tree.leaves(new_carry)[-1]
  for b, n in enumerate(LENGTHS):
    assert not np.any(ys[b, n:]) and not np.any(d_xs[b, n:])
    assert np.all(ys[b, :n] != 0)
    if n:
      np.testing.assert_array_equal(h[b], ys[b, n - 1])
  for new, old in zip(jax.tree.leaves(new_carry), jax.tree.leaves(carry), strict=True):
    np.testing.assert_array_equal(new[2], old[2])  # The empty example keeps its initial carry.
  return result


def check_forward_mode_needs_the_scan(cell):
  """`jvp` of a fused unroll is refused (a custom_vjp); through impl='scan' it agrees with the fused reverse mode."""
  xs, tangent = randn(1, (B, T, D)), randn(2, (B, T, D))
  f = lambda impl: lambda xs: unroll(cell, xs, impl=impl)[1]
  _, jvp_scan = jax.jvp(f('scan'), (xs,), (tangent,))
  _, vjp = jax.vjp(f('auto'), xs)
  # <J t, u> = <t, J^T u>: the scan's forward mode agrees with the fused path's reverse mode.
  u = randn(3, (B, T, H))
  np.testing.assert_allclose(jnp.sum(jvp_scan * u), jnp.sum(tangent * vjp(u)[0]), rtol=1e-4)
  with pytest.raises(TypeError, match='custom_vjp'):
    jax.jvp(f('auto'), (xs,), (tangent,))


def check_vmap(cell, carry):
  """Under `vmap` over a leading axis of the inputs each sequence is its own unroll."""
  xs = randn(1, (3, B, T, D))
  lengths = jnp.asarray(LENGTHS)
  batched = jax.vmap(lambda x: unroll(cell, x, carry=carry, seq_lengths=lengths)[1])(xs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], unroll(cell, xs[i], carry=carry, seq_lengths=lengths)[1], atol=1e-6)
