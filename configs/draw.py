r"""DRAW on binarized MNIST, with and without layer normalization (paper section 6.4, Figure 4).

Variants (`configs/draw.py:norm=ln,source=idx`):
  norm     none | ln | rms: the LN variant uses the DRAW LSTM (appendix eq. 29-31, LN on c_t before the output tanh)
           in BOTH the encoder and the decoder (the paper does not say which; both is our choice)   (default ln);
           rms, beyond the paper, the same cell with an RMS norm (gain only) in place of its LN (sweep point beside ln)
  source   digits | idx | amat | tfds (see experiments/draw/data.py)                              (default digits)
  real     the CPU-scale model on binarized real MNIST, 50k/10k/10k, 10 epochs: the .amat files
           `python -m scripts.get_data binarized_mnist` wrote ($LAYERNORM_DATA/binarized_mnist, else
           ~/.cache/layernorm/data/binarized_mnist; Larochelle's own files where reachable, else a fixed binarization
           of real MNIST, see scripts/get_data.py)
  smoke    seconds: a tiny model, a few steps of the 8x8 digits
  paper    the paper's model and schedule: 256-unit LSTMs, 64 glimpses, latent 100, read 2x2, write 5x5,
           Adam 1e-3, batch 128, 200 epochs, on Larochelle & Murray's binarized MNIST (source amat)
The default (no variant) is the CPU scale: 128-unit LSTMs, 16 glimpses, latent 32, read 2x2, write 5x5, batch 128.

Commands:
  python -m experiments.draw --config configs/draw.py:smoke --workdir runs/draw_smoke
  python -m scripts.get_data binarized_mnist && \
  python -m experiments.draw --config configs/draw.py:real,norm=ln --workdir runs/fig4_real/norm=ln   # ~6 min
  python -m experiments.draw --config configs/draw.py:norm=ln,source=idx \
      --config.data.dir=/usr/share/datasets/fashion-mnist --workdir runs/fig4/norm=ln
  python -m experiments.draw --config configs/draw.py:paper,norm=none --config.data.dir=DIR_WITH_AMAT --workdir W
  python -m scripts.draw_pictures runs/fig4/norm=ln            # samples.png and drawing.png in the workdir
  python -m scripts.plot runs/fig4/* --layout curves --metrics eval/test/nll_bound --out fig4.png

Decided where the paper is silent (docs/paper.md, section 4):
  sizes      latent 100, read 2x2, write 5x5 from the DRAW paper's MNIST model (via public re-implementations).
  clipping   none (the LN paper says "Adam with default settings"); the loop stops a run whose loss turns NaN/Inf.
  init       flax defaults (LeCun-normal inputs, orthogonal recurrent weights, zero biases; LN gain 1, bias 0);
             learned initial canvas and LSTM states starting at 0; the posterior layer starts at zero (q = N(0, I)),
             so both variants start from the same KL (see experiments/draw/model.py).
  bound      one posterior sample per example per evaluation (DRAW's reported bound), in nats per image.

Measured (2-core CPU): see experiments/draw/README.md for the commands, wall time and results.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common
from experiments.data import home

DIGITS_TRAIN_SIZE = 1_297


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, norm='ln', source='', smoke=False, paper=False, real=False)
  if arg.smoke + arg.paper + arg.real > 1:
    raise ValueError('Choose at most one of the variants smoke, paper and real.')
  if arg.real and arg.source not in ('', 'amat'):
    raise ValueError(f'The variant real reads .amat files; drop source={arg.source} or the variant real.')
  config = common.base_config()

  # Schedule
  config.batch_size = 128
  config.num_epochs = 20
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.steps_per_dispatch = 4  # A DRAW step is long: per-call overhead is already small.
  config.eval_batch_size = 500

  # Data
  config.data = ml_collections.ConfigDict()
  config.data.source = arg.source or ('amat' if arg.paper or arg.real else 'digits')
  config.data.dir = config_dict.placeholder(str)  # .amat files, IDX files, or the TFDS data dir.
  # Training images held out for validation by idx (None: 10,000, the paper's 50k/10k) and digits (None: 250); amat
  # and tfds come with fixed splits and need it unset.
  config.data.num_valid = config_dict.placeholder(int)

  # Model (CPU scale; `paper` below)
  config.model = ml_collections.ConfigDict()
  config.model.norm = arg.norm
  config.model.hidden = 128
  config.model.latent = 32
  config.model.glimpses = 16
  config.model.read_n = 2
  config.model.write_n = 5

  # Optimizer: Adam with its defaults (the paper).
  config.optimizer.learning_rate = 1e-3

  if arg.paper:
    config.num_epochs = 200
    config.model.hidden = 256
    config.model.latent = 100
    config.model.glimpses = 64
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2_000
  if arg.real:
    config.data.dir = home('binarized_mnist')
    config.num_epochs = 10  # ~6 min a run on 2 cores; the first epochs are where the paper's curves part.
    config.checkpoint_every_steps = 1_000
  if arg.smoke:
    config.batch_size = 64
    config.num_epochs = 2
    config.model.hidden = 16
    config.model.latent = 4
    config.model.glimpses = 3
    steps_per_epoch = DIGITS_TRAIN_SIZE // config.batch_size
    config.log_every_steps = max(1, steps_per_epoch // 2)
    config.checkpoint_every_steps = steps_per_epoch
    config.steps_per_dispatch = 2
  return config


def sweep(add):
  """Figure 4's comparison: the baseline and the LN model (and RMSNorm beside LN, beyond the paper)."""
  for norm in ('none', 'ln', 'rms'):
    add(norm=norm)
