r"""Permutation-invariant MNIST, 784-1000-1000-10 (paper section 6.6, Figure 6): no normalization, BN, LN.

Variants (`configs/mnist.py:norm=ln,batch_size=4`):
  norm        none | bn | ln | rms                           (default ln; rms: beyond the paper, an RMS norm with a
              gain and a bias after it where ln has its layer norms; a sweep point beside ln)
  batch_size  the paper's 128 (left panels) or 4 (right)     (default 128)
  source      digits | idx | tfds (see experiments/data/mnist.py); default digits, or tfds with `paper`
  real        real MNIST at CPU scale: the IDX files `python -m scripts.get_data mnist` fetched ($LAYERNORM_DATA/mnist,
              else ~/.cache/layernorm/data/mnist), 55k/5k/10k, the paper's 1000-1000 network, 20 epochs at batch
              128 and 5 at batch 4 (the paper's 60 take ~28 min a run at batch 4 here: `paper,source=idx` for those)
  smoke       seconds: small network, 2 epochs of digits
  paper       the paper's data and sizes: MNIST 55k/5k/10k through TFDS, 1000-1000 hidden units, 60 epochs

Commands:
  python -m experiments.mnist --config configs/mnist.py:smoke --workdir runs/mnist_smoke
  python -m scripts.get_data mnist && \
  python -m experiments.mnist --config configs/mnist.py:real,norm=ln,batch_size=4 --workdir runs/fig6_real_ln_bs4
  python -m experiments.mnist --config configs/mnist.py:norm=ln,batch_size=4 --workdir runs/mnist_ln_bs4
  python -m experiments.mnist --config configs/mnist.py:source=idx --config.data.dir=DIR --config.data.num_valid=400 \
      --workdir runs/mine   # your own IDX files: hold out fewer than the standard 5,000 for validation
  python -m experiments.mnist --config configs/mnist.py:paper,norm=bn,batch_size=4 --workdir runs/fig6_bn_bs4 \
      --config.data.dir=~/tensorflow_datasets
  python -m experiments.mnist --config configs/mnist.py:paper,source=idx --config.data.dir=/path/to/mnist --workdir W

Decided where the paper is silent (docs/paper.md, section 6):
  activation   ReLU (the paper's section 3 discusses ReLU units).
  init         He (variance scaling 2.0, fan-in, truncated normal) for every weight matrix; biases, LN/BN gains 1 and
               biases 0 (the paper's default). A linear layer that feeds a normalization has no bias of its own.
  optimizer    Adam, learning rate 1e-3 (Adam's default), b1 0.9, b2 0.999, eps 1e-8, no clipping, for every norm
               and batch size, so that the curves differ only by the normalization.
  epochs       60 (Figure 6's x axis).
  BN           on every layer including the logits (the paper's "applied to all layers"); unbiased batch variance at
               batch size 4 (the paper) and below, biased above; running averages with momentum 0.99 for evaluation.
  eps          1e-5 in LN and BN (the authors' Theano code).
  metrics      Figure 6's NLL is taken to be the mean training NLL over each epoch ('train_epoch/loss'); its test
               error is 'eval/test/error' on the 10k test set.
  CPU scale    The default variant trains the paper's hidden sizes on scikit-learn's 8x8 digits (1,297 train, 250
               valid, 250 test), the only real digit images available offline here.

Measured on a 2-core x86-64 CPU shared with other jobs, 2026-11-29 (tables and plots in experiments/mnist/README.md):
  python -m scripts.sweep configs/mnist.py --root runs/fig6_digits --jobs 1          # digits, 60 epochs: 297 s in all
    (re-measured 2026-12-01) training NLL at epoch 60, batch 128: BN 0.096, none 1.8e-4, LN 3.0e-5;
    batch 4: BN 0.40, none 0, LN 7.4e-10.
  Fashion-MNIST (source=idx, --config.data.dir=/usr/share/datasets/fashion-mnist, --config.num_epochs=10), 93-102 s
  per run at batch 128, 615-927 s at batch 4:
    training NLL at epoch 10, batch 128: BN 0.152, none 0.204, LN 0.204 (LN below BN for the first 4 epochs only);
    batch 4: BN 0.629, none 0.299, LN 0.216. Test error at batch 4, epoch 10: 15.1%, 13.3%, 11.4%.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common
from experiments.data import home

DIGITS_TRAIN_SIZE = 1_297
# The `real` variant's epochs per batch size: the CPU scale on real MNIST (~2.5 min a run at batch 4, ~1 min at 128).
REAL_EPOCHS = {4: 5, 128: 20}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, norm='ln', batch_size=128, source='', smoke=False, paper=False, real=False)
  if arg.smoke + arg.paper + arg.real > 1:
    raise ValueError('Choose at most one of the variants smoke, paper and real.')
  if arg.real and arg.source not in ('', 'idx'):
    raise ValueError(f'The variant real reads IDX files; drop source={arg.source} or the variant real.')
  config = common.base_config()

  # Schedule
  config.batch_size = arg.batch_size
  config.num_epochs = 60
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1_000

  # Data
  config.data = ml_collections.ConfigDict()
  config.data.source = arg.source or ('tfds' if arg.paper else 'idx' if arg.real else 'digits')
  config.data.dir = config_dict.placeholder(str)  # IDX files for source=idx; TFDS data dir for tfds (None: default).
  # Training examples held out for validation. None: the source's standard, 5,000 (the paper's 55k/5k) for idx and
  # tfds, 250 for digits. None rather than 5,000 so that a --config.data.source override keeps a split that fits.
  config.data.num_valid = config_dict.placeholder(int)

  # Model
  config.model = ml_collections.ConfigDict()
  config.model.norm = arg.norm
  config.model.hidden_sizes = (1000, 1000)
  config.model.bn_unbiased = arg.batch_size <= 4  # The paper: unbiased batch variance at batch size 4.
  config.model.bn_momentum = 0.99
  config.model.eps = 1e-5

  # Optimizer
  config.optimizer.learning_rate = 1e-3

  if arg.paper:
    config.log_every_steps = 100
    config.checkpoint_every_steps = 10_000
  if arg.real:
    config.data.dir = home('mnist')
    config.num_epochs = REAL_EPOCHS.get(arg.batch_size, 10)
    config.log_every_steps = 400 if arg.batch_size < 32 else 80  # Multiples of steps_per_dispatch: one chunk size.
    config.checkpoint_every_steps = 4_800
  if arg.smoke:
    config.num_epochs = 2
    config.model.hidden_sizes = (64, 64)
    # Smoke runs read digits unless told otherwise. max(1, ...): a batch_size < 1 must reach validate's message.
    steps_per_epoch = DIGITS_TRAIN_SIZE // max(1, arg.batch_size)
    config.log_every_steps = max(1, steps_per_epoch // 2)
    config.checkpoint_every_steps = max(1, steps_per_epoch)
    config.steps_per_dispatch = config.log_every_steps  # Every stop point a multiple of it: one compiled chunk.
  return config


def sweep(add):
  """Figure 6's grid: every normalization at batch sizes 128 and 4 (and RMSNorm beside LN, beyond the paper). Each
  `add` names `get_config` variants."""
  for batch_size in (128, 4):
    for norm in ('bn', 'none', 'ln', 'rms'):
      add(norm=norm, batch_size=batch_size)
