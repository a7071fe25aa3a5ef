"""DRAW on the shared loop (Figure 4): the config's variants, validation, a smoke run whose bound decreases, and the
pictures command on its checkpoint."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_draw_model import reference_bound

from configs import draw as draw_config
from experiments import draw, loop
from experiments.draw.model import DRAW
from experiments.draw.pictures import drawing_sequence, samples_grid
from layernorm import LayerNorm, RMSDRAWLSTMCell
from scripts import draw_pictures


def test_config_variants_follow_the_paper():
  paper = draw_config.get_config('paper,norm=none')
  sizes = {k: paper.model[k] for k in draw.task.SIZE_FIELDS}
  assert sizes == {'hidden': 256, 'latent': 100, 'glimpses': 64, 'read_n': 2, 'write_n': 5}
  assert (paper.model.norm, paper.data.source, paper.batch_size, paper.num_epochs) == ('none', 'amat', 128, 200)
  assert paper.optimizer.learning_rate == 1e-3
  assert draw_config.get_config().data.source == 'digits'
  points = []
  draw_config.sweep(lambda **kw: points.append(kw))
  assert points == [{'norm': 'none'}, {'norm': 'ln'}, {'norm': 'rms'}]  # RMSNorm beside LN, beyond the paper.
  with pytest.raises(ValueError, match='smoke, paper and real'):
    draw_config.get_config('smoke,paper')


def test_loss_and_eval_are_the_bound_with_a_kl_that_matters():
  """The training loss and the logged bound are reconstruction + the whole KL, against the float64 reference loop.

  The posterior layer is perturbed: it starts at zero, where every KL is 0 and a mis-weighted KL term is invisible.
  """
  config = draw_config.get_config('smoke')
  model = draw.build_model(config.model, (8, 8), nnx.Rngs(0))
  rng_np = np.random.default_rng(1)
  for param in (model.posterior.kernel, model.posterior.bias):
    param[...] = jnp.asarray(rng_np.normal(size=param.shape) * 0.5, jnp.float32)
  x = (np.random.default_rng(0).uniform(size=(5, 8, 8)) < 0.3).astype(np.uint8)
  key = jax.random.key(3)
  reconstruction, kl_BxT = reference_bound(model, jnp.asarray(x, jnp.float32), key)
  kl = kl_BxT.sum(-1)
  assert np.all(kl > 0.1 * reconstruction), (kl, reconstruction)  # The KL is a sizeable part of the bound.
  loss, extra = nnx.jit(draw.loss_fn)(model, {'image': x}, key)  # Jitted: one compile, not one per operation.
  np.testing.assert_allclose(loss, np.mean(reconstruction + kl), rtol=1e-5)
  np.testing.assert_allclose(extra['kl'], np.mean(kl), rtol=1e-4)
  np.testing.assert_allclose(extra['reconstruction'], np.mean(reconstruction), rtol=1e-5)
  values = nnx.jit(draw.eval_fn)(model, {'image': x}, key)
  np.testing.assert_allclose(values['nll_bound'], reconstruction + kl, rtol=1e-5)
  np.testing.assert_allclose(values['kl'], kl, rtol=1e-4)
  assert isinstance(model, DRAW) and model.norm == 'ln'


@pytest.mark.parametrize(
  'override,match',
  [
    ({'model.norm': 'bn'}, r'config.model.norm must be one of none, ln'),
    ({'model.glimpses': 0}, r'config.model.glimpses must be a positive int'),
    ({'data.source': 'amat', 'data.dir': '/nonexistent/draw'}, r'config.data \(source=.amat.'),
    ({'optimizer.learning_rate': -1.0}, r'config.optimizer.learning_rate must be a positive number'),
  ],
)
def test_validate_rejects_bad_values(override, match):
  config = draw_config.get_config('smoke')
  with config.unlocked():
    for key, value in override.items():
      node = config
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
  with pytest.raises(ValueError, match=match):
    draw.validate(config)


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('draw_smoke'))
  config = draw_config.get_config('smoke')
  metrics = draw.train_and_evaluate(config, workdir)
  return workdir, metrics


def assert_the_bound_is_finite_and_decreases(workdir, metrics):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  bounds = [r['eval/test/nll_bound'] for r in rows if 'eval/test/nll_bound' in r]
  assert len(losses) >= 3 and len(bounds) >= 2
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(bounds))
  # 8x8 binary images: the bound starts near 64 * log 2 = 44 nats and must come down within two epochs.
  assert losses[-1] < losses[0] - 1.0
  assert bounds[-1] < bounds[0]
  assert metrics['eval/test/nll_bound'] == pytest.approx(bounds[-1])


def test_smoke_run_bound_is_finite_and_decreases(smoke_run):
  assert_the_bound_is_finite_and_decreases(*smoke_run)


def test_rms_smoke_run_trains_rms_cells_in_place_of_the_ln_ones(tmp_path):
  workdir = str(tmp_path)
  assert_the_bound_is_finite_and_decreases(
    workdir, draw.train_and_evaluate(draw_config.get_config('smoke,norm=rms'), workdir)
  )
  trained = draw.load_trained_model(workdir)
  assert type(trained.encoder) is type(trained.decoder) is RMSDRAWLSTMCell
  assert not any(isinstance(m, LayerNorm) for _, m in nnx.iter_graph(trained))


def test_pictures_from_the_checkpoint(smoke_run, tmp_path):
  workdir, _ = smoke_run
  paths = draw_pictures.write_pictures(workdir, str(tmp_path), num_samples=9, num_sequences=2, steps=3)
  assert [os.path.basename(p) for p in paths] == ['samples.png', 'drawing.png']
  import matplotlib.image

  samples = matplotlib.image.imread(paths[0])
  drawing = matplotlib.image.imread(paths[1])
  # A 3x3 grid of 8x8 images with 1-pixel padding; 2 sequences (rows) of 3 glimpses (columns).
  assert samples.shape[:2] == (3 * 9 + 1, 3 * 9 + 1)
  assert drawing.shape[:2] == (2 * 9 + 1, 3 * 9 + 1)
  # Generated images are Bernoulli means in [0, 1], not the blank padding everywhere.
  assert samples.min() >= 0.0 and samples[1:9, 1:9].std() > 0
  # The trained model's samples (seed 0), laid out as the picture helpers say; 2/255: the colormap's 256 levels.
  trained = draw.load_trained_model(workdir)
  canvases = np.asarray(trained.sample(9, jax.random.key(0)))
  np.testing.assert_allclose(samples[..., 0], samples_grid(canvases[-1], ncols=3), atol=2 / 255)
  np.testing.assert_allclose(drawing[..., 0], drawing_sequence(canvases[:, :2], steps=3), atol=2 / 255)
  # Not the untrained model's (the loop's initialisation from the run's seed): the checkpoint's weights show.
  config = loop.read_config(workdir)
  untrained = draw.build_model(config.model, (8, 8), loop.model_rngs(config.seed))
  fresh = np.asarray(untrained.sample(9, jax.random.key(0)))[-1]
  assert np.abs(samples_grid(fresh, ncols=3) - samples[..., 0]).max() > 0.1


def test_pictures_command_says_when_there_is_no_checkpoint(tmp_path, capsys):
  assert draw_pictures.main([str(tmp_path / 'missing')]) == 3
  assert 'train one first: python -m experiments.draw' in capsys.readouterr().err
