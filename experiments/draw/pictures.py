"""Pictures of DRAW samples: a grid of images, the canvas after each glimpse, and a PNG writer.

Pure NumPy on host arrays; values are intensities in [0, 1] (e.g. the Bernoulli means `DRAW.sample` returns).
"""

from __future__ import annotations

import math
import os

import numpy as np


def samples_grid(images_NxHxW: np.ndarray, ncols: int, *, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
  """Tiles images into one array: image k in row k // ncols, column k % ncols, `pad` pixels between and around cells.

  Cells past the last image are left at `pad_value`.

  Returns:
    A (rows * (H + pad) + pad) x (ncols * (W + pad) + pad) float32 array, rows = ceil(N / ncols).
  """
  images = np.asarray(images_NxHxW, np.float32)
  if images.ndim != 3 or not images.shape[0]:
    raise ValueError(f'samples_grid expects a non-empty N x H x W array; got shape {images.shape}.')
  if ncols < 1 or pad < 0:
    raise ValueError(f'samples_grid needs ncols >= 1 and pad >= 0; got ncols={ncols}, pad={pad}.')
  n, height, width = images.shape
  rows = math.ceil(n / ncols)
  grid = np.full((rows * (height + pad) + pad, ncols * (width + pad) + pad), pad_value, np.float32)
  for k, image in enumerate(images):
    top, left = pad + (k // ncols) * (height + pad), pad + (k % ncols) * (width + pad)
    grid[top : top + height, left : left + width] = image
  return grid


def drawing_sequence(
  canvases_TxNxHxW: np.ndarray, *, steps: int | None = None, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
  """One row per example, the canvas after successive glimpses from left to right (the DRAW paper's Figure 1 layout).

  Args:
    canvases_TxNxHxW: canvases after each of T glimpses for N examples.
    steps: show only this many glimpses, evenly spaced and always including the first and the last; all T if None.
    pad, pad_value: as in `samples_grid`.
  """
  canvases = np.asarray(canvases_TxNxHxW, np.float32)
  if canvases.ndim != 4:
    raise ValueError(f'drawing_sequence expects a T x N x H x W array; got shape {canvases.shape}.')
  t = canvases.shape[0]
  idx = np.arange(t) if steps is None else np.unique(np.round(np.linspace(0, t - 1, max(steps, 1))).astype(int))
  images = canvases[idx].transpose(1, 0, 2, 3).reshape(-1, *canvases.shape[2:])
  return samples_grid(images, ncols=len(idx), pad=pad, pad_value=pad_value)


def save_png(array_HxW: np.ndarray, path: str | os.PathLike) -> str:
  """Writes a 2-D array of intensities in [0, 1] (clipped) as a grayscale PNG; returns the path."""
  import matplotlib.image  # Deferred: matplotlib is only needed when pictures are written.

  array = np.asarray(array_HxW, np.float32)
  if array.ndim != 2:
    raise ValueError(f'save_png expects a 2-D image; got shape {array.shape}.')
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  matplotlib.image.imsave(path, np.clip(array, 0.0, 1.0), cmap='gray', vmin=0.0, vmax=1.0)
  return path
