r"""Handwriting synthesis, with and without layer normalization (paper section 6.5, Figure 5).

Graves (2013) section 5 synthesis network (experiments/handwriting/model.py): three stacked LSTMs with skip
connections from the input to every layer and from every layer to the output, a soft window of K Gaussians over the
one-hot text, a mixture of M bivariate Gaussians plus an end-of-stroke Bernoulli; the loss is the negative
log-likelihood per sequence, in nats (also logged per point).

Variants (`configs/handwriting.py:norm=ln,source=iam`):
  norm     none | ln: LN-LSTMs (appendix eq. 20-22) in all three layers                        (default ln)
           | rms: beyond the paper, RMS-LSTMs (layernorm.RMSLSTMCell, gains only); a sweep point beside ln
  source   hershey | iam (see experiments/handwriting/data.py)                                 (default hershey)
  smoke    seconds: a tiny network on a few dozen short lines
  paper    the paper's model: 400-unit LSTMs, K = 10, M = 20 (3.7M weights), Adam, batch 8, sequences of 500
           points, on IAM-OnDB (source iam, config.data.dir)
The default (no variant) is the CPU scale: 64-unit LSTMs, K = 10, M = 20, sequences of up to 150 points and 12
characters, batch 8, 3,000 updates on 2,000 rendered Hershey lines.

Commands:
  python -m scripts.get_data hershey      # the stroke fonts of source=hershey (or Debian's hershey-fonts-data)
  python -m experiments.handwriting --config configs/handwriting.py:smoke --workdir runs/hw_smoke
  python -m experiments.handwriting --config configs/handwriting.py:norm=none --workdir runs/fig5/norm=none
  python -m experiments.handwriting --config configs/handwriting.py:norm=ln --workdir runs/fig5/norm=ln
  python -m experiments.handwriting --config configs/handwriting.py:paper,norm=ln --config.data.dir=IAM_DIR --workdir W
  python -m experiments.handwriting.figure5 runs/fig5/norm=none runs/fig5/norm=ln --out fig5.png
  python -m experiments.handwriting.sample --workdir runs/fig5/norm=ln --text "layer norm writes" --out hw.png

Decided where the paper is silent (docs/paper.md, section 5):
  LN inputs    a layer's inputs (x, the layer below, the window) are concatenated into one input term W_x [x; h; w]
               and normalized together; the window and mixture layers are not normalized; no peepholes.
  alphabet     57 symbols: a-z, A-Z, space, . , ' and one class for everything else (Graves: 57 of 80, unlisted).
  long lines   cut to their first seq_len points, the whole text kept (the window has seen a prefix); Hershey lines
               are generated to fit (words dropped from the end).
  IAM          train = trainset.txt, valid = testset_v.txt, test = testset_f.txt; pen-down jumps > max_step tablet
               units dropped as recording errors; offsets normalized with training statistics only.
  optimizer    Adam 1e-3, gradient clipping by global norm 100 (the per-sequence loss is a sum over ~150-500 points,
               so gradient norms of 10^2-10^3 are normal; Graves clipped outputs to [-100, 100]).
  numerics     window and mixture logits clipped to +-10 before exp; 1 - rho^2 as sech^2; log-sum-exp mixture.
  window init  kappa's bias starts at -3 (the window advances one character per 20 points at first; see model.py).
  selection    the checkpoint with the lowest eval/valid/nll is the model sample.py draws from (best_metric).

Measured (2-core shared CPU): see experiments/handwriting/README.md for the commands, wall time and results.
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
    config.steps_per_dispatch = 1  # The stop points 2, 3, 4, 6 then need one compiled chunk size, not two (2 and 1).
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
  """Figure 5's comparison: the baseline and the LN model (and RMSNorm beside LN, beyond the paper)."""
  for norm in ('none', 'ln', 'rms'):
    add(norm=norm)
