"""Skip-thought vectors with and without layer normalization (paper section 6.3, Table 3, Figure 3).

model.py       the encoder, two decoders conditioned through their initial state, the memory-frugal output loss
data.py        the corpus (procedural stories, or a directory of one-sentence-per-line files) and its triples
procedural.py  the generated stories and downstream sets (in the real files' formats)
downstream.py  SICK relatedness and MR/CR/SUBJ/MPQA classification of frozen sentence vectors
task.py        loss, metrics, validate, train_and_evaluate, load_trained_model
evaluate.py    python -m experiments.skip_thoughts.evaluate --workdir W --eval_dir D: a Table 3 row
pictures.py    Figure 3: downstream scores against training steps, baseline vs LN
"""

from experiments.skip_thoughts.task import (
  NORMS,
  build_model,
  build_task,
  eval_fn,
  load_trained_model,
  loss_fn,
  train_and_evaluate,
  validate,
)

__all__ = [
  'NORMS',
  'build_model',
  'build_task',
  'eval_fn',
  'load_trained_model',
  'loss_fn',
  'train_and_evaluate',
  'validate',
]
