"""The PyTorch attentive reader of benchmarks/ (issue 13's comparison) computes what the JAX reader computes.

Skipped without torch, which is not in requirements.txt (benchmarks/requirements.txt).
"""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import attentive_reader as ar_config
from experiments import attentive_reader as ar

torch = pytest.importorskip('torch')
ar_torch = pytest.importorskip('benchmarks.attentive_reader_torch')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
  # torch's default (every core) crawls when the other core is busy, as under pytest-xdist.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def smoke():
  config = ar_config.get_config('smoke')
  data = ar.load_data(config.data)
  task = ar.build_task(config, data)
  model = task.build_model(nnx.Rngs(0))
  batch = task.train_data.batch(np.arange(config.batch_size))
  return config, data, model, batch


def test_torch_reader_gives_the_jax_readers_logits_on_padded_batches(smoke):
  _, _, model, batch = smoke
  assert (batch['passage_length'] < batch['passage'].shape[1]).any()  # Padding is exercised.
  jax_logits, _ = model(jax.tree.map(np.asarray, batch))
  torch_model = ar_torch.from_jax(model).eval()
  b = ar_torch.to_torch_batch(batch)
  with torch.no_grad():
    torch_logits = torch_model(b['passage'], b['passage_length'], b['query'], b['query_length'])
  np.testing.assert_allclose(torch_logits.numpy(), np.asarray(jax_logits), atol=2e-5, rtol=2e-5)


def test_torch_training_step_starts_near_uniform_and_learns(smoke):
  config, data, model, batch = smoke
  torch.manual_seed(0)
  step = ar_torch.TrainStep(
    ar_torch.from_jax(model, dropout_rate=0.0),
    ar_torch.to_torch_batch(batch),
    data.entity_ids,
    learning_rate=1e-2,
    clip=config.optimizer.grad_clip_norm,
  )
  losses = [float(step()) for _ in range(20)]
  assert abs(losses[0] - np.log(len(data.vocab))) < 0.5
  assert np.mean(losses[-5:]) < losses[0] - 0.5


def test_clipping_follows_the_reader_codes_rule():
  params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))]
  params[0].grad, params[1].grad = torch.full((3,), 30.0), torch.full((4,), 40.0)
  n = float(np.sqrt(3 * 30.0**2 + 4 * 40.0**2))  # 91.7 < 10^2: unchanged.
  ar_torch.clip_attentive_reader_(params, 10.0)
  assert params[0].grad[0].item() == pytest.approx(30.0)
  params[0].grad, params[1].grad = torch.full((3,), 300.0), torch.full((4,), 400.0)
  ar_torch.clip_attentive_reader_(params, 10.0)
  assert params[1].grad[0].item() == pytest.approx(400.0 * 10.0 / np.sqrt(10 * n))
