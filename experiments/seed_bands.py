"""The runs of one point over seeds drawn as one curve: the mean over seeds and a band from the lowest to the highest.

Used by scripts.plot (fig6, curves) and experiments.figures (fig1-fig5). Reads nothing and imports no jax: callers
hand in each run's name, config and (x, y) series.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar('T')
BAND_ALPHA = 0.2  # Translucent, so the band of one method does not hide the mean of another.


def seedless(name: str) -> str:
  """A sweep workdir's name without its `seed=K` part: the runs of one point over seeds share it."""
  return ','.join(part for part in name.split(',') if not part.startswith('seed='))


def point_key(name: str, config: dict) -> str:
  """What the runs of one point share: their config apart from `seed`, and their directory name apart from `seed=K`.

  The name counts too, so two hand-made workdirs whose configs happen to match (or that have no config.json) stay two
  curves; the sweep launcher and scripts.reproduce name a point's seeds `NAME` and `NAME,seed=K`, which match.
  """
  rest = {k: v for k, v in config.items() if k != 'seed'}
  return json.dumps([seedless(name), rest], sort_keys=True, default=str)


def group_by_point(runs: Sequence[T], name: Callable[[T], str], config: Callable[[T], dict]) -> list[list[T]]:
  """`runs` grouped by `point_key`, groups in the order of their first run, runs in their given order."""
  groups: dict[str, list[T]] = {}
  for run in runs:
    groups.setdefault(point_key(name(run), config(run)), []).append(run)
  return list(groups.values())


@dataclasses.dataclass(frozen=True)
class Band:
  """The mean and the lowest and highest seed's value at each x that every seed logged."""

  xs: list[float]
  mean: list[float]
  low: list[float]
  high: list[float]


def band(series: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Band:
  """Mean, lowest and highest over the (x, y) `series` of a point's seeds.

  Only the x values every seed logged are used (no interpolation): seeds of one config log at the same steps and
  epochs, so this drops only the tail of a seed that stopped early, and every drawn mean is over all seeds. Where one
  run logged an x twice (a resume re-logs), its later value counts.
  """
  by_x = [dict(zip(xs, ys, strict=True)) for xs, ys in series]
  shared = sorted(set.intersection(*(set(points) for points in by_x)))
  values = [[points[x] for points in by_x] for x in shared]
  return Band(shared, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values])


def draw(ax, series: Sequence[tuple[Sequence[float], Sequence[float]]], label: str, **style) -> None:
  """One run: its line. Several seeds: the mean as the line, labelled '`label` (N seeds)', over a min-max band.

  `style` is passed to `ax.plot` (colour, line style, markers). Seeds that share no x at all (a run that stopped
  before its first evaluation beside ones that did not) cannot be averaged: each is drawn as its own line under the
  one label, so nothing logged goes missing from the figure.
  """
  if len(series) == 1:
    ax.plot(*series[0], label=label, **style)
    return
  label = f'{label} ({len(series)} seeds)'
  stats = band(series)
  if not stats.xs:
    colour = style.pop('color', None)
    for xs, ys in series:
      (line,) = ax.plot(xs, ys, label=label, color=colour, **style)
      colour = line.get_color()  # One colour for the point's seeds, as for one method.
    return
  (line,) = ax.plot(stats.xs, stats.mean, label=label, **style)
  if len(stats.xs) == 1:  # A band needs two x values; one evaluation (a smoke run) gets a bar from lowest to highest.
    low, high = stats.mean[0] - stats.low[0], stats.high[0] - stats.mean[0]
    ax.errorbar(stats.xs, stats.mean, yerr=[[low], [high]], color=line.get_color(), capsize=3, linestyle='none')
    return
  ax.fill_between(stats.xs, stats.low, stats.high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)
