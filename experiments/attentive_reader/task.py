"""The attentive reader on the shared loop: loss with per-minibatch entity permutation, validation error, the Task.

Per training minibatch the entity ids are permuted afresh (one random permutation of all `@entityN` ids applied to
passage, query and answer alike, drawn from the step's key), as the reference code does; evaluation data are not
permuted (the code's `permute_ents=False` for validation). The loss is the batch mean of -log p(answer) under the
softmax over the whole vocabulary; the metric is the validation error, arg-max over the vocabulary != answer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import loop
from experiments.attentive_reader import data as qa_data
from experiments.attentive_reader.model import NORMS, AttentiveReader

SIZE_FIELDS = ('dim',)


def build_model(model_config: ml_collections.ConfigDict, vocab_size: int, max_steps: int, rngs: nnx.Rngs):
  """The reader of `config.model` over a vocabulary of `vocab_size`, BN statistics for `max_steps` steps."""
  return AttentiveReader(
    vocab_size,
    model_config.dim,
    norm=model_config.norm,
    max_steps=max_steps,
    ln_gain_init=model_config.ln_gain_init,
    bn_gamma=model_config.bn_gamma,
    dropout_rate=model_config.dropout,
    query_only=model_config.query_only,
    rngs=rngs,
  )


def permute_entities(batch: dict, entity_ids: jax.Array, vocab_size: int, key: jax.Array) -> dict:
  """The batch with every entity id i replaced by perm(i), one random permutation for the whole minibatch."""
  entity_ids = jnp.asarray(entity_ids, jnp.int32)
  perm = jax.random.permutation(key, entity_ids.shape[0])
  table = jnp.arange(vocab_size, dtype=jnp.int32).at[entity_ids].set(entity_ids[perm])
  return {**batch, 'passage': table[batch['passage']], 'query': table[batch['query']], 'answer': table[batch['answer']]}


def _nll_and_error(model, batch, rng):
  logits, _ = model(batch, rng)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch['answer'])
  return nll, (jnp.argmax(logits, -1) != batch['answer']).astype(jnp.float32)


def loss_fn(model, batch, rng, *, entity_ids: np.ndarray, vocab_size: int):
  """Mean -log p(answer) of the entity-permuted batch with dropout, and its training error."""
  permute_key, dropout_key = jax.random.split(rng)
  batch = permute_entities(batch, entity_ids, vocab_size, permute_key) if len(entity_ids) else batch
  nll, error = _nll_and_error(model, batch, dropout_key)
  return jnp.mean(nll), {'error': jnp.mean(error)}


def eval_fn(model, batch, rng):
  """Per-example -log p(answer) and error (0 or 1), without dropout or permutation."""
  del rng
  nll, error = _nll_and_error(model, batch, None)
  return {'nll': nll, 'error': error}


def _model_problems(config: ml_collections.ConfigDict, problems: list[str]) -> None:
  model = config.model
  checks = {
    'dropout': (lambda v: isinstance(v, float | int) and 0 <= v < 1, 'in [0, 1)', 0.5),
    'ln_gain_init': (lambda v: isinstance(v, float | int) and v > 0, 'positive', 1.0),
    'bn_gamma': (lambda v: isinstance(v, float | int) and v > 0, 'positive', 0.1),
  }
  for key, (ok, requirement, example) in checks.items():
    if not ok(model.get(key)):
      problems.append(
        f'config.model.{key} must be {requirement}; got {model.get(key)!r}. Fix: --config.model.{key}={example}'
      )
  if model.norm in ('bn', 'bn_everywhere') and isinstance(config.batch_size, int) and config.batch_size < 2:
    problems.append(
      f'norm={model.norm} needs batch statistics: batch_size >= 2; got {config.batch_size}. Fix: --config.batch_size=64'
    )
  data = config.data
  if data.source == 'procedural':
    for key in ('train_size', 'valid_size', 'num_entities', 'entities_per_passage', 'facts'):
      value = data.get(key)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.append(f'config.data.{key} must be a positive int; got {value!r}. Fix: e.g. --config.data.{key}=8')
    if (
      isinstance(data.get('train_size'), int)
      and isinstance(config.batch_size, int)
      and data.train_size < config.batch_size
    ):
      message = f'config.data.train_size ({data.train_size}) is below batch_size ({config.batch_size}): no full batch.'
      problems.append(f'{message} Fix: --config.data.train_size={config.batch_size * 10}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError (a ValueError) listing every invalid value and its fix; touches no workdir."""
  loop.check_experiment(
    config,
    config_file='configs/attentive_reader.py',
    norms=NORMS,
    check_source=qa_data.check_source,
    positive_int_fields=SIZE_FIELDS,
    more=_model_problems,
  )


def load_data(data_config: ml_collections.ConfigDict) -> qa_data.QAData:
  """The splits and vocabulary of `config.data`."""
  if data_config.source == 'procedural':
    sizes = {'train': data_config.train_size, 'valid': data_config.valid_size}
    return qa_data.procedural(
      sizes,
      seed=data_config.seed,
      num_entities=data_config.num_entities,
      entities_per_passage=data_config.entities_per_passage,
      facts=data_config.facts,
    )
  if data_config.source == 'top4':
    return qa_data.load_top4(data_config.dir)
  return qa_data.load_questions(
    data_config.dir, top_n=data_config.top_sentences, min_count=data_config.min_count, cache_dir=data_config.cache_dir
  )


def build_task(config: ml_collections.ConfigDict, data: qa_data.QAData | None = None) -> loop.Task:
  """The Task for the loop: train on 'train', evaluate 'valid' (and 'test' once, at the end, if the data have it)."""
  data = data or load_data(config.data)
  vocab_size = len(data.vocab)
  max_steps = int(data.splits['train'].passages.lengths.max())
  eval_splits = {
    name: qa_data.QASource(s, config.data.pad_multiple) for name, s in data.splits.items() if name != 'train'
  }
  return loop.Task(
    build_model=functools.partial(build_model, config.model, vocab_size, max_steps),
    loss_fn=functools.partial(loss_fn, entity_ids=data.entity_ids, vocab_size=vocab_size),
    eval_fn=eval_fn,
    train_data=qa_data.QASource(data.splits['train'], config.data.pad_multiple),
    eval_data=eval_splits,
    final_only=('test',) if 'test' in eval_splits else (),
    metadata={'vocab_size': vocab_size, 'max_steps': max_steps, 'vocab': data.vocab},
  )


def load_trained_model(workdir: str, which: str | int = 'best') -> tuple[AttentiveReader, list[str]]:
  """The reader of a run's workdir and its vocabulary, rebuilt without the data set."""
  config = loop.read_config(workdir)
  meta = loop.read_task_metadata(workdir)
  if 'vocab_size' not in meta:
    raise FileNotFoundError(
      f'{workdir} records no vocabulary (task.json): was it trained by experiments.attentive_reader?'
    )
  build = functools.partial(build_model, config.model, meta['vocab_size'], meta['max_steps'])
  return loop.load_model(workdir, build, which), meta['vocab']


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the reader of `config` in `workdir` (resuming it); returns the final metrics."""
  validate(config)
  return loop.train(config, workdir, build_task(config))
