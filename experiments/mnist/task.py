"""Permutation-invariant MNIST (paper section 6.6, Figure 6) on the shared training loop.

A fully connected 784-1000-1000-10 network (the input size follows the data: 64 for the 8x8 digits) with one of
  'none': no normalization (the paper's "Baseline");
  'bn':   batch normalization on every layer, the logits included (the paper: "applied to all layers"), with the
          unbiased batch variance when `config.model.bn_unbiased` (the paper's choice at batch size 4);
  'ln':   layer normalization on the hidden layers only: on the logits its invariance to the input scale would
          remove the network's control over its confidence;
  'rms':  beyond the paper, an RMS norm (Zhang & Sennrich 2019: a gain, no re-centering) where 'ln' has its layer
          norms, followed by a bias (the RMSNorm paper's f(RMS(a) g + b); LN's offset plays that role in 'ln').
A linear layer feeds its normalization without a bias of its own (the normalization's bias replaces it).
Per epoch the loop logs the mean training NLL ('train_epoch/loss') and the validation and test error
('eval/valid/error', 'eval/test/error') and NLL.

  python -m experiments.mnist --config configs/mnist.py:norm=ln,batch_size=4 --workdir runs/mnist_ln_bs4
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import loop
from experiments.data.mnist import check_source, load_mnist
from layernorm import BatchNorm, LayerNorm, RMSNorm

NORMS = ('none', 'bn', 'ln', 'rms')


class BiasedRMSNorm(nnx.Module):
  """An RMS norm's gain, then a bias: `RMS(a) g + b`, as the RMSNorm paper writes it.

  `RMSNorm` has no offset of its own, and a bias in the linear layer before it would be rescaled with the sum it is
  added to; added after the norm it plays the part LN's offset plays in the 'ln' network.
  """

  def __init__(self, num_features: int, *, epsilon: float):
    self.rms = RMSNorm(num_features, epsilon=epsilon)
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.rms(x) + self.bias[...]


class MLP(nnx.Module):
  """A ReLU network of fully connected layers with optional batch, layer or RMS normalization before each
  non-linearity.

  Args:
    in_features: input size (784 for MNIST).
    hidden_sizes: sizes of the hidden layers ((1000, 1000) in the paper).
    num_classes: number of logits.
    norm: 'none', 'bn' (every layer, logits included), 'ln' or 'rms' (hidden layers only; 'rms' with a bias after
      each norm).
    bn_unbiased: BatchNorm uses the unbiased (n - 1) batch variance.
    bn_momentum: decay of BatchNorm's running averages.
    eps: added to the variance in BN and LN, to the mean square in the RMS norm.
    rngs: for the weight initialisation.
  """

  def __init__(
    self,
    in_features: int,
    hidden_sizes: tuple[int, ...],
    num_classes: int,
    *,
    norm: str,
    bn_unbiased: bool = False,
    bn_momentum: float = 0.99,
    eps: float = 1e-5,
    rngs: nnx.Rngs,
  ):
    if norm not in NORMS:
      raise ValueError(f'norm must be one of {NORMS}; got {norm!r}.')
    # He initialisation suits ReLU units; the paper does not say which it used.
    init = nnx.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')
    sizes = [in_features, *hidden_sizes]
    normalize = norm != 'none'

    def make_norm(size):
      if norm == 'bn':
        return BatchNorm(size, momentum=bn_momentum, eps=eps, unbiased=bn_unbiased, rngs=rngs)
      # No rngs: given them, LayerNorm draws a key per parameter as flax's does, which would move the output layer's
      # initialisation and every logged number; its gain and bias are constants anyway. The same holds for 'rms',
      # so that 'ln' and 'rms' networks of one seed start from the same weights.
      return BiasedRMSNorm(size, epsilon=eps) if norm == 'rms' else LayerNorm(size, epsilon=eps)

    self.hidden = nnx.List(
      nnx.Linear(a, b, use_bias=not normalize, kernel_init=init, rngs=rngs) for a, b in itertools.pairwise(sizes)
    )
    self.hidden_norms = nnx.List(make_norm(size) for size in hidden_sizes) if normalize else None
    self.output = nnx.Linear(sizes[-1], num_classes, use_bias=norm != 'bn', kernel_init=init, rngs=rngs)
    self.output_norm = make_norm(num_classes) if norm == 'bn' else None

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, linear in enumerate(self.hidden):
      x = linear(x)
      if self.hidden_norms is not None:
        x = self.hidden_norms[i](x)
      x = jax.nn.relu(x)
    logits = self.output(x)
    return logits if self.output_norm is None else self.output_norm(logits)


def build_model(model_config: ml_collections.ConfigDict, in_features: int, rngs: nnx.Rngs) -> MLP:
  """The MLP of `config.model` for inputs of `in_features` pixels."""
  return MLP(
    in_features,
    tuple(model_config.hidden_sizes),
    10,
    norm=model_config.norm,
    bn_unbiased=model_config.bn_unbiased,
    bn_momentum=model_config.bn_momentum,
    eps=model_config.eps,
    rngs=rngs,
  )


def _logits_and_nll(model: MLP, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  x = batch['image'].astype(jnp.float32) / 255.0  # uint8 on the host and in transfer: 4x less to move.
  logits = model(x)
  return logits, optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])


def loss_fn(model: MLP, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean negative log-likelihood of the batch, and its classification error."""
  del rng  # Deterministic network.
  logits, nll = _logits_and_nll(model, batch)
  return jnp.mean(nll), {'error': jnp.mean(jnp.argmax(logits, -1) != batch['label'])}


