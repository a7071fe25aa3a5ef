"""The unidirectional attentive reader on cloze QA (paper section 2, Figure 2).

  python -m experiments.attentive_reader --config configs/attentive_reader.py:norm=ln --workdir runs/ar_ln


model.py     the reader (LSTM, BN-LSTM, BN-everywhere, LN-LSTM, RMS-LSTM encoders; attention with the d-q
             similarity term)
data.py      procedural cloze data, DeepMind's .question files (cached), Cooijmans et al.'s top4 pickles
task.py      loss with per-minibatch entity permutation, validation error, validate, train_and_evaluate
pictures.py  Figure 2 from workdirs and the attention picture (scripts/attentive_reader_pictures.py)
"""

from experiments.attentive_reader.model import NORMS, AttentiveReader
from experiments.attentive_reader.task import (
  build_model,
  build_task,
  eval_fn,
  load_data,
  load_trained_model,
  loss_fn,
  permute_entities,
  train_and_evaluate,
  validate,
)

__all__ = [
  'NORMS',
  'AttentiveReader',
  'build_model',
  'build_task',
  'eval_fn',
  'load_data',
  'load_trained_model',
  'loss_fn',
  'permute_entities',
  'train_and_evaluate',
  'validate',
]
