"""One training step of each experiment, through the loop, against a computation by hand.

The hand side takes the documented data order (`default_rng([seed, 0]).permutation(n)`), the documented step key
(`fold_in(fold_in(key(seed), 1), step)`), and Adam written out in float64. MNIST's network is also re-implemented in
plain jnp, so its forward pass and gradient are checked independently of the NNX model; DRAW's loss is the model's
own (its bound is checked against a hand computation in tests/test_draw_model.py), so here the step checks that the
loop feeds DRAW the right batch (as 0/1 floats), the right key and the right update.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import attentive_reader as ar_config
from configs import draw as draw_config
from configs import mnist as mnist_config
from configs import skip_thoughts as skip_thoughts_config
from experiments import attentive_reader, draw, loop, mnist, skip_thoughts


def first_batch(config, task) -> dict[str, np.ndarray]:
  n = len(next(iter(task.train_data.values())))
  idx = np.random.default_rng([config.seed, 0]).permutation(n)[: config.batch_size]
  return {k: v[idx] for k, v in task.train_data.items()}


def step_key(config) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 1), 0)


def adam_first_step(params: dict, grads: dict, opt) -> dict:
  """Bias-corrected Adam's first update in float64: m = (1 - b1) g, v = (1 - b2) g^2, then corrected."""
  out = {}
  for k, p in params.items():
    g = np.asarray(grads[k], np.float64)
    m_hat = (1 - opt.b1) * g / (1 - opt.b1)
    v_hat = (1 - opt.b2) * g**2 / (1 - opt.b2)
    out[k] = np.asarray(p, np.float64) - opt.learning_rate * m_hat / (np.sqrt(v_hat) + opt.eps)
  return out


def one_step_config(get_config, arg):
  config = get_config(arg)
  config.num_train_steps = 1
  config.log_every_steps = 1
  return config


