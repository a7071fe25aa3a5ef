"""Order-embeddings for image-caption retrieval, with and without layer normalization (paper section 6.1, Table 2,
Figure 1): `python -m experiments.order_embeddings`.

scenes.py    procedural scenes of shapes with captions at 5 levels of detail, and the fixed random-conv encoder
data.py      the authors' COCO layout, the procedural splits, the vocabulary and the training batches
model.py     word embeddings, GRU / LN-GRU / RMS-GRU sentence encoder, linear image encoder, order violation, the loss
evaluate.py  retrieval_metrics (R@K, mean rank) and the fold evaluation over a whole split
task.py      validate, build_task, train_and_evaluate, load_trained_model
pictures.py  a retrieval example: captions with their top-5 images
"""

from experiments.order_embeddings.evaluate import retrieval_metrics
from experiments.order_embeddings.model import OrderEmbedding, contrastive_loss, order_violation
from experiments.order_embeddings.task import (
  NORMS,
  build_model,
  build_task,
  load_trained_model,
  loss_fn,
  train_and_evaluate,
  validate,
)

__all__ = [
  'NORMS',
  'OrderEmbedding',
  'build_model',
  'build_task',
  'contrastive_loss',
  'load_trained_model',
  'loss_fn',
  'order_violation',
  'retrieval_metrics',
  'train_and_evaluate',
  'validate',
]
