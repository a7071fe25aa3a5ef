"""A retrieval example: test captions, each with the 5 images the model ranks first (the true image framed green)."""

from __future__ import annotations

import os

import numpy as np

from experiments.order_embeddings.data import CAPTIONS_PER_IMAGE, Split

# One query per caption level (1 = most general, 5 = every object), from different images.
QUERY_LEVELS = (0, 1, 2, 3, 4, 4)


def query_rows(num_images: int) -> list[int]:
  """Caption rows of the example queries: level `l` of image `7 * i` for the i-th level of QUERY_LEVELS."""
  return [CAPTIONS_PER_IMAGE * ((7 * i) % num_images) + level for i, level in enumerate(QUERY_LEVELS)]


def save_retrieval(errors_5NxN: np.ndarray, split: Split, path: str, top: int = 5) -> str:
  """Draws each query caption with its `top` images by ascending error; returns the path."""
  from matplotlib.figure import Figure  # Figure, not pyplot: headless, no global state.

  rows = query_rows(errors_5NxN.shape[1])
  fig = Figure(figsize=(2.0 + 1.3 * top, 1.45 * len(rows)))
  axes = fig.subplots(len(rows), top + 1, gridspec_kw={'width_ratios': [2.4] + [1] * top})
  for r, row in enumerate(rows):
    ranked = np.argsort(errors_5NxN[row], kind='stable')
    truth = row // CAPTIONS_PER_IMAGE
    rank = int(np.flatnonzero(ranked == truth)[0]) + 1
    caption = split.captions[row]
    words = caption.split()
    wrapped = '\n'.join(' '.join(words[i : i + 5]) for i in range(0, len(words), 5))
    axes[r, 0].text(0.0, 0.5, f'{wrapped}\n(true image: rank {rank})', va='center', ha='left', fontsize=7)
    axes[r, 0].axis('off')
    for c, image in enumerate(ranked[:top]):
      ax = axes[r, c + 1]
      ax.imshow(split.pixels[image], interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      colour, width = ('limegreen', 3.0) if image == truth else ('0.6', 0.8)
      for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
  fig.suptitle('Image retrieval: each caption and its top 5 test images (true image framed green)', fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=110)
  return path