def eval_fn(model: MLP, batch: dict[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
  """Per-example negative log-likelihood and error (0 or 1)."""
  del rng
  logits, nll = _logits_and_nll(model, batch)
  return {'nll': nll, 'error': (jnp.argmax(logits, -1) != batch['label']).astype(jnp.float32)}


def _model_problems(config: ml_collections.ConfigDict, problems: list[str]) -> None:
  model = config.model
  sizes = tuple(model.hidden_sizes)
  if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
    problems.append(
      f'config.model.hidden_sizes must be positive ints; got {sizes!r}. '
      "Fix: e.g. --config.model.hidden_sizes='(1000, 1000)'"
    )
  if not 0 <= model.bn_momentum < 1:
    problems.append(
      f'config.model.bn_momentum must be in [0, 1); got {model.bn_momentum!r}. '
      'Fix: e.g. --config.model.bn_momentum=0.99'
    )
  if not model.eps > 0:
    problems.append(f'config.model.eps must be positive; got {model.eps!r}. Fix: e.g. --config.model.eps=1e-5')
  if model.norm == 'bn' and isinstance(config.batch_size, int) and config.batch_size < 2:
    problems.append(
      f'norm=bn needs batch statistics of 2 or more examples; got batch_size={config.batch_size}. '
      'Fix: --config.batch_size=4 or larger, or norm=ln (which works at batch size 1).'
    )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError (a ValueError) listing every invalid value and its fix; touches no workdir."""
  loop.check_experiment(
    config, config_file='configs/mnist.py', norms=NORMS, check_source=check_source, more=_model_problems
  )


def _arrays(split: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
  images, labels = split
  # Permutation invariant: the network sees a flat vector of pixels, with no notion of their layout.
  return {'image': images.reshape(len(images), -1), 'label': labels.astype(np.int32)}


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """Loads the data of `config.data` and returns the Task for the loop."""
  with loop.data_errors(config.data):
    splits = load_mnist(config.data.source, config.data.dir, num_valid=config.data.get('num_valid'))
  train_data = _arrays(splits['train'])
  return loop.Task(
    build_model=functools.partial(build_model, config.model, train_data['image'].shape[1]),
    loss_fn=loss_fn,
    eval_fn=eval_fn,
    train_data=train_data,
    eval_data={'valid': _arrays(splits['valid']), 'test': _arrays(splits['test'])},
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the MLP of `config` in `workdir` (resuming it); returns the final metrics."""
  validate(config)
  return loop.train(config, workdir, build_task(config))
