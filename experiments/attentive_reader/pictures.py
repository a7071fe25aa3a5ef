"""The attention picture: a passage with each token shaded by its attention weight, the query, predicted and true
answers. Matplotlib's `Figure` (no pyplot): works headless."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def attention_figure(examples: Sequence[dict], *, tokens_per_line: int = 14) -> Figure:
  """One panel per example: {'passage': [words], 'alpha': [T] weights, 'query': [words], 'predicted', 'answer'}.

  A token's background is white at weight 0 and full red at the panel's largest weight; the true answer's mentions
  carry a '*'.
  """
  if not examples:
    raise ValueError('attention_figure needs at least one example.')
  lines = [int(np.ceil(len(e['passage']) / tokens_per_line)) for e in examples]
  fig = Figure(figsize=(12, sum(lines) * 0.38 + 0.9 * len(examples)))
  axes = fig.subplots(len(examples), 1, squeeze=False, gridspec_kw={'height_ratios': [n + 2 for n in lines]})[:, 0]
  cmap = matplotlib.colormaps['Reds']
  for ax, example, n_lines in zip(axes, examples, lines, strict=True):
    alpha = np.asarray(example['alpha'], np.float64)
    top = max(float(alpha.max()), 1e-12)
    ax.set_xlim(0, tokens_per_line)
    ax.set_ylim(n_lines + 0.5, -1.5)
    ax.axis('off')
    verdict = 'right' if example['predicted'] == example['answer'] else 'wrong'
    ax.text(
      0,
      -1,
      f'query: {" ".join(example["query"])}    predicted: {example["predicted"]}    answer: {example["answer"]}'
      f'  ({verdict}; darkest = {top:.2f} of the attention)',
      fontsize=9,
      weight='bold',
    )
    for i, (word, a) in enumerate(zip(example['passage'], alpha, strict=True)):
      colour = cmap(0.85 * a / top)
      ax.text(
        i % tokens_per_line,
        i // tokens_per_line,
        word + ('*' if word == example['answer'] else ''),
        fontsize=8,
        family='monospace',
        bbox={'facecolor': colour, 'edgecolor': 'none', 'pad': 1.5},
        color='white' if a / top > 0.6 else 'black',
      )
  fig.tight_layout()
  return fig
