"""Pictures of handwriting: pen trajectories as lines, and the soft window's weights over the text through time.

Matplotlib on host arrays; points are absolute (x, y, end_of_stroke) as `data.decode_points` returns them.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np


def split_strokes(points: np.ndarray) -> list[np.ndarray]:
  """The strokes of absolute points [N, 3]: a new stroke starts after every point whose end-of-stroke bit is 1."""
  ends = np.flatnonzero(points[:, 2] > 0.5) + 1
  return [s[:, :2] for s in np.split(points, ends) if len(s)]


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(fig)
  return path


def plot_lines(lines: list[np.ndarray], path: str, titles: list[str] | None = None) -> str:
  """One row per line of handwriting (absolute points [N, 3]), drawn stroke by stroke; returns `path`."""
  fig, axes = plt.subplots(len(lines), 1, figsize=(10, 1.4 * len(lines)), squeeze=False)
  for k, (ax, points) in enumerate(zip(axes[:, 0], lines, strict=True)):
    for stroke in split_strokes(np.asarray(points)):
      ax.plot(stroke[:, 0], stroke[:, 1], 'k-', linewidth=1.2, marker='.' if len(stroke) == 1 else None, markersize=2)
    ax.set_aspect('equal')
    ax.axis('off')
    if titles:
      ax.set_title(titles[k], fontsize=9, loc='left')
  return _save(fig, path)


def plot_window(phi_TxU: np.ndarray, text: str, path: str) -> str:
  """The window weights phi(t, u): characters of `text` (rows) against time steps (columns); returns `path`."""
  fig, ax = plt.subplots(figsize=(10, 0.25 * len(text) + 1.5))
  ax.imshow(np.asarray(phi_TxU).T, aspect='auto', origin='upper', cmap='Greys', interpolation='nearest')
  ax.set_yticks(range(len(text)))
  ax.set_yticklabels([c if c != ' ' else '␣' for c in text], fontsize=8)
  ax.set_xlabel('time step (pen point)')
  ax.set_title('soft window phi(t, u) over the text')
  return _save(fig, path)
