"""Skip-thought vectors with and without layer normalization (paper section 6.3, Table 3, Figure 3), on the shared loop.

The training loss is the authors': -log p of the previous and of the next sentence given the centre one, summed over
both decoders, every target step (words and EOS) and the batch; it is logged per token too ('train/nll_per_token').
Each evaluation (every `config.eval.every_steps`, at checkpoints kept for good) logs the per-token NLL of held-out
triples ('eval/valid/nll_per_token', which selects the best model) and the downstream scores of the frozen encoder
('eval/downstream/sick/pearson', 'eval/downstream/mr/accuracy', ...): Figure 3's curves.

  python -m experiments.skip_thoughts --config configs/skip_thoughts.py:norm=ln --workdir runs/st_ln
  python -m experiments.skip_thoughts.evaluate --workdir runs/st_ln --eval_dir DIR     # a Table 3 row
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import loop
from experiments.data import DataError
from experiments.data import text as text_lib
from experiments.skip_thoughts import data as data_lib
from experiments.skip_thoughts import downstream, procedural
from experiments.skip_thoughts.model import SkipThoughts, triple_nll

NORMS = ('none', 'ln', 'rms')
SIZE_FIELDS = ('embed_dim', 'hidden', 'loss_chunk')


def build_model(model_config: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs) -> SkipThoughts:
  sizes = {k: model_config[k] for k in SIZE_FIELDS}
  return SkipThoughts(vocab_size, sizes['embed_dim'], sizes['hidden'], model_config.norm, rngs=rngs,
                      loss_chunk=sizes['loss_chunk'])  # fmt: skip


def _num_targets(batch) -> jax.Array:
  return (jnp.sum(batch['prev_len']) + jnp.sum(batch['next_len'])).astype(jnp.float32)


def loss_fn(model: SkipThoughts, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict]:
  """The summed NLL of both target sentences over the batch, and the same per target token."""
  del rng  # No dropout or sampling in skip-thoughts.
  prev_B, next_B = triple_nll(model, batch)
  loss = jnp.sum(prev_B) + jnp.sum(next_B)
  return loss, {'nll_per_token': loss / _num_targets(batch)}


def eval_fn(model: SkipThoughts, batch: dict[str, jax.Array], rng: jax.Array) -> dict:
  """Per-token NLL (a token-weighted mean over the split) and the NLL of each triple's two targets."""
  del rng
  prev_B, next_B = triple_nll(model, batch)
  tokens_B = (batch['prev_len'] + batch['next_len']).astype(jnp.float32)
  # The loop's weighted mean is sum(w * v) / sum(w): per-triple means weighted by token counts give sum / tokens.
  return {'nll_per_token': ((prev_B + next_B) / tokens_B, tokens_B), 'nll_per_triple': prev_B + next_B}


@functools.partial(nnx.jit, static_argnums=())
def _encode(model: SkipThoughts, ids: jax.Array, lengths: jax.Array) -> jax.Array:
  return model.encode(ids, lengths)


def sentence_encoder(
  model: SkipThoughts, vocab: list[str], batch_size: int = 256, pad_multiple: int = 8
) -> downstream.Encoder:
  """Raw sentences -> encoder vectors [N, H], tokenized as `text.tokenize` does, unknown words as UNK."""
  ids = text_lib.word_ids(vocab)

  def encode(sentences):
    encoded = [text_lib.encode(text_lib.tokenize(s), ids) for s in sentences]
    tokens, offsets = text_lib.flatten(encoded)
    order = np.argsort([len(e) for e in encoded], kind='stable')  # Similar lengths share a batch: less padding.
    out = np.zeros((len(encoded), model.hidden), np.float32)
    for start in range(0, len(order), batch_size):
      rows = order[start : start + batch_size]
      length = text_lib.bucket(max(len(encoded[i]) for i in rows) + 1, pad_multiple)
      padded, lengths = text_lib.pad_sentences(tokens, offsets, rows, length)
      out[rows] = np.asarray(_encode(model, jnp.asarray(padded), jnp.asarray(lengths)))
    return out

  return encode


