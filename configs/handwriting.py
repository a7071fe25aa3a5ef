r"""Handwriting synthesis, with and without layer normalization (paper section 6.5, Figure 5).

Measured results: README.md, "Figure 5" (filled in below once measured).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, norm='ln', source='', smoke=False, paper=False)
  if arg.smoke and arg.paper:
    raise ValueError('Choose at most one of the variants smoke and paper.')
  config = common.base_config()

  # Schedule: Figure 5 counts updates, so the run is a number of steps, evaluated every `eval_every_steps`.
  config.batch_size = 8  # The paper's minibatch.
  config.num_train_steps = 3_000
  config.log_every_steps = 20
  config.eval_every_steps = 50
  config.eval_batch_size = 100
  config.checkpoint_every_steps = 500
  config.steps_per_dispatch = 10
  config.best_metric = 'eval/valid/nll'  # The lowest validation NLL per sequence selects the model sample.py draws.

  # Data
  config.data = ml_collections.ConfigDict()
  config.data.source = arg.source or ('iam' if arg.paper else 'hershey')
  config.data.dir = config_dict.placeholder(str)  # IAM-OnDB's root; for hershey, a directory of .jhf fonts.
  config.data.fonts = 'cursive,scripts,futural'  # Hershey faces, comma-separated (files <name>.jhf).
  config.data.seed = 0  # The Hershey writers and texts.
  config.data.num_writers = 80  # 80% write the training lines, the others valid and test.
  config.data.num_train = 2_000
  config.data.num_valid = 100
  config.data.num_test = 100
  config.data.seq_len = 150  # Points per sequence; longer lines are cut (see experiments/handwriting/data.py).
  config.data.max_chars = 12  # Characters per text; longer texts are cut.
  config.data.max_step = 1_000.0  # IAM: a pen-down jump longer than this (raw tablet units) is a recording error.

  # Model (CPU scale; `paper` below)
  config.model = ml_collections.ConfigDict()
  config.model.norm = arg.norm
  config.model.hidden = 64
  config.model.layers = 3
  config.model.window_mixtures = 10
  config.model.output_mixtures = 20

  # Optimizer
  config.optimizer.learning_rate = 1e-3
  config.optimizer.grad_clip = 'global_norm'
  config.optimizer.grad_clip_norm = 100.0

  if arg.paper:
    config.model.hidden = 400
    config.data.seq_len = 500
    config.data.max_chars = 80
    config.num_train_steps = 200_000
    config.eval_every_steps = 1_000
    config.log_every_steps = 200
    config.checkpoint_every_steps = 2_000
  if arg.smoke:
    config.num_train_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
    config.steps_per_dispatch = 2
    config.eval_batch_size = 8
    config.model.hidden = 8
    config.model.window_mixtures = 2
    config.model.output_mixtures = 3
    config.data.num_writers = 5
    config.data.num_train = 32
    config.data.num_valid = 8
    config.data.num_test = 8
    config.data.seq_len = 60
    config.data.max_chars = 8
  return config


def sweep(add):
  """Figure 5's comparison: the baseline and the LN model."""
  for norm in ('none', 'ln'):
    add(norm=norm)