def test_mnist_layer_norm_step_matches_a_plain_jnp_network(tmp_path):
  config = one_step_config(mnist_config.get_config, 'smoke,norm=ln,batch_size=8')
  task = mnist.build_task(config)
  init = loop.init_model(config, task)
  params = {
    'w0': init.hidden[0].kernel[...],
    'g0': init.hidden_norms[0].scale[...],
    'b0': init.hidden_norms[0].bias[...],
    'w1': init.hidden[1].kernel[...],
    'g1': init.hidden_norms[1].scale[...],
    'b1': init.hidden_norms[1].bias[...],
    'wo': init.output.kernel[...],
    'bo': init.output.bias[...],
  }

  def layer_norm(h, g, b):  # The paper's eq. 4, per example over its hidden units, eps 1e-5 as configured.
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + config.model.eps) * g + b

  def plain_loss(p, x, y):
    h = jax.nn.relu(layer_norm(x @ p['w0'], p['g0'], p['b0']))
    h = jax.nn.relu(layer_norm(h @ p['w1'], p['g1'], p['b1']))
    logits = h @ p['wo'] + p['bo']
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  batch = first_batch(config, task)
  x = batch['image'].astype(np.float32) / 255.0  # The experiment's documented input scaling.
  loss, grads = jax.jit(jax.value_and_grad(plain_loss))(params, x, batch['label'])
  want = adam_first_step(params, grads, config.optimizer)

  final = mnist.train_and_evaluate(config, str(tmp_path))
  np.testing.assert_allclose(final['train/loss'], float(loss), rtol=1e-5)
  model = loop.load_model(str(tmp_path), task)
  got = {
    'w0': model.hidden[0].kernel,
    'g0': model.hidden_norms[0].scale,
    'b0': model.hidden_norms[0].bias,
    'w1': model.hidden[1].kernel,
    'g1': model.hidden_norms[1].scale,
    'b1': model.hidden_norms[1].bias,
    'wo': model.output.kernel,
    'bo': model.output.bias,
  }
  for k in params:
    np.testing.assert_allclose(got[k][...], want[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_draw_step_feeds_the_model_the_step_batch_key_and_update(tmp_path):
  config = one_step_config(draw_config.get_config, 'smoke,norm=ln')
  task = draw.build_task(config)
  init = loop.init_model(config, task)
  graph, params, rest = nnx.split(init, nnx.Param, ...)
  batch = first_batch(config, task)
  assert batch['image'].dtype == np.uint8 and set(np.unique(batch['image'])) <= {0, 1}

  @jax.jit  # One program, not one per operation: the reference is the same computation, compiled once.
  def loss_of(p, key):
    return draw.loss_fn(nnx.merge(graph, p, rest), {'image': jnp.asarray(batch['image'])}, key)[0]

  loss, grads = jax.jit(jax.value_and_grad(loss_of))(params, step_key(config))
  flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  flat_grads = dict(jax.tree_util.tree_flatten_with_path(grads)[0])
  want = adam_first_step(flat_params, flat_grads, config.optimizer)

  final = draw.train_and_evaluate(config, str(tmp_path))
  np.testing.assert_allclose(final['train/loss'], float(loss), rtol=1e-5)
  # The loss has a KL term, so it depends on the posterior sample: a different key would give another value.
  other = loss_of(params, jax.random.key(1))
  assert not np.isclose(float(other), float(loss), rtol=1e-6)
  trained = nnx.split(loop.load_model(str(tmp_path), task), nnx.Param, ...)[1]
  for path, value in jax.tree_util.tree_flatten_with_path(trained)[0]:
    np.testing.assert_allclose(value, want[path], rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_skip_thoughts_step_is_clipped_theano_adam_on_the_length_grouped_first_batch(tmp_path):
  config = one_step_config(skip_thoughts_config.get_config, 'smoke,norm=ln')
  with config.unlocked():
    config.eval.tasks = ()  # Only the training step is checked here.
  task = skip_thoughts.build_task(config)
  init = loop.init_model(config, task)
  graph, params, rest = nnx.split(init, nnx.Param, ...)
  # The source's own order (the authors' iterator: one centre length per batch), not a uniform permutation.
  idx = task.train_data.order(config.seed, 0)[: config.batch_size]
  batch = task.train_data.batch(idx)
  assert len(set(task.train_data.centre_lengths[idx])) == 1

  def loss_of(p):
    return skip_thoughts.loss_fn(nnx.merge(graph, p, rest), jax.tree.map(jnp.asarray, batch), step_key(config))[0]

  loss, grads = jax.jit(jax.value_and_grad(loss_of))(params)
  flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  flat_grads = dict(jax.tree_util.tree_flatten_with_path(grads)[0])
  opt = config.optimizer
  # Global-norm clipping to 5 (the summed loss's gradient is far larger), then the Theano code's Adam at t = 1:
  # m = 0.1 g, v = 0.001 g^2, times sqrt(1 - 0.001) / (1 - 0.1).
  norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in flat_grads.values()))
  assert norm > opt.grad_clip_norm
  factor = np.sqrt(1 - (1 - opt.b2)) / (1 - (1 - opt.b1))
  want = {}
  for path, p in flat_params.items():
    g = np.asarray(flat_grads[path], np.float64) * opt.grad_clip_norm / norm
    m, v = (1 - opt.b1) * g, (1 - opt.b2) * g**2
    want[path] = np.asarray(p, np.float64) - opt.learning_rate * factor * m / (np.sqrt(v) + opt.eps)

  final = skip_thoughts.train_and_evaluate(config, str(tmp_path))
  np.testing.assert_allclose(final['train/loss'], float(loss), rtol=1e-5)
  trained = nnx.split(loop.load_model(str(tmp_path), task), nnx.Param, ...)[1]
  for path, value in jax.tree_util.tree_flatten_with_path(trained)[0]:
    np.testing.assert_allclose(value, want[path], rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_attentive_reader_step_permutes_entities_with_the_step_key_and_applies_clipped_adam(tmp_path):
  # BN-everywhere: the variant with the most parts (BN-LSTMs with a step counter in the carry, masked BN layers).
  config = one_step_config(ar_config.get_config, 'smoke,norm=bn_everywhere')
  config.optimizer.grad_clip_norm = 0.5  # Small enough that the code's clipping rule acts on this step.
  task = attentive_reader.build_task(config)
  init = loop.init_model(config, task)
  params = nnx.state(init, nnx.Param)
  idx = np.random.default_rng([config.seed, 0]).permutation(len(task.train_data))[: config.batch_size]
  batch = {k: jnp.asarray(v) for k, v in task.train_data.batch(idx).items()}
  key = step_key(config)
  # By hand: one permutation of the entity ids from the first half of the step key, dropout from the second.
  permute_key, dropout_key = jax.random.split(key)
  data = attentive_reader.load_data(config.data)
  ents = data.entity_ids
  perm = ents[np.asarray(jax.random.permutation(permute_key, len(ents)))]
  table = np.arange(len(data.vocab))
  table[ents] = perm
  permuted = {**batch, **{k: jnp.asarray(table[np.asarray(batch[k])]) for k in ('passage', 'query', 'answer')}}

  def loss_of(model):  # BN statistics move inside, so differentiate a copy of the model, not merged arrays.
    logits, _ = model(permuted, dropout_key)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), permuted['answer'][:, None], 1))

  loss, grads = nnx.jit(nnx.value_and_grad(loss_of))(nnx.clone(init))
  flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  flat_grads = dict(jax.tree_util.tree_flatten_with_path(grads)[0])
  n = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in flat_grads.values()))
  c = config.optimizer.grad_clip_norm
  assert n > c * c  # The rule: gradients times c / sqrt(n) once the global norm n exceeds c^2.
  clipped = {k: np.asarray(g, np.float64) * c / np.sqrt(n) for k, g in flat_grads.items()}
  want = adam_first_step(flat_params, clipped, config.optimizer)

  final = attentive_reader.train_and_evaluate(config, str(tmp_path))
  np.testing.assert_allclose(final['train/loss'], float(loss), rtol=1e-5)
  # The learned initial h is the same for every example, so BN's batch statistics cancel W_h h0 at step 0: its
  # gradient is zero but for rounding, which Adam's sign-like first step amplifies. Those two are checked apart.
  h0 = {k for k in flat_grads if jax.tree_util.keystr(k) in ("['passage_h0'].value", "['query_h0'].value")}
  assert len(h0) == 2 and all(np.abs(np.asarray(flat_grads[k])).max() < 1e-5 for k in h0)
  cancelled = h0
  trained = nnx.split(loop.load_model(str(tmp_path), task), nnx.Param, ...)[1]
  for path, value in jax.tree_util.tree_flatten_with_path(trained)[0]:
    if path in cancelled:
      np.testing.assert_allclose(value, flat_params[path], atol=2 * config.optimizer.learning_rate)
    else:
      np.testing.assert_allclose(value, want[path], rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
