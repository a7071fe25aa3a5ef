r"""Order-embeddings for image-caption retrieval, with and without layer normalization (paper section 6.1,
Table 2, Figure 1).

Variants (`configs/order_embeddings.py:norm=ln,model=oe`):
  norm     none | ln: the sentence encoder is a GRU (eq. 23-25) or the LN-GRU (eq. 26-28)         (default ln)
           | rms: beyond the paper, the RMS-GRU (layernorm.RMSGRUCell, gains only); a sweep point beside ln
  model    oe | sym: order-embeddings (absolute values, order violation, margin 0.05) or the symmetric
           cosine baseline (margin 0.2)                                                           (default oe)
  source   procedural | coco (see experiments/order_embeddings/data.py)                    (default procedural)
  smoke    seconds: a tiny model, a few steps of a few hundred scenes
  paper    the paper's model and schedule: 300-d words, 1,024-d GRU and embedding, batch 128, Adam 1e-3,
           100 epochs, validation every 300 updates, on the authors' COCO files (source coco)
The default (no variant) is the CPU scale: see "CPU scale" below.

Commands:
  python -m experiments.order_embeddings --config configs/order_embeddings.py:smoke --workdir runs/oe_smoke
  python -m experiments.order_embeddings --config configs/order_embeddings.py:norm=ln --workdir runs/oe_ln
  python -m experiments.order_embeddings --config configs/order_embeddings.py:paper,norm=ln,source=coco \
      --config.data.dir=data/coco --workdir runs/oe_paper_ln
  python -m scripts.sweep configs/order_embeddings.py --root runs/table2 --jobs 1      # Sym, OE, OE + LN
  python -m scripts.plot runs/table2/model=oe,norm=* --layout curves \
      --metrics eval/val/image_r1 eval/val/image_r5 eval/val/image_r10 --out fig1.png   # Figure 1

Choices (docs/paper.md, section 1):
  Adam       the authors' Theano Adam (optimizer.bias_correction=False: its correction factors are ~1), b1 0.9,
             b2 0.999, eps 1e-8, learning rate 1e-3; each gradient tensor clipped to L2 norm 2 on its own.
  selection  validation image-retrieval R@1 + R@5 + R@10 on the dev fold (the first 1,000 val images) every
             `eval_every_steps`; the best model is the one tested (best_metric eval/val/image_r_sum).
  init       the authors': word embeddings and GRU input matrices uniform(-0.1, 0.1), recurrent matrices orthogonal
             per gate, the image map Xavier-uniform, biases 0; LN gains 1, offsets 0. The LN-GRU's input
             projections have no bias of their own (the LN offsets play its role; the authors' code adds one
             inside the LN, where it is removed by the mean subtraction anyway).
  procedural scenes of 2-4 shapes on a 32x32 canvas, 5 captions per image at 5 levels of detail; features from a
             fixed random convolution (4x4 kernels, stride 4, 64 channels, ReLU: 4,096-d), L2-normalized.

Measured (2-core shared x86-64 CPU, one seed, the default CPU scale on procedural data, 1,560 updates, 356-394 s
per run under heavy load; `python -m scripts.sweep configs/order_embeddings.py --root runs/table2 --jobs 1`):
  test image R@1 / R@5 / R@10 (5 folds of 1,000): Sym 6.7 / 17.5 / 24.3, OE 5.0 / 15.9 / 23.8,
  OE + LN 9.8 / 21.7 / 28.6; LN passes the baseline's best validation R@K sum (44.4) at update 400 of 1,560.
  Details: experiments/order_embeddings/README.md; the caption-retrieval columns: report/REPORT.md.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common

MARGINS = {'oe': 0.05, 'sym': 0.2}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, norm='ln', model='oe', source='', smoke=False, paper=False)
  if arg.smoke and arg.paper:
    raise ValueError('Choose at most one of the variants smoke and paper.')
  config = common.base_config()

  # Schedule: steps, not epochs, are the paper's unit (validation every 300 updates).
  config.batch_size = 128
  config.num_epochs = 20
  config.log_every_steps = 50
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 500
  config.steps_per_dispatch = 10
  config.eval_batch_size = 500
  config.best_metric = 'eval/val/image_r_sum'
  config.best_mode = 'max'

  # Data
  config.data = ml_collections.ConfigDict()
  config.data.source = arg.source or ('coco' if arg.paper else 'procedural')
  config.data.dir = config_dict.placeholder(str)  # source=coco: the directory of train.txt, images/10crop/, ...
  config.data.num_train = 10_000  # procedural: images per split, 5 captions each
  config.data.num_val = 1_000
  config.data.num_test = 5_000
  config.data.seed = 0  # procedural: the scenes (the training order derives from config.seed)
  config.data.pad_multiple = 8  # Captions padded to a multiple of 8 steps: few distinct shapes, few compiles.

  # Evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.dev_images = 1_000  # validation on the first fold of val
  config.eval.fold_size = 1_000  # test folds (the paper: 5 x 1,000 images)

  # Model (CPU scale; `paper` below)
  config.model = ml_collections.ConfigDict()
  config.model.norm = arg.norm
  config.model.model = arg.model
  config.model.word_dim = 64
  config.model.dim = 128
  # An unknown model gets a margin too: validate() then names the bad value (a clean exit 2, not a flags traceback).
  config.model.margin = MARGINS.get(arg.model, MARGINS['oe'])

  # Optimizer: the order-embedding code's Adam and clipping.
  config.optimizer.learning_rate = 1e-3
  config.optimizer.bias_correction = False
  config.optimizer.grad_clip = 'per_tensor_norm'
  config.optimizer.grad_clip_norm = 2.0

  if arg.paper:
    config.num_epochs = 100
    config.eval_every_steps = 300
    config.log_every_steps = 10  # dispFreq
    config.checkpoint_every_steps = 3_000
    config.model.word_dim = 300
    config.model.dim = 1024
  if arg.smoke:
    config.batch_size = 32
    config.num_epochs = 2
    config.data.num_train = 256
    config.data.num_val = 64
    config.data.num_test = 96
    config.eval.dev_images = 64
    config.eval.fold_size = 48
    config.model.word_dim = 16
    config.model.dim = 32
    config.log_every_steps = 4
    config.eval_every_steps = 8
    config.checkpoint_every_steps = 8
    config.steps_per_dispatch = 4
    config.eval_batch_size = 128
  return config


def sweep(add):
  """Table 2's rows: the symmetric baseline, order-embeddings, and order-embeddings with the LN-GRU (and with the
  RMS-GRU, beyond the paper)."""
  add(model='sym', norm='none')
  add(model='oe', norm='none')
  add(model='oe', norm='ln')
  add(model='oe', norm='rms')
