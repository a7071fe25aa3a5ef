"""Order-embeddings for image-caption retrieval with and without layer normalization (paper section 6.1, Table 2,
Figure 1), on the shared loop.

Training: batches of images, each with one of its captions drawn at random (`data.TrainSource`); the loss is the
summed contrastive hinge of `model.contrastive_loss`. Evaluation is whole-split and host-side (`evaluate.py`):
'val' every `eval_every_steps` on the dev fold (the first `eval.dev_images` images of val: the model selection of
`config.best_metric`, image R@1 + R@5 + R@10), 'test' once at the end on the selected model, in folds of
`eval.fold_size` images, metrics averaged over the folds (Table 2). The procedural source's final evaluation also
writes `retrieval.png`: test captions with the 5 images the model ranks first.

  python -m experiments.order_embeddings --config configs/order_embeddings.py:norm=ln --workdir runs/oe_ln
"""

from __future__ import annotations

import functools
import os

import ml_collections
import numpy as np
from flax import nnx

from experiments import loop
from experiments.data import text
from experiments.order_embeddings import data, evaluate
from experiments.order_embeddings.model import MODELS, OrderEmbedding, contrastive_loss

NORMS = ('none', 'ln', 'rms')
SIZE_FIELDS = ('word_dim', 'dim')
PICTURE = 'retrieval.png'


def build_model(model_config: ml_collections.ConfigDict, vocab_size: int, image_features: int, rngs: nnx.Rngs):
  """The OrderEmbedding of `config.model` for a vocabulary of `vocab_size` ids and images of `image_features`."""
  return OrderEmbedding(
    vocab_size,
    image_features,
    word_dim=model_config.word_dim,
    dim=model_config.dim,
    norm=model_config.norm,
    model=model_config.model,
    rngs=rngs,
  )


def loss_fn(model: OrderEmbedding, batch: dict, rng, *, margin: float):
  """The summed contrastive hinge over the batch, and the mean error of the matching and of the other pairs."""
  del rng  # Deterministic model; the caption draw is part of the data order.
  s_BxD = model.encode_captions(batch['tokens'], batch['lengths'])
  v_BxD = model.encode_images(batch['image'])
  errors_BxB = model.errors(s_BxD, v_BxD)
  b = errors_BxB.shape[0]
  match = errors_BxB.trace() / b
  other = (errors_BxB.sum() - errors_BxB.trace()) / (b * (b - 1))
  return contrastive_loss(errors_BxB, margin), {'match_error': match, 'contrast_error': other}


def _problems(config: ml_collections.ConfigDict, problems: list[str]) -> None:
  model, ev, d = config.model, config.get('eval'), config.data
  if model.get('model') not in MODELS:
    problems.append(
      f'config.model.model must be one of {", ".join(MODELS)}; got {model.get("model")!r}. '
      'Fix: e.g. --config.model.model=oe'
    )
  if not (isinstance(model.get('margin'), int | float) and model.margin > 0):
    problems.append(
      f'config.model.margin must be a positive number; got {model.get("margin")!r}. '
      'Fix: e.g. --config.model.margin=0.05'
    )
  if ev is None:
    problems.append('config.eval is missing: build the config with configs/order_embeddings.py.')
    return
  for key in ('dev_images', 'fold_size'):
    value = ev.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      problems.append(f'config.eval.{key} must be a positive int; got {value!r}. Fix: e.g. --config.eval.{key}=1000')
  if not isinstance(d.get('pad_multiple'), int) or d.pad_multiple < 1:
    problems.append(
      f'config.data.pad_multiple must be a positive int; got {d.get("pad_multiple")!r}. '
      'Fix: e.g. --config.data.pad_multiple=8'
    )
  if d.source == 'procedural':
    for key in ('num_train', 'num_val', 'num_test'):
      value = d.get(key)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.append(f'config.data.{key} must be a positive int; got {value!r}. Fix: e.g. --config.data.{key}=1000')
    if isinstance(d.get('num_train'), int) and isinstance(config.batch_size, int) and d.num_train < config.batch_size:
      problems.append(
        f'config.data.num_train={d.num_train} is smaller than one batch ({config.batch_size}). '
        f'Fix: --config.data.num_train={config.batch_size} or more, or a smaller --config.batch_size.'
      )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError (a ValueError) listing every invalid value and its fix; touches no workdir."""
  loop.check_experiment(
    config,
    config_file='configs/order_embeddings.py',
    norms=NORMS,
    check_source=data.check_source,
    positive_int_fields=SIZE_FIELDS,
    more=_problems,
  )


def _split_evaluator(config, split: data.Split, tokens, num_images: int, pictures: bool):
  """An evaluator: the split's first `num_images` images and their captions, in folds of `eval.fold_size`."""
  features = split.features(np.arange(num_images))
  tokens = tokens[: data.CAPTIONS_PER_IMAGE * num_images]
  fold_size = min(config.eval.fold_size, num_images)

  def evaluator(model: OrderEmbedding, context: loop.EvalContext) -> dict[str, float]:
    s = evaluate.encode_captions(model, tokens, config.eval_batch_size, config.data.pad_multiple)
    v = evaluate.encode_images(model, features, config.eval_batch_size)
    if pictures and context.final and context.is_writer and split.pixels is not None:
      from experiments.order_embeddings import pictures as pictures_lib  # matplotlib only when drawing.

      e = evaluate.error_matrix(s[: 5 * fold_size], v[:fold_size], model.model)
      pictures_lib.save_retrieval(e, split, os.path.join(context.workdir, PICTURE))
    return evaluate.fold_metrics(s, v, model.model, fold_size)

  return evaluator


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """Loads the data of `config.data`, builds the vocabulary and returns the Task for the loop."""
  splits = data.load_splits(config.data)
  dev_images = min(config.eval.dev_images, splits['val'].num_images)
  vocab = data.vocabulary(splits, dev_images)
  tokens = {s: text.encode_sentences(split.captions, vocab) for s, split in splits.items()}
  image_features = splits['train'].features(np.arange(1)).shape[1]
  vocab_size = len(vocab) + 2
  return loop.Task(
    build_model=functools.partial(build_model, config.model, vocab_size, image_features),
    loss_fn=functools.partial(loss_fn, margin=config.model.margin),
    eval_fn=None,
    train_data=data.TrainSource(splits['train'], tokens['train'], config.data.pad_multiple),
    evaluators={
      'val': _split_evaluator(config, splits['val'], tokens['val'], dev_images, pictures=False),
      'test': _split_evaluator(config, splits['test'], tokens['test'], splits['test'].num_images, pictures=True),
    },
    final_only=('test',),
    # The vocabulary in id order (from 2) and the feature size: enough to rebuild the model and encode new captions.
    metadata={'words': sorted(vocab, key=vocab.get), 'image_features': int(image_features)},
  )


def load_trained_model(workdir: str, which: str | int = 'best') -> tuple[OrderEmbedding, dict[str, int]]:
  """(the model of a run's workdir, its vocabulary), built without reading the data set."""
  config = loop.read_config(workdir)
  meta = loop.read_task_metadata(workdir)
  if 'words' not in meta:
    raise FileNotFoundError(
      f'{workdir} records no vocabulary (task.json): was it trained by experiments.order_embeddings?'
    )
  vocab = {w: i + 2 for i, w in enumerate(meta['words'])}
  build = functools.partial(build_model, config.model, len(vocab) + 2, meta['image_features'])
  return loop.load_model(workdir, build, which), vocab


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the model of `config` in `workdir` (resuming it); returns the final metrics."""
  validate(config)
  return loop.train(config, workdir, build_task(config))
