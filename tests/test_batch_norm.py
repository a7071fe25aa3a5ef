"""`BatchNorm` against a float64 NumPy reference: training and evaluation modes, running averages, mode switches."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from layernorm import BatchNorm


def reference_batch_norm(x, scale, bias, feature_axis, eps, unbiased):
  """Float64 batch norm with the statistics of this batch: mean and variance over every axis but the feature axis."""
  x = np.asarray(x, np.float64)
  batch_axes = tuple(a for a in range(x.ndim) if a != feature_axis % x.ndim)
  mean = x.mean(axis=batch_axes, keepdims=True)
  var = x.var(axis=batch_axes, keepdims=True, ddof=1 if unbiased else 0)
  shape = [-1 if a == feature_axis % x.ndim else 1 for a in range(x.ndim)]
  y = (x - mean) / np.sqrt(var + eps) * np.reshape(scale, shape) + np.reshape(bias, shape)
  return y, mean.reshape(-1), var.reshape(-1)


def _with_params(bn, rng):
  scale = rng.uniform(0.5, 2.0, bn.num_features).astype(np.float32)
  bias = rng.normal(0.0, 1.0, bn.num_features).astype(np.float32)
  bn.scale[...] = jnp.asarray(scale)
  bn.bias[...] = jnp.asarray(bias)
  return scale, bias


@pytest.mark.parametrize('unbiased', [False, True])
@pytest.mark.parametrize('shape,axis', [((4, 3), -1), ((5, 2, 3), -1), ((2, 3, 5), 1)])
def test_training_mode_matches_reference(shape, axis, unbiased):
  rng = np.random.default_rng(0)
  # A common offset of 1000 with std 2 also checks the variance is not E[x^2] - E[x]^2, which would be off by
  # several percent in float32 here; float32 rounding of x itself (ulp 6e-5 at 1000) allows atol 1e-4 on y.
  x = rng.normal(1000.0, 2.0, shape).astype(np.float32)
  bn = BatchNorm(shape[axis], axis=axis, unbiased=unbiased, eps=1e-3)
  scale, bias = _with_params(bn, rng)
  y = bn(jnp.asarray(x))
  expected, _, _ = reference_batch_norm(x, scale, bias, axis, 1e-3, unbiased)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


def test_unbiased_and_biased_variance_differ_by_bessels_factor():
  # At batch size 4 (the paper's small-batch baseline) the two differ by sqrt(4/3) in the normalized output.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6)), jnp.float32)
  biased = BatchNorm(6, eps=0.0)(x)
  unbiased = BatchNorm(6, eps=0.0, unbiased=True)(x)
  np.testing.assert_allclose(biased, unbiased * np.sqrt(4 / 3), rtol=1e-5)


@pytest.mark.parametrize('unbiased', [False, True])
def test_running_averages_follow_the_momentum_recursion(unbiased):
  rng = np.random.default_rng(2)
  momentum = 0.9
  bn = BatchNorm(3, momentum=momentum, unbiased=unbiased)
  mean, var = np.zeros(3), np.ones(3)  # The initial running averages.
  for _ in range(4):
    x = rng.normal(rng.normal(0, 5, 3), rng.uniform(0.5, 3, 3), (8, 3)).astype(np.float32)
    bn(jnp.asarray(x))
    _, batch_mean, batch_var = reference_batch_norm(x, np.ones(3), np.zeros(3), -1, 0.0, unbiased)
    mean = momentum * mean + (1 - momentum) * batch_mean
    var = momentum * var + (1 - momentum) * batch_var
    np.testing.assert_allclose(bn.mean[...], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.var[...], var, rtol=1e-5, atol=1e-5)


def test_evaluation_mode_uses_running_averages_and_leaves_them_alone():
  rng = np.random.default_rng(3)
  bn = BatchNorm(4, use_running_average=True, eps=1e-3)
  scale, bias = _with_params(bn, rng)
  running_mean = rng.normal(size=4).astype(np.float32)
  running_var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
  bn.mean[...] = jnp.asarray(running_mean)
  bn.var[...] = jnp.asarray(running_var)
  x = rng.normal(3.0, 2.0, (5, 4)).astype(np.float32)
  expected = (x - running_mean) / np.sqrt(running_var + 1e-3) * scale + bias
  np.testing.assert_allclose(bn(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(bn.mean[...], running_mean)
  np.testing.assert_array_equal(bn.var[...], running_var)
  # One example at a time gives the same outputs: nothing depends on the rest of the batch.
  np.testing.assert_allclose(bn(jnp.asarray(x[:1])), expected[:1], rtol=1e-5, atol=1e-5)


class _Block(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(3, 4, rngs=rngs)
    self.bn = BatchNorm(4)

  def __call__(self, x):
    return self.bn(self.linear(x))


def test_eval_and_train_switch_modes_of_nested_batch_norm():
  model = _Block(nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(4).normal(2.0, 1.0, (6, 3)), jnp.float32)
  train_out = model(x)
  # Batch statistics: every feature of the training output has mean 0 over the batch.
  np.testing.assert_allclose(np.asarray(train_out).mean(0), 0.0, atol=1e-5)
  model.eval()
  assert model.bn.use_running_average
  stats = (np.asarray(model.bn.mean[...]), np.asarray(model.bn.var[...]))
  eval_out = model(x)
  h = np.asarray(model.linear(x))
  np.testing.assert_allclose(eval_out, (h - stats[0]) / np.sqrt(stats[1] + 1e-5), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(model.bn.mean[...], stats[0])
  model.train()
  assert not model.bn.use_running_average
  np.testing.assert_allclose(model(x), train_out, rtol=1e-5, atol=1e-5)
  assert not np.allclose(model.bn.mean[...], stats[0])


def test_running_averages_update_under_nnx_jit():
  bn = BatchNorm(2, momentum=0.5)
  x = jnp.asarray([[1.0, 10.0], [3.0, 30.0]])
  nnx.jit(lambda m, x: m(x))(bn, x)
  np.testing.assert_allclose(bn.mean[...], [1.0, 10.0])  # 0.5 * 0 + 0.5 * [2, 20]


def test_unbiased_variance_at_batch_size_one_raises():
  with pytest.raises(ValueError, match='at least 2 examples'):
    BatchNorm(3, unbiased=True)(jnp.ones((1, 3)))


def test_biased_variance_at_batch_size_one_outputs_the_bias():
  bn = BatchNorm(3)
  bn.bias[...] = jnp.asarray([1.0, -2.0, 0.5])
  np.testing.assert_allclose(bn(jnp.asarray([[4.0, 5.0, 6.0]])), [[1.0, -2.0, 0.5]])


def test_wrong_feature_count_raises():
  with pytest.raises(ValueError, match='built for 3 features'):
    BatchNorm(3)(jnp.ones((2, 4)))


@pytest.mark.parametrize('momentum', [-0.1, 1.0])
def test_bad_momentum_raises(momentum):
  with pytest.raises(ValueError, match='momentum'):
    BatchNorm(3, momentum=momentum)
