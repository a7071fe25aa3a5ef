"""DRAW with and without layer normalization (paper section 6.4, Figure 4): `python -m experiments.draw`.

model.py     DRAW: filterbank attention, encoder/decoder LSTMs (LN on c_t), the variational bound
data.py      binarized MNIST: the .amat files of the paper, IDX (thresholded), TFDS, or the embedded digits
task.py      the loss and metrics, validate, train_and_evaluate, load_trained_model
pictures.py  sample grids and drawing sequences as PNGs (scripts/draw_pictures.py writes them from a workdir)
"""

from experiments.draw.task import (
  NORMS,
  build_model,
  build_task,
  eval_fn,
  load_splits,
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
  'load_splits',
  'load_trained_model',
  'loss_fn',
  'train_and_evaluate',
  'validate',
]