def cv_options(eval_config: ml_collections.ConfigDict) -> dict:
  return {'folds': eval_config.folds, 'inner_folds': eval_config.inner_folds, 'cs': tuple(eval_config.cs)}


def downstream_evaluator(eval_config, vocab: list[str], eval_dir: str, pad_multiple: int) -> loop.Evaluator:
  def evaluate(model: SkipThoughts, context: loop.EvalContext) -> dict[str, float]:
    del context
    encode = sentence_encoder(model, vocab, pad_multiple=pad_multiple)
    return downstream.evaluate_all(encode, eval_dir, tuple(eval_config.tasks), **cv_options(eval_config))

  return evaluate


def _cache_dir(data_config) -> str:
  """Where the encoded corpus goes: config.data.cache_dir, else a temporary directory removed at exit.

  Not the workdir: the task is built before the loop claims the workdir, and a wrong command must leave it be.
  """
  if data_config.cache_dir:
    return os.path.expanduser(os.path.expandvars(data_config.cache_dir))
  directory = tempfile.mkdtemp(prefix='skip_thoughts_corpus_')
  atexit.register(shutil.rmtree, directory, True)
  return directory


def load_corpus(config: ml_collections.ConfigDict):
  """(tokens, offsets, vocab, train centres, valid centres) of `config.data`."""
  data = config.data
  if data.source == 'procedural':
    sentences = procedural.corpus(data.num_stories + data.valid_stories, data.seed)
    vocab = text_lib.build_vocab(sentences, data.vocab_size)
    ids = text_lib.word_ids(vocab)
    tokens, offsets = text_lib.flatten(text_lib.encode(s, ids) for s in sentences)
    cut = 5 * data.num_stories  # Five sentences a story; the held-out stories come last.
  else:
    tokens, offsets, vocab = data_lib.read_text_corpus(data.dir, data.vocab_size, _cache_dir(data))
    n = len(offsets) - 1
    cut = n - min(max(3, n // 100), 10_000)  # The last 1% (at most 10,000 sentences) is held out.
  train = data_lib.valid_centres(offsets, data.max_len, 0, cut)
  valid = data_lib.valid_centres(offsets, data.max_len, cut, len(offsets) - 1)
  if len(train) < config.batch_size or len(valid) == 0:
    raise loop.ConfigError(
      f'The corpus has {len(train)} training and {len(valid)} held-out triples with sentences under '
      f'{data.max_len} words; batch_size is {config.batch_size}. Fix: a larger corpus or a smaller --config.batch_size.'
    )
  return tokens, offsets, vocab, train, valid


def _expand(path: str) -> str:
  return os.path.expanduser(os.path.expandvars(path))


def downstream_sources(eval_config: ml_collections.ConfigDict) -> dict[str, str]:
  """{task: 'real' | 'procedural'}: which data each downstream task is scored on.

  Without config.eval.dir every task is procedural. With it, a task whose standard files are all there is real; a
  task whose files are not is procedural when config.eval.missing is 'procedural' (the `real` variant: MR and CR are
  real here, SICK, SUBJ and MPQA are not), else it stays 'real' and the missing files are an error.
  """
  if not eval_config.dir:
    return {task: 'procedural' for task in eval_config.tasks}
  directory = _expand(eval_config.dir)
  fill = eval_config.get('missing', 'error') == 'procedural'
  return {
    task: 'procedural' if fill and not downstream.has_files(directory, task) else 'real' for task in eval_config.tasks
  }


def eval_directory(config: ml_collections.ConfigDict) -> str:
  """A directory holding every task's files: config.eval.dir's where real, procedural sets (a function of
  config.data.seed) elsewhere; config.eval.dir itself when every task is real.

  Not into the workdir: the task is built before the loop claims the workdir, and a wrong command must leave it be.
  """
  sources = downstream_sources(config.eval)
  if config.eval.dir and all(s == 'real' for s in sources.values()):
    return _expand(config.eval.dir)
  directory = tempfile.mkdtemp(prefix='skip_thoughts_eval_')
  atexit.register(shutil.rmtree, directory, True)
  procedural.write_eval_dir(directory, config.data.seed, config.eval.per_class, tuple(config.eval.sick_sizes))
  for task in (t for t, source in sources.items() if source == 'real'):
    for name in downstream.task_files(task):  # The real files replace the procedural ones of the same name.
      os.remove(os.path.join(directory, name))
      os.symlink(os.path.join(_expand(config.eval.dir), name), os.path.join(directory, name))
  return directory


def build_task(config: ml_collections.ConfigDict) -> loop.Task:
  """Loads (or generates) the corpus and the downstream sets and returns the Task for the loop."""
  tokens, offsets, vocab, train, valid = load_corpus(config)
  make = functools.partial(
    data_lib.TripleSource, tokens, offsets, batch_size=config.batch_size, pad_multiple=config.data.pad_multiple
  )
  evaluators = {}
  if config.eval.tasks:
    eval_dir = eval_directory(config)
    evaluators['downstream'] = downstream_evaluator(config.eval, vocab, eval_dir, config.data.pad_multiple)
  return loop.Task(
    build_model=functools.partial(build_model, config.model, len(vocab)),
    loss_fn=loss_fn,
    eval_fn=eval_fn,
    train_data=make(train),
    eval_data={'valid': make(valid)},
    evaluators=evaluators,
    metadata={'vocab': vocab, 'downstream_sources': downstream_sources(config.eval) if config.eval.tasks else {}},
  )


def _check_eval(config: ml_collections.ConfigDict, problems: list[str]) -> None:
  ev, data = config.get('eval'), config.data
  if ev is None:
    problems.append('config.eval is missing: build the config with configs/skip_thoughts.py.')
    return
  unknown = [t for t in ev.tasks if t not in downstream.TASKS]
  if unknown:
    problems.append(f'config.eval.tasks has unknown {unknown}; use a subset of {",".join(downstream.TASKS)}.')
  if ev.dir and not os.path.isdir(_expand(ev.dir)):
    problems.append(f'config.eval.dir={ev.dir!r} is not a directory. Fix: the directory of the downstream files.')
  elif ev.get('missing', 'error') not in ('error', 'procedural'):
    problems.append(f"config.eval.missing={ev.missing!r}: use 'error' or 'procedural'.")
  elif not unknown:
    # The real downstream files are read now, before any training: a bad file must not stop a run hours in.
    for task, source in downstream_sources(ev).items():
      if source == 'real':
        try:
          downstream.check_task(_expand(ev.dir), task)
        except DataError as e:
          problems.append(str(e))
  if ev.inner_folds < 2 or ev.folds < 2:
    problems.append('config.eval.folds and inner_folds must be >= 2. Fix: e.g. --config.eval.inner_folds=10')
  if not isinstance(data.max_len, int) or data.max_len < 2 or data.vocab_size < 3:
    problems.append('config.data.max_len must be >= 2 and vocab_size >= 3. Fix: e.g. --config.data.max_len=30')
  if ev.every_steps != config.eval_every_steps:
    problems.append(
      f'config.eval.every_steps={ev.every_steps} differs from config.eval_every_steps={config.eval_every_steps}. '
      'Fix: set only --config.eval.every_steps (the config copies it), or both to the same value.'
    )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError (a ValueError) listing every invalid value and its fix; touches no workdir."""
  loop.check_experiment(
    config,
    config_file='configs/skip_thoughts.py',
    norms=NORMS,
    check_source=data_lib.check_source,
    positive_int_fields=SIZE_FIELDS,
    more=_check_eval,
  )


def load_trained_model(workdir: str, which: str | int = 'latest') -> tuple[SkipThoughts, list[str]]:
  """The model of a run's workdir (see `loop.load_model` for `which`) and its vocabulary, without the corpus."""
  config = loop.read_config(workdir)
  vocab = loop.read_task_metadata(workdir).get('vocab')
  if not vocab:
    raise FileNotFoundError(f'{workdir} has no vocabulary (task.json): was it trained by experiments.skip_thoughts?')
  return loop.load_model(workdir, functools.partial(build_model, config.model, len(vocab)), which), vocab


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates the skip-thoughts model of `config` in `workdir` (resuming it); returns the final metrics."""
  validate(config)
  return loop.train(config, workdir, build_task(config))
