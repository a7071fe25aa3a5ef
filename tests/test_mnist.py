"""Permutation-invariant MNIST (Figure 6): the network against a NumPy reference, its config variants and sweep,
validation, and smoke runs of every variant on the digits."""

import os
import sys

import cli_runner
import jax
import numpy as np
import pytest
from flax import nnx

from configs import common
from configs import mnist as mnist_config
from experiments import loop, mnist
from layernorm import BatchNorm, LayerNorm, RMSNorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_forward(model: mnist.MLP, x: np.ndarray, norm: str, unbiased: bool, running: bool = False) -> np.ndarray:
  """Float64 NumPy forward pass of the paper's network from the model's weights: in train mode, or with `running`
  BN's evaluation mode (its running averages in place of the batch statistics)."""
  f64 = lambda v: np.asarray(v[...], np.float64)

  def normalize(a, module, over_batch):
    if norm == 'rms':  # Gain, no re-centering, then the bias after the norm.
      return a / np.sqrt(np.mean(a * a, 1, keepdims=True) + 1e-5) * f64(module.rms.scale) + f64(module.bias)
    axis = 0 if over_batch else 1
    mean = a.mean(axis, keepdims=True)
    var = a.var(axis, keepdims=True, ddof=1 if unbiased and over_batch else 0)
    if running and over_batch:
      mean, var = f64(module.mean), f64(module.var)
    return (a - mean) / np.sqrt(var + 1e-5) * f64(module.scale) + f64(module.bias)

  h = np.asarray(x, np.float64)
  for i, linear in enumerate(model.hidden):
    a = h @ f64(linear.kernel)
    if norm == 'none':
      a = a + f64(linear.bias)
    else:
      a = normalize(a, model.hidden_norms[i], over_batch=norm == 'bn')
    h = np.maximum(a, 0)
  logits = h @ f64(model.output.kernel)
  return normalize(logits, model.output_norm, True) if norm == 'bn' else logits + f64(model.output.bias)


@pytest.mark.parametrize('norm', ['none', 'bn', 'ln', 'rms'])
def test_network_matches_numpy_reference_and_the_paper_layout(norm):
  model = mnist.MLP(12, (7, 5), 10, norm=norm, bn_unbiased=True, rngs=nnx.Rngs(0))
  modules = [m for _, m in nnx.iter_graph(model) if isinstance(m, LayerNorm | BatchNorm | RMSNorm)]
  # LN and RMS on the hidden layers only; BN on every layer, the logits included; biases only where no norm follows.
  layouts = {'none': [], 'ln': ['LayerNorm'] * 2, 'bn': ['BatchNorm'] * 3, 'rms': ['RMSNorm'] * 2}
  assert [type(m).__name__ for m in modules] == layouts[norm]
  assert [lin.bias is not None for lin in model.hidden] == [norm == 'none'] * 2
  assert (model.output.bias is not None) == (norm != 'bn')

  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (6, 12)).astype(np.float32)
  labels = rng.integers(0, 10, 6).astype(np.int32)
  expected = reference_forward(model, x, norm, unbiased=True)
  model.train()
  np.testing.assert_allclose(model(x), expected, rtol=2e-5, atol=2e-5)

  batch = {'image': np.round(x * 255).astype(np.uint8), 'label': labels}
  logits = reference_forward(model, batch['image'] / 255.0, norm, unbiased=True)
  logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1)[:, None]
  nll = -logp[np.arange(6), labels]
  loss, extra = mnist.loss_fn(model, batch, jax.random.key(0))
  np.testing.assert_allclose(loss, nll.mean(), rtol=2e-5)
  np.testing.assert_allclose(extra['error'], np.mean(logits.argmax(1) != labels))
  model.eval()  # Running averages: for BN no longer the batch statistics.
  values = mnist.eval_fn(model, batch, jax.random.key(0))
  assert values['nll'].shape == values['error'].shape == (6,)
  if norm != 'bn':
    np.testing.assert_allclose(values['nll'], nll, rtol=2e-5, atol=1e-6)
    return
  # BN's evaluation mode normalizes with the running averages: set to values far from this batch's statistics.
  for module in [*model.hidden_norms, model.output_norm]:
    module.mean[...] = rng.normal(0, 0.5, module.mean.shape).astype(np.float32)
    module.var[...] = rng.uniform(0.5, 2.0, module.var.shape).astype(np.float32)
  logits = reference_forward(model, batch['image'] / 255.0, norm, unbiased=True, running=True)
  logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1)[:, None]
  eval_nll = -logp[np.arange(6), labels]
  assert not np.allclose(eval_nll, nll, rtol=1e-2)  # So batch statistics in eval mode would fail.
  values = mnist.eval_fn(model, batch, jax.random.key(0))
  np.testing.assert_allclose(values['nll'], eval_nll, rtol=2e-5, atol=1e-6)
  np.testing.assert_array_equal(values['error'], logits.argmax(1) != labels)


