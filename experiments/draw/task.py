"""DRAW on binarized MNIST with and without layer normalization (paper section 6.4, Figure 4), on the shared loop.

The model is `experiments.draw.model.DRAW`: filterbank read and write attention, encoder and decoder LSTMs, a
Gaussian latent per glimpse and a Bernoulli likelihood on the final canvas. `norm='ln'` uses the appendix's DRAW LSTM
(eq. 29-31, LN only on the cell before the output tanh) in both the encoder and the decoder; `norm='rms'` the same
cell with an RMS norm (a gain, no re-centering) in place of its LN.

The training loss is the per-example negative variational bound (reconstruction cross-entropy + the sum over glimpses of
KL(q(z_t | .) || N(0, I))) averaged over the batch; per epoch the loop logs the bound in nats on the validation and test
sets ('eval/valid/nll_bound', 'eval/test/nll_bound'), Figure 4's y axis, with its two terms.

  python -m experiments.draw --config configs/draw.py:norm=ln --workdir runs/draw_ln
  python -m scripts.draw_pictures runs/draw_ln    # samples and drawing sequences as PNGs
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import loop
from experiments.draw.data import FIXED_SPLIT_SOURCES, check_source, load_binarized_mnist
from experiments.draw.model import DRAW, negative_elbo_terms

NORMS = ('none', 'ln', 'rms')
SIZE_FIELDS = ('hidden', 'latent', 'glimpses', 'read_n', 'write_n')


def build_model(model_config: ml_collections.ConfigDict, image_shape: tuple[int, int], rngs: nnx.Rngs) -> DRAW:
  """The DRAW model of `config.model` for images of `image_shape`."""
  sizes = {k: model_config[k] for k in SIZE_FIELDS}
  return DRAW(tuple(image_shape), norm=model_config.norm, rngs=rngs, **sizes)


def _bound_terms(model: DRAW, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  x_BxHxW = batch['image'].astype(jnp.float32)  # uint8 0/1 on the host: 4x less to move.
  reconstruction_B, kl_BxT = negative_elbo_terms(model, x_BxHxW, rng)
  return reconstruction_B, jnp.sum(kl_BxT, axis=-1)


def loss_fn(model: DRAW, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The batch mean of the negative variational bound (nats), and its two terms."""
  reconstruction_B, kl_B = _bound_terms(model, batch, rng)
  return jnp.mean(reconstruction_B + kl_B), {'reconstruction': jnp.mean(reconstruction_B), 'kl': jnp.mean(kl_B)}


def eval_fn(model: DRAW, batch: dict[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
  """Per-example bound on -log p(x) in nats (one posterior sample, as DRAW reports it) and its terms."""
  reconstruction_B, kl_B = _bound_terms(model, batch, rng)
  return {'nll_bound': reconstruction_B + kl_B, 'reconstruction': reconstruction_B, 'kl': kl_B}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError (a ValueError) listing every invalid value and its fix; touches no workdir."""
  loop.check_experiment(
    config,
    config_file='configs/draw.py',
    norms=NORMS,
    check_source=check_source,
    positive_int_fields=SIZE_FIELDS,
    more=_split_problems,
  )


def _split_problems(config: ml_collections.ConfigDict, problems: list[str]) -> None:
  if config.data.get('num_valid') is not None and config.data.source in FIXED_SPLIT_SOURCES:
    problems.append(
      f'config.data.num_valid={config.data.num_valid!r}, but source={config.data.source} has fixed train/valid/test '
      'splits. Fix: leave config.data.num_valid unset, or use source=idx.'
    )


def load_splits(data_config: ml_collections.ConfigDict) -> dict[str, dict[str, np.ndarray]]:
  """{'train' | 'valid' | 'test': {'image': uint8 0/1 [N, H, W]}} for `config.data`."""
  with loop.data_errors(data_config):
    splits = load_binarized_mnist(data_config.source, data_config.dir, num_valid=data_config.get('num_valid'))
  return {name: {'image': images} for name, images in splits.items()}


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """Loads the data of `config.data` and returns the Task for the loop."""
  splits = load_splits(config.data)
  image_shape = splits['train']['image'].shape[1:]
  return loop.Task(
    build_model=functools.partial(build_model, config.model, image_shape),
    loss_fn=loss_fn,
    eval_fn=eval_fn,
    train_data=splits['train'],
    eval_data={'valid': splits['valid'], 'test': splits['test']},
    metadata={'image_shape': list(image_shape)},  # What `load_trained_model` needs besides the weights.
  )


def load_trained_model(workdir: str, which: str | int = 'latest') -> DRAW:
  """The DRAW model of a run's workdir (see `loop.load_model` for `which`), built without reading the data set."""
  config = loop.read_config(workdir)
  image_shape = tuple(loop.read_task_metadata(workdir).get('image_shape', ()))
  if len(image_shape) != 2:
    raise FileNotFoundError(f'{workdir} records no image shape (task.json): was it trained by experiments.draw?')
  return loop.load_model(workdir, functools.partial(build_model, config.model, image_shape), which)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the DRAW model of `config` in `workdir` (resuming it); returns the final metrics."""
  validate(config)
  return loop.train(config, workdir, build_task(config))
