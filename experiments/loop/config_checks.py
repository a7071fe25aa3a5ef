"""Checks of the config fields the loop reads (`configs/common.py`) and the part every experiment's `validate` shares.

Each problem names the field and a fix; all of them are reported at once, before anything is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import ml_collections

from experiments.loop.errors import ConfigError
from experiments.loop.optim import optimizer_problems

BEST_MODES = ('min', 'max')
# Metric names (a suffix after the last '/') that are better when larger; anything else is better when smaller.
_HIGHER_IS_BETTER = ('accuracy', 'acc', 'r_sum', 'r1', 'r5', 'r10', 'recall', 'score', 'pearson', 'spearman', 'f1')


def default_best_mode(metric: str) -> str:
  """'max' for accuracies, recalls and scores; 'min' for errors, losses and NLLs."""
  name = metric.rsplit('/', 1)[-1].lower()
  return 'max' if name.startswith(_HIGHER_IS_BETTER) or 'r@' in name else 'min'


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Problems with the fields the loop reads (see `configs/common.py`), each naming the field and the fix."""
  problems = []

  def get(key):
    node = config
    for part in key.split('.'):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        problems.append(f'config.{key} is missing: start the config from configs.common.base_config().')
        return None
      node = node[part]
    return node

  def check(key, ok, requirement, example):
    value = get(key)
    if value is not None and not ok(value):
      problems.append(f'config.{key} must be {requirement}; got {value!r}. Fix: e.g. --config.{key}={example}')

  positive_int = lambda v: _is_int(v) and v > 0
  # numpy's generators (the data order) refuse a negative seed: caught here, not as a traceback after the first step.
  check('seed', lambda v: _is_int(v) and v >= 0, 'an int >= 0', 0)
  check('batch_size', positive_int, 'a positive int', 128)
  check('num_epochs', positive_int, 'a positive int', 10)
  check('num_train_steps', lambda v: _is_int(v) and (v > 0 or v == -1), 'a positive int, or -1 (use num_epochs)', -1)
  check('log_every_steps', positive_int, 'a positive int', 100)
  check('eval_every_epochs', positive_int, 'a positive int', 1)
  check('eval_every_steps', lambda v: _is_int(v) and v >= 0, 'an int >= 0 (0: use eval_every_epochs)', 0)
  check('eval_batch_size', positive_int, 'a positive int', 1000)
  check('checkpoint_every_steps', positive_int, 'a positive int', 1000)
  check('checkpoints_to_keep', lambda v: _is_int(v) and v >= 2, 'an int >= 2 (a corrupt latest one falls back)', 3)
  check('keep_every_steps', lambda v: _is_int(v) and v >= 0, 'an int >= 0 (0: keep none for good)', 0)
  check('steps_per_dispatch', positive_int, 'a positive int', 16)
  check('best_metric', lambda v: isinstance(v, str), "a metric name such as 'eval/valid/error', or ''", "''")
  check('best_mode', lambda v: v in ('', *BEST_MODES), "'min', 'max' or '' (from the metric's name)", 'min')
  data = config.get('data')
  data_seed = data.get('seed') if isinstance(data, ml_collections.ConfigDict) else None
  if data_seed is not None and not (_is_int(data_seed) and data_seed >= 0):  # Procedural data: numpy's generators.
    problems.append(f'config.data.seed must be an int >= 0; got {data_seed!r}. Fix: e.g. --config.data.seed=0')
  optimizer = get('optimizer')
  if isinstance(optimizer, ml_collections.ConfigDict):
    problems.extend(optimizer_problems(optimizer))
  best = config.get('best_metric')
  if isinstance(best, str) and best and not best.startswith('eval/'):
    problems.append(
      f"config.best_metric must name an evaluation metric ('eval/<split>/<name>'); got {best!r}. "
      'Fix: e.g. --config.best_metric=eval/valid/error'
    )
  return problems


def raise_config_problems(problems: list[str]) -> None:
  """Raises one ConfigError listing every problem, if there are any."""
  if problems:
    raise ConfigError('Invalid config:\n  - ' + '\n  - '.join(problems))


def validate_training_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, listing every problem and its fix, if a field the loop reads is invalid."""
  raise_config_problems(config_problems(config))


def check_experiment(
  config: ml_collections.ConfigDict,
  *,
  config_file: str,
  norms: Sequence[str],
  check_source: Callable[[str, str | None], object],
  positive_int_fields: Sequence[str] = (),
  more: Callable[[ml_collections.ConfigDict, list[str]], None] | None = None,
) -> None:
  """The `validate` every experiment shares: the loop's fields, `model.norm`, `data.source`/`dir`, and its own.

  Args:
    config: the experiment's config.
    config_file: the config file that builds it (named in the message when `model` or `data` is missing).
    norms: the allowed values of `config.model.norm`.
    check_source: (source, dir) -> anything; raises ValueError naming the problem with the data.
    positive_int_fields: fields of `config.model` that must be positive ints.
    more: (config, problems) -> None; appends the experiment's own problems.

  Raises:
    ConfigError: listing every problem and its fix.
  """
  problems = config_problems(config)
  model, data = config.get('model'), config.get('data')
  if model is None or data is None:
    problems.append(f'config.model and config.data are missing: build the config with {config_file}.')
    raise_config_problems(problems)
  if model.get('norm') not in norms:
    # The paper's method is the example fix wherever it is allowed, not whichever norm happens to be listed last.
    example = 'ln' if 'ln' in norms else norms[-1]
    problems.append(
      f'config.model.norm must be one of {", ".join(norms)}; got {model.get("norm")!r}. '
      f'Fix: e.g. --config.model.norm={example}'
    )
  for key in positive_int_fields:
    value = model.get(key)
    if not _is_int(value) or value < 1:
      problems.append(f'config.model.{key} must be a positive int; got {value!r}. Fix: e.g. --config.model.{key}=2')
  num_valid = data.get('num_valid')
  if num_valid is not None and (not _is_int(num_valid) or num_valid < 1):
    # 0 is refused too: every experiment evaluates a 'valid' split, which would then be empty.
    problems.append(
      f'config.data.num_valid must be a positive int (training examples held out for validation), or None for the '
      f"source's standard split; got {num_valid!r}. Fix: e.g. --config.data.num_valid=1000"
    )
  if more is not None:
    more(config, problems)
  try:
    check_source(data.source, data.dir)
  except ValueError as e:
    problems.append(f'config.data (source={data.source!r}, dir={data.dir!r}): {e}')
  raise_config_problems(problems)


@contextlib.contextmanager
def data_errors(data: ml_collections.ConfigDict):
  """Turns a ValueError from loading `config.data` into a ConfigError (exit status 2, one message, no traceback).

  `validate` checks only what it can without reading the data; what shows only when reading (a corrupt file, a
  hold-out larger than the file) is still the user's data or config, named with its fix by the reader.
  """
  try:
    yield
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f'config.data (source={data.source!r}, dir={data.dir!r}): {e}') from None
