r"""Skip-thought vectors, with and without layer normalization (paper section 6.3, Table 3, Figure 3).

Variants (`configs/skip_thoughts.py:norm=ln,source=text`):
  norm     none | ln: LN-GRU (appendix eq. 26-28) in the encoder AND both decoders, as the authors ran it  (default ln)
           | rms: beyond the paper, the RMS-GRU (layernorm.RMSGRUCell, gains only) in all three; a sweep point beside ln
  source   procedural | text (a directory of *.txt files, one tokenized sentence per line: config.data.dir)
  real     the CPU-scale model on real text: the corpus `python -m scripts.get_data text` wrote (State of the Union
           addresses and Moby Dick, 2.2M words), a 5,000-word vocabulary (the output layer is most of a step; 20,000
           is 4x slower), MR and CR scored on the real sentences of `get_data senteval`, SICK, SUBJ and MPQA on the
           procedural sets unless their real files are there too (config.eval.missing='procedural'); evaluated
           every 400 steps. Both directories: $LAYERNORM_DATA/<name>, else ~/.cache/layernorm/data/<name>
  smoke    seconds: a tiny model, a few steps, two downstream tasks with 2-fold CV
  paper    the paper's model and optimizer: 620-d embeddings, 2400-unit GRUs, 20,000 words, batch 64, Adam 2e-4 (the
           Theano code's Adam, no bias correction), gradients clipped to global norm 5, 1M steps, a checkpoint
           evaluated every 50,000 (Figure 3), on source=text (BookCorpus in config.data.dir)
The default (no variant) is the CPU scale: 64-d embeddings, 128-unit GRUs, the paper's optimizer but learning rate
1e-3 (2e-4 moves too little in the 1,600 steps a CPU run affords), procedural stories.

Commands:
  python -m experiments.skip_thoughts --config configs/skip_thoughts.py:smoke --workdir runs/st_smoke
  python -m scripts.get_data text senteval && \
  python -m experiments.skip_thoughts --config configs/skip_thoughts.py:real,norm=ln --workdir runs/table3_real/norm=ln
  python -m scripts.sweep configs/skip_thoughts.py --root runs/table3 --jobs 1        # both rows of Table 3
  python -m experiments.skip_thoughts.evaluate --workdir runs/table3/norm=ln --checkpoint best
  python -m experiments.skip_thoughts.pictures runs/table3/norm=none runs/table3/norm=ln --out fig3.png
  python -m experiments.skip_thoughts --config configs/skip_thoughts.py:paper,norm=ln \
      --config.data.dir=BOOKCORPUS_DIR --config.eval.dir=SENTEVAL_DIR --workdir runs/st_paper_ln

Decided where the paper or code is silent or cannot be followed here:
  eval     procedural downstream sets unless config.eval.dir names the real files; unknown words are UNK (no
           word2vec vocabulary expansion); SICK's early stopping is a choice of C on the trial Pearson r
           (experiments/skip_thoughts/downstream.py). CPU scale: 10 outer folds, 3 inner folds, C in 2^0,2,4,6.
  loss     -log softmax exactly (the code's log(p + 1e-8) differs only where p < 1e-6).
  held out the last 1% of a text corpus (at most 10,000 sentences) / 200 extra stories: eval/valid/nll_per_token.

Measured (2-core shared CPU, heavily loaded; one seed; the sweep above, procedural data, 1,600 steps; the full
table and Figure 3 are in experiments/skip_thoughts/README.md): wall 756 s (none) and 978 s (ln) incl. 9 downstream
evals.
  norm=none  SICK r 0.715  MSE 0.927  MR 47.5  CR 46.8  SUBJ 100.0  MPQA 66.7   held-out NLL/token 0.711
  norm=ln    SICK r 0.893  MSE 0.384  MR 48.5  CR 49.0  SUBJ 100.0  MPQA 80.7   held-out NLL/token 0.575
LN is ahead from the first evaluation (SICK r 0.721 at step 200); MR and CR stay at chance for both, SUBJ saturates.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common
from experiments.data import home


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, norm='ln', source='', smoke=False, paper=False, real=False)
  if arg.smoke + arg.paper + arg.real > 1:
    raise ValueError('Choose at most one of the variants smoke, paper and real.')
  if arg.real and arg.source not in ('', 'text'):
    raise ValueError(f'The variant real reads a text corpus; drop source={arg.source} or the variant real.')
  config = common.base_config()

  # Schedule
  config.batch_size = 64
  config.num_epochs = 1
  config.num_train_steps = 1_600
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  config.steps_per_dispatch = 8
  config.eval_batch_size = 500
  config.best_metric = 'eval/valid/nll_per_token'

  # Data
  config.data = ml_collections.ConfigDict()
  config.data.source = arg.source or ('text' if arg.paper or arg.real else 'procedural')
  config.data.dir = config_dict.placeholder(str)  # source=text: the *.txt files, one tokenized sentence per line.
  # source=text: where the word ids are written (memory-mapped .npy, 4 bytes a word: ~4 GB for BookCorpus).
  config.data.cache_dir = config_dict.placeholder(str)  # Unset: a temporary directory, removed at exit.
  config.data.vocab_size = 20_000  # Words kept, EOS and UNK included (the authors' n_words).
  config.data.max_len = 30  # Triples with a sentence of >= max_len words are dropped (the authors' maxlen_w).
  config.data.seed = 0  # The procedural corpus and downstream sets (fixed across runs of different seeds).
  config.data.pad_multiple = 8  # Batches are padded to a multiple of this: few shapes, few compilations.
  config.data.num_stories = 4_000  # procedural: 5 sentences each.
  config.data.valid_stories = 200

  # Model (CPU scale; `paper` below)
  config.model = ml_collections.ConfigDict()
  config.model.norm = arg.norm
  config.model.embed_dim = 64
  config.model.hidden = 128
  config.model.loss_chunk = 512  # Target tokens per chunk of the output layer (memory; see model.token_nll).

  # Optimizer: the skip-thoughts code's.
  config.optimizer.learning_rate = 1e-3
  config.optimizer.bias_correction = False
  config.optimizer.grad_clip = 'global_norm'
  config.optimizer.grad_clip_norm = 5.0

  # Downstream evaluation (Figure 3): every `every_steps`, on checkpoints kept for good.
  config.eval = ml_collections.ConfigDict()
  config.eval.dir = config_dict.placeholder(str)  # The standard files; unset: procedural sets.
  # A task whose files config.eval.dir lacks: 'error' (stop, naming the files) or 'procedural' (score it on the
  # procedural set, and record which data each task used in the workdir's task.json).
  config.eval.missing = 'error'
  config.eval.every_steps = 200
  config.eval.tasks = ('sick', 'mr', 'cr', 'subj', 'mpqa')
  config.eval.folds = 10
  config.eval.inner_folds = 3
  config.eval.cs = (1.0, 4.0, 16.0, 64.0)
  config.eval.per_class = 300  # Procedural sets: sentences per class, SICK train/trial/test pairs.
  config.eval.sick_sizes = (1_000, 200, 1_000)

  if arg.paper:
    config.model.embed_dim = 620
    config.model.hidden = 2_400
    config.optimizer.learning_rate = 2e-4
    config.num_train_steps = 1_000_000
    config.num_epochs = 5  # The code's max_epochs; the paper stopped at 1M steps.
    config.eval.every_steps = 50_000
    config.checkpoint_every_steps = 5_000
    config.log_every_steps = 500
    config.eval.inner_folds = 10
    config.eval.cs = tuple(2.0**k for k in range(9))
    config.eval_batch_size = 256
  if arg.real:
    config.data.dir = home('text')
    config.data.vocab_size = 5_000
    config.eval.dir = home('senteval')
    config.eval.missing = 'procedural'
    config.eval.every_steps = 400
  if arg.smoke:
    config.data.num_stories = 60
    config.data.valid_stories = 10
    config.batch_size = 16
    config.num_train_steps = 8
    config.log_every_steps = 2
    config.checkpoint_every_steps = 4
    config.eval.every_steps = 4
    config.steps_per_dispatch = 2
    config.model.embed_dim = 8
    config.model.hidden = 16
    config.model.loss_chunk = 64
    config.data.pad_multiple = 16  # One padded shape: one compilation of each step.
    config.eval.tasks = ('sick', 'mr')
    config.eval.folds = 2
    config.eval.inner_folds = 2
    config.eval.cs = (1.0,)
    config.eval.per_class = 20
    config.eval.sick_sizes = (40, 20, 40)
  config.eval_every_steps = config.eval.every_steps
  config.keep_every_steps = config.eval.every_steps
  return config


def sweep(add):
  """Table 3's two trained rows (and Figure 3's two curves): the baseline and the LN model (and RMSNorm beside LN,
  beyond the paper)."""
  for norm in ('none', 'ln', 'rms'):
    add(norm=norm)