def test_rms_network_is_the_ln_network_with_rms_norms_in_place_of_its_layer_norms():
  """Same seed, same weights; the two differ only in the norms, and the RMS norm's missing re-centering shows."""
  ln, rms = (mnist.MLP(12, (7, 5), 10, norm=n, rngs=nnx.Rngs(0)) for n in ('ln', 'rms'))
  for a, b in zip([*ln.hidden, ln.output], [*rms.hidden, rms.output], strict=True):
    np.testing.assert_array_equal(a.kernel[...], b.kernel[...])
  assert not any(isinstance(m, LayerNorm) for _, m in nnx.iter_graph(rms))
  x = np.random.default_rng(0).uniform(0, 1, (6, 12)).astype(np.float32)
  assert np.max(np.abs(np.asarray(ln(x)) - np.asarray(rms(x)))) > 1e-2


def test_config_variants():
  default = mnist_config.get_config()
  assert (default.model.norm, default.batch_size, default.data.source) == ('ln', 128, 'digits')
  assert tuple(default.model.hidden_sizes) == (1000, 1000) and default.num_epochs == 60
  paper = mnist_config.get_config('paper,norm=bn,batch_size=4')
  assert (paper.data.source, paper.model.norm, paper.batch_size, paper.model.bn_unbiased) == ('tfds', 'bn', 4, True)
  assert tuple(paper.model.hidden_sizes) == (1000, 1000) and paper.num_epochs == 60
  assert mnist_config.get_config('paper,source=idx').data.source == 'idx'
  assert not mnist_config.get_config('batch_size=128').model.bn_unbiased
  smoke = mnist_config.get_config('smoke')
  assert smoke.data.source == 'digits' and smoke.num_epochs == 2
  with pytest.raises(ValueError, match=r"Unknown config variant 'nrom'.*norm='ln'"):
    mnist_config.get_config('nrom=ln')
  with pytest.raises(ValueError, match=r'batch_size=.four.: expected int'):
    mnist_config.get_config('batch_size=four')
  with pytest.raises(ValueError, match='at most one'):
    mnist_config.get_config('smoke,paper')
  assert common.parse_arg('smoke,x=2.5', smoke=False, x=1.0).to_dict() == {'smoke': True, 'x': 2.5}


def test_sweep_is_figure_6_grid_of_valid_configs():
  points = []
  mnist_config.sweep(lambda **variants: points.append(variants))
  assert sorted((p['norm'], p['batch_size']) for p in points) == sorted(
    (n, b) for n in ('none', 'bn', 'ln', 'rms') for b in (4, 128)
  )
  for p in points:
    mnist.validate(mnist_config.get_config(','.join(f'{k}={v}' for k, v in p.items())))


