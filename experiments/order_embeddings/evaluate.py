"""Retrieval evaluation as the order-embedding code does it (`evaluation.py`): R@K and mean rank over folds.

Per fold of N images and their 5N captions, the error matrix [5N, N] (row = caption, the captions of image i at rows
5i..5i+4; column = image):
  image retrieval    for each caption, the 0-based rank of its image among the N images by ascending error
  caption retrieval  for each image, the best rank of its 5 captions among the 5N captions by ascending error
R@K = 100 x the fraction of queries with rank < K; mean rank = mean(rank) + 1. Ties rank in index order (a stable
sort). A split of several folds reports the mean over folds, as the paper's Table 2 does.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from experiments.data import text
from experiments.order_embeddings.model import OrderEmbedding, errors

KS = (1, 5, 10)
METRICS = tuple(f'{kind}_{m}' for kind in ('caption', 'image') for m in ('r1', 'r5', 'r10', 'mean_rank'))


def _ranks_of(values_QxC: np.ndarray, target_Q: np.ndarray) -> np.ndarray:
  """The stable-sort position of candidate target_Q[q] in row q: smaller values first, ties by index."""
  value = values_QxC[np.arange(len(target_Q)), target_Q][:, None]
  earlier = np.arange(values_QxC.shape[1])[None, :] < target_Q[:, None]
  return np.sum(values_QxC < value, axis=1) + np.sum((values_QxC == value) & earlier, axis=1)


def retrieval_metrics(errors: np.ndarray) -> dict[str, float]:
  """R@1, R@5, R@10 (percent) and mean rank (1-based) of caption and image retrieval from one fold's errors.

  Args:
    errors: [5N, N], row = caption (image i's captions at rows 5i..5i+4), column = image; lower = better match.

  Returns:
    {caption_r1, caption_r5, caption_r10, caption_mean_rank, image_r1, image_r5, image_r10, image_mean_rank}.
  """
  errors = np.asarray(errors, np.float64)
  if errors.ndim != 2 or errors.shape[0] != 5 * errors.shape[1] or errors.shape[1] == 0:
    raise ValueError(f'retrieval_metrics expects errors of shape [5N, N] (N >= 1); got {errors.shape}.')
  num_captions = errors.shape[0]
  image_ranks = _ranks_of(errors, np.arange(num_captions) // 5)
  by_image = errors.T  # [N, 5N]: each image against every caption.
  caption_ranks = np.min([_ranks_of(by_image, 5 * np.arange(len(by_image)) + k) for k in range(5)], axis=0)
  out = {}
  for kind, ranks in (('caption', caption_ranks), ('image', image_ranks)):
    for k in KS:
      out[f'{kind}_r{k}'] = 100.0 * float(np.mean(ranks < k))
    out[f'{kind}_mean_rank'] = float(np.mean(ranks)) + 1.0
  return out


@nnx.jit
def _encode_captions(model: OrderEmbedding, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  return model.encode_captions(tokens, lengths)


@nnx.jit
def _encode_images(model: OrderEmbedding, features: jax.Array) -> jax.Array:
  return model.encode_images(features)


def encode_captions(
  model: OrderEmbedding, tokens: list[np.ndarray], batch_size: int, pad_multiple: int = 8
) -> np.ndarray:
  """Caption embeddings [len(tokens), dim], in batches of captions of similar length (sorted), one jit per shape."""
  order = np.argsort([len(t) for t in tokens], kind='stable')
  chunks = []
  for start in range(0, len(order), batch_size):
    idx = order[start : start + batch_size]
    padded = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]) if len(idx) < batch_size else idx
    batch_tokens, lengths = text.pad_batch([tokens[i] for i in padded], pad_multiple, extra=1)
    chunks.append(np.asarray(_encode_captions(model, batch_tokens, lengths))[: len(idx)])
  out = np.empty((len(tokens), chunks[0].shape[1]), np.float32)
  out[order] = np.concatenate(chunks)
  return out


def encode_images(model: OrderEmbedding, features: np.ndarray, batch_size: int) -> np.ndarray:
  """Image embeddings [N, dim], in batches of `batch_size` (the last one padded)."""
  chunks = []
  for start in range(0, len(features), batch_size):
    batch = features[start : start + batch_size]
    padded = (
      np.concatenate([batch, np.repeat(batch[:1], batch_size - len(batch), 0)]) if len(batch) < batch_size else batch
    )
    chunks.append(np.asarray(_encode_images(model, padded))[: len(batch)])
  return np.concatenate(chunks)


@functools.partial(jax.jit, static_argnames=('model', 'chunk'))
def _error_matrix(s_AxD: jax.Array, v_NxD: jax.Array, model: str, chunk: int) -> jax.Array:
  s_CxKxD = s_AxD.reshape(-1, chunk, s_AxD.shape[-1])
  return jax.lax.map(lambda s_KxD: errors(s_KxD, v_NxD, model), s_CxKxD).reshape(-1, v_NxD.shape[0])


def error_matrix(s_AxD: np.ndarray, v_NxD: np.ndarray, model: str) -> np.ndarray:
  """errors(s, v) [A, N], in chunks of captions that keep the order-violation's [K, N, D] temporary near 64 MB."""
  chunk = max(1, min(len(s_AxD), 2**24 // max(1, v_NxD.shape[0] * v_NxD.shape[1])))
  pad = -len(s_AxD) % chunk
  s_padded = np.concatenate([s_AxD, np.zeros((pad, s_AxD.shape[1]), s_AxD.dtype)]) if pad else s_AxD
  return np.asarray(_error_matrix(s_padded, v_NxD, model, chunk))[: len(s_AxD)]


def fold_metrics(s_5NxD: np.ndarray, v_NxD: np.ndarray, model: str, fold_size: int) -> dict[str, float]:
  """`retrieval_metrics` averaged over consecutive folds of `fold_size` images (one fold if the split is smaller).

  A last fold shorter than `fold_size` is dropped (the paper's 5,000 test images are 5 full folds), unless it is
  the only one.
  """
  n = len(v_NxD)
  num_folds = max(1, n // fold_size)
  size = min(fold_size, n)
  per_fold = []
  for f in range(num_folds):
    images = slice(f * size, (f + 1) * size)
    captions = slice(5 * f * size, 5 * (f + 1) * size)
    per_fold.append(retrieval_metrics(error_matrix(s_5NxD[captions], v_NxD[images], model)))
  out = {k: float(np.mean([m[k] for m in per_fold])) for k in METRICS}
  for kind in ('caption', 'image'):
    out[f'{kind}_r_sum'] = sum(out[f'{kind}_r{k}'] for k in KS)
  out['folds'] = float(num_folds)
  return out
