"""Handwriting synthesis with and without layer normalization (paper section 6.5, Figure 5).

model.py    Graves' synthesis network: three LSTMs (or LN- or RMS-LSTMs), soft window, mixture density output
data.py     the line format, alphabet, offsets and their normalization; hershey.py, iam.py: the two sources
task.py     loss, metrics, validate, train_and_evaluate, load_trained_model
sample.py   `python -m experiments.handwriting.sample`: handwriting for a text from a workdir, as PNGs
figure5.py  `python -m experiments.handwriting.figure5`: Figure 5's NLL curves from workdirs
"""

from experiments.handwriting.task import (
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