@pytest.mark.parametrize(
  'key,value,field',
  [
    ('model.norm', 'wn', 'config.model.norm'),
    ('model.hidden_sizes', (1000, 0), 'config.model.hidden_sizes'),
    ('model.bn_momentum', 1.0, 'config.model.bn_momentum'),
    ('model.eps', 0.0, 'config.model.eps'),
    ('data.source', 'mnist.zip', 'config.data'),
    ('optimizer.learning_rate', -1.0, 'config.optimizer.learning_rate'),
  ],
)
def test_validate_rejects_bad_values(key, value, field):
  config = mnist_config.get_config('smoke')
  mnist.validate(config)
  parent, leaf = key.split('.')
  config[parent][leaf] = value
  with pytest.raises(ValueError, match=r'Fix|choose|use source') as e:
    mnist.validate(config)
  assert field in str(e.value)


def test_validate_rejects_bn_at_batch_size_1_and_a_missing_data_dir(tmp_path):
  config = mnist_config.get_config('smoke,norm=bn,batch_size=1')
  with pytest.raises(loop.ConfigError, match='norm=bn needs batch statistics of 2 or more'):
    mnist.validate(config)
  config = mnist_config.get_config('smoke,source=idx')
  config.data.dir = str(tmp_path / 'no_such_dir')
  with pytest.raises(loop.ConfigError, match='no_such_dir'):
    mnist.validate(config)


def test_cli_rejects_a_bad_config_without_touching_the_workdir(tmp_path):
  workdir = tmp_path / 'existing'
  workdir.mkdir()
  (workdir / 'keep.txt').write_text('x')
  before = sorted(os.listdir(workdir))
  result = cli_runner.run(
    [sys.executable, '-m', 'experiments.mnist', '--config', 'configs/mnist.py:smoke',
     '--config.optimizer.learning_rate=-1', '--config.batch_size=0', '--workdir', str(workdir)],
    cwd=ROOT, timeout=120,
  )  # fmt: skip
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'config.optimizer.learning_rate must be a positive number' in result.stderr
  assert 'config.batch_size must be a positive int' in result.stderr
  assert '--config.batch_size=' in result.stderr and 'Traceback' not in result.stderr
  assert sorted(os.listdir(workdir)) == before


@pytest.mark.parametrize(
  'variant', ['smoke,norm=none', 'smoke,norm=bn', 'smoke,norm=ln', 'smoke,norm=rms', 'smoke,norm=bn,batch_size=4']
)
def test_smoke_variants_train(variant, tmp_path):
  config = mnist_config.get_config(variant)
  final = mnist.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in loop.read_rows(str(tmp_path)) if 'epoch' in r]
  assert [r['epoch'] for r in rows] == [1, 2]
  # It learns: the epoch-mean training NLL falls, and the held-out errors are well under chance (0.9).
  assert rows[1]['train_epoch/loss'] < rows[0]['train_epoch/loss']
  assert final['eval/test/error'] < 0.6 and final['eval/valid/error'] < 0.6
  assert final['eval/test/error'] == rows[-1]['eval/test/error']


@pytest.mark.parametrize('variant', ['', 'paper,source=digits'])
def test_full_size_variants_take_a_few_steps(variant, tmp_path):
  """The paper's 1000-1000 network, three steps each: sizes, init and loop agree at full scale."""
  config = mnist_config.get_config(variant)
  config.num_train_steps = 3
  final = mnist.train_and_evaluate(config, str(tmp_path))
  model = loop.load_model(str(tmp_path), mnist.build_task(config))
  assert model.hidden[0].kernel.shape == (64, 1000) and model.hidden[1].kernel.shape == (1000, 1000)
  # It learns at full scale: three Adam steps take the test error from chance (0.92 at init) to about 0.4, and the
  # NLL from 3.4 to 1.8 (2-core CPU, jax 0.10); the bounds leave room for other BLAS builds, not for a no-op step.
  init = loop.init_model(config, mnist.build_task(config))
  init.eval()
  test = mnist.build_task(config).eval_data['test']
  init_nll = float(np.mean(mnist.eval_fn(init, test, jax.random.key(0))['nll']))
  assert np.isfinite(final['train/loss']) and final['eval/test/error'] < 0.6
  assert final['eval/test/nll'] < init_nll - 1.0, (final['eval/test/nll'], init_nll)
