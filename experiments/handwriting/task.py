"""Handwriting synthesis with and without layer normalization (paper section 6.5, Figure 5), on the shared loop.

The model is Graves' synthesis network (`experiments.handwriting.model`); `norm='ln'` uses LN-LSTMs (eq. 20-22) in
all its layers, `norm='rms'` (beyond the paper) RMS-LSTMs. The training loss is the batch mean of the per-sequence
negative log-likelihood in nats (Figure 5's y axis, with the sign flipped); the loop also logs it per point. Each
evaluation logs both on the valid and test splits ('eval/test/nll', 'eval/test/nll_per_point'); the best checkpoint
is the one with the lowest valid NLL.

  python -m experiments.handwriting --config configs/handwriting.py:norm=ln --workdir runs/hw_ln
  python -m experiments.handwriting.sample --workdir runs/hw_ln --text "layer norm writes" --out hw.png
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from experiments import loop
from experiments.handwriting import data
from experiments.handwriting.model import SynthesisNetwork, sequence_nll

NORMS = ('none', 'ln', 'rms')
SIZE_FIELDS = ('hidden', 'layers', 'window_mixtures', 'output_mixtures')


def build_model(model_config: ml_collections.ConfigDict, alphabet_size: int, rngs: nnx.Rngs) -> SynthesisNetwork:
  """The synthesis network of `config.model` over an alphabet of `alphabet_size` symbols."""
  sizes = {k: model_config[k] for k in SIZE_FIELDS}
  return SynthesisNetwork(alphabet_size, norm=model_config.norm, rngs=rngs, **sizes)


def loss_fn(model: SynthesisNetwork, batch: dict[str, jax.Array], rng: jax.Array):
  """The batch mean of the per-sequence NLL (nats), and the NLL per predicted point."""
  del rng  # The model is deterministic given the data.
  nll_B, counts_B = sequence_nll(model, batch)
  return jnp.mean(nll_B), {'nll_per_point': jnp.sum(nll_B) / jnp.maximum(jnp.sum(counts_B), 1.0)}


def eval_fn(model: SynthesisNetwork, batch: dict[str, jax.Array], rng: jax.Array):
  """Per-sequence NLL, and the NLL per point: each sequence's mean weighted by its points (sum / total points)."""
  del rng
  nll_B, counts_B = sequence_nll(model, batch)
  return {'nll': nll_B, 'nll_per_point': (nll_B / jnp.maximum(counts_B, 1.0), counts_B)}


def _more_problems(config: ml_collections.ConfigDict, problems: list[str]) -> None:
  d = config.data
  for key in ('seq_len', 'max_chars', 'num_train', 'num_valid', 'num_test', 'num_writers'):
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < (2 if key == 'seq_len' else 1):
      problems.append(
        f'config.data.{key} must be a positive int (seq_len >= 2); got {value!r}. Fix: e.g. --config.data.{key}=100'
      )
  if not isinstance(d.get('max_step'), int | float) or d.get('max_step') <= 0:
    problems.append(
      f'config.data.max_step must be a positive number; got {d.get("max_step")!r}. Fix: e.g. --config.data.max_step=500'
    )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError (a ValueError) listing every invalid value and its fix; touches no workdir."""
  fonts = config.get('data', {}).get('fonts', 'cursive')
  loop.check_experiment(
    config,
    config_file='configs/handwriting.py',
    norms=NORMS,
    check_source=lambda source, data_dir: data.check_source(source, data_dir, fonts),
    positive_int_fields=SIZE_FIELDS,
    more=_more_problems,
  )


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """Loads (or renders) the data of `config.data` and returns the Task for the loop."""
  splits, metadata = data.load_splits(config.data)
  return loop.Task(
    build_model=functools.partial(build_model, config.model, len(metadata['alphabet'])),
    loss_fn=loss_fn,
    eval_fn=eval_fn,
    train_data=splits['train'],
    eval_data={'valid': splits['valid'], 'test': splits['test']},
    metadata=metadata,  # The alphabet and offset statistics: sample.py needs them, not the data set.
  )


def load_trained_model(workdir: str, which: str | int = 'best') -> tuple[SynthesisNetwork, dict]:
  """The network of a run's workdir (see `loop.load_model` for `which`) and its task metadata, without the data."""
  config = loop.read_config(workdir)
  metadata = loop.read_task_metadata(workdir)
  if 'alphabet' not in metadata:
    raise FileNotFoundError(f'{workdir} records no alphabet (task.json): was it trained by experiments.handwriting?')
  build = functools.partial(build_model, config.model, len(metadata['alphabet']))
  return loop.load_model(workdir, build, which), metadata


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the synthesis network of `config` in `workdir` (resuming it); returns the final metrics."""
  validate(config)
  return loop.train(config, workdir, build_task(config))
