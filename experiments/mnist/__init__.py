"""Permutation-invariant MNIST (paper section 6.6, Figure 6): `python -m experiments.mnist --config configs/mnist.py`.

task.py   the MLP with none / batch / layer / RMS normalization, its loss and metrics, validate, train_and_evaluate
data      the images come from `experiments.data.mnist` (digits, IDX, TFDS), which DRAW reads too
"""

from experiments.mnist.task import (
  MLP,
  NORMS,
  build_model,
  build_task,
  eval_fn,
  loss_fn,
  train_and_evaluate,
  validate,
)

__all__ = ['MLP', 'NORMS', 'build_model', 'build_task', 'eval_fn', 'loss_fn', 'train_and_evaluate', 'validate']
