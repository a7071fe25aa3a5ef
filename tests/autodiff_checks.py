"""What the op tests (test_ops, test_rms_norm) share about differentiating: a value and its pullback in one program."""

import jax


def jitted_vjp(f, args: tuple, dy):
  """`f(*args)` and the pullback of `dy`, computed by one jitted program.

  The pullback is applied inside the program: one returned from a jitted `jax.vjp` would run eagerly, compiling every
  operation on its own. A fresh function is jitted on each call, so `f` is traced anew (the ops read LAYERNORM_NATIVE
  when traced: a cached trace could keep the other path)."""

  def value_and_pullback(args, dy):
    y, pullback = jax.vjp(f, *args)
    return y, pullback(dy)

  return jax.jit(value_and_pullback)(args, dy)
