"""Host-side training metrics: exact running means, the NaN/Inf guard, and the short console summary."""

from __future__ import annotations

import math

import numpy as np

from experiments.epochs import format_epoch
from experiments.loop.steps import GUARDED_METRICS


class Means:
  """Sums (exact, `math.fsum`) and counts of per-step metrics; saved in checkpoints so a resume keeps its windows."""

  def __init__(self, sums: dict[str, float] | None = None, count: int = 0):
    self.sums = dict(sums or {})
    self.count = count

  def add(self, metrics: dict[str, np.ndarray]) -> None:
    for k, v in metrics.items():
      self.sums[k] = math.fsum([self.sums.get(k, 0.0), *np.asarray(v, np.float64).tolist()])
    self.count += len(next(iter(metrics.values())))

  def means(self, prefix: str) -> dict[str, float]:
    return {f'{prefix}/{k}': v / self.count for k, v in self.sums.items()} if self.count else {}

  def state(self) -> dict:
    return {'sums': self.sums, 'count': self.count}


def first_non_finite(first_step: int, metrics: dict[str, np.ndarray]) -> tuple[int, str] | None:
  """(step, 'loss=nan, grad_norm=...') of the first step whose guarded metrics are not all finite, or None."""
  bad = ~np.all([np.isfinite(metrics[k]) for k in GUARDED_METRICS], axis=0)
  if not bad.any():
    return None
  i = int(np.argmax(bad))
  return first_step + i + 1, ', '.join(f'{k}={metrics[k][i]:.6g}' for k in GUARDED_METRICS)


def final_metrics(rows: list[dict], step: int) -> dict[str, float]:
  """The values logged at `step` (the last one), without timings, which differ between runs."""
  final = {}
  for row in rows:
    if row['step'] == step:
      final.update({k: v for k, v in row.items() if k != 'step' and not k.startswith('perf/')})
  return final


def _format(key: str, value) -> str:
  if key == 'epoch' and isinstance(value, int | float):
    return format_epoch(value)
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def summary(metrics: dict[str, float], limit: int = 12) -> str:
  """A short, rounded one-line view of metrics: evaluation and best/ values first, training means after."""
  order = lambda k: (not k.startswith(('best/', 'eval/')), not k.startswith('train_epoch/'), k)
  keys = [k for k in sorted(metrics, key=order) if not k.startswith(('train/grad', 'train/param', 'train/update'))]
  shown = [f'{k} {_format(k, metrics[k])}' for k in keys[:limit]]
  more = len(keys) - limit
  return '  '.join(shown) + (f'  (+{more} more in metrics.jsonl)' if more > 0 else '')
