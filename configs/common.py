"""What every experiment's config shares: the training-loop fields and big_vision-style `parse_arg`.

Each `configs/<name>.py` starts from `base_config()` (the fields `experiments/loop/` reads), adds its `data` and
`model` sections, and parses its variants with `parse_arg`.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The training-loop fields, with defaults; `experiments.loop.validate_training_config` checks them."""
  config = ml_collections.ConfigDict()
  # Run
  config.seed = 0  # Model init, per-step randomness and the data order all derive from it.

  # Schedule. The run lasts `num_epochs` epochs of `train_size // batch_size` steps (the last partial batch of each
  # epoch is dropped), unless `num_train_steps` > 0, which stops it after that many steps (smoke runs and tests).
  config.batch_size = 128  # Global batch, split over all devices.
  config.num_epochs = 10
  config.num_train_steps = -1

  # Optimizer
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'  # The one optimizer of every experiment in the paper.
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  # False: the order-embedding / skip-thoughts Theano code's Adam (effectively no bias correction; loop/optim.py).
  config.optimizer.bias_correction = True
  # none | global_norm | per_tensor_norm (each tensor on its own) | attentive_reader (that code's rule; optim.py).
  config.optimizer.grad_clip = 'none'
  config.optimizer.grad_clip_norm = 0.0  # The clipping threshold.
  config.optimizer.schedule = 'constant'  # constant | cosine | linear_decay (both to 0 at the last step).
  config.optimizer.warmup_steps = 0  # Linear warm-up from 0 over this many steps.

  # Cadence. Every periodic action uses one predicate: `step % every == 0 or step == last step`.
  config.log_every_steps = 100  # Training metrics (means over the steps since the last log) and the progress line.
  config.eval_every_epochs = 1  # Evaluation of every eval split; also after the last step.
  config.eval_every_steps = 0  # If > 0, evaluate every this many steps instead (e.g. 300 for order-embeddings).
  config.eval_batch_size = 1_000  # The last partial eval batch is padded and masked: every example counts once.
  config.checkpoint_every_steps = 1_000  # Also after the last step.
  config.checkpoints_to_keep = 3  # At least 2, so that a corrupt latest checkpoint has a predecessor.
  config.keep_every_steps = 0  # If > 0, checkpoints at multiples of it are kept for good (scores over training).

  # Model selection. With a metric, the best checkpoint is kept (checkpoints_best/, best.json) and the run ends by
  # logging best/*: every evaluation of the best model. '' selects nothing (the last model is the result).
  config.best_metric = ''  # e.g. 'eval/valid/error', 'eval/retrieval/r_sum'.
  config.best_mode = ''  # min | max | '' (max for accuracies, recalls and scores; min for errors and losses).
  # Training steps run in one device call (a `lax.scan`): at small batches the per-call overhead would dominate.
  config.steps_per_dispatch = 16
  return config


def _parse_value(key: str, text: str, default):
  if isinstance(default, bool):  # Before int: bool is an int subclass.
    lowered = text.lower()
    if lowered in ('1', 'true', 'yes', ''):
      return True
    if lowered in ('0', 'false', 'no'):
      return False
    raise ValueError(f'Config variant {key}={text!r}: expected a boolean (true/false).')
  for kind in (int, float):
    if isinstance(default, kind):
      try:
        return kind(text)
      except ValueError:
        raise ValueError(f'Config variant {key}={text!r}: expected {kind.__name__}.') from None
  return text


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config-file argument like `norm=ln,batch_size=4,smoke` into the variants a `get_config` knows.

  A bare name (`smoke`) sets a boolean variant to True. Values take the type of their default.

  Args:
    arg: the text after `configs/<name>.py:`, or None.
    **defaults: every variant the config knows, with its default value.

  Returns:
    A ConfigDict with one field per variant.

  Raises:
    ValueError: an unknown variant or a value of the wrong type; the message lists the known variants.
  """
  values = dict(defaults)
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, has_value, text = item.partition('=')
    key = key.strip()
    if key not in defaults:
      known = ', '.join(f'{k}={v!r}' for k, v in defaults.items())
      raise ValueError(f'Unknown config variant {key!r} in {arg!r}; known variants (with defaults): {known}.')
    if not has_value and not isinstance(defaults[key], bool):
      raise ValueError(f'Config variant {key!r} needs a value, e.g. {key}={defaults[key]!r}.')
    values[key] = _parse_value(key, text.strip(), defaults[key])
  return ml_collections.ConfigDict(values)
