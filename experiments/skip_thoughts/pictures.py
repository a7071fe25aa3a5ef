"""Figure 3: each downstream score against training steps, for the runs given (baseline vs LN), from their logs.

  python -m experiments.skip_thoughts.pictures runs/table3/norm=none runs/table3/norm=ln --out fig3.png

Panels as the paper's: SICK Pearson x 100 and MSE x 100, then MR, CR, SUBJ, MPQA accuracy with the standard
deviation over the cross-validation folds as error bars; dashed lines are the paper's reported values for the
original skip-thoughts (Kiros et al. 2015), which only mean something next to runs on the real data.
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments import workdir as wd

# The paper's "Original" row of Table 3 (uni-skip of Kiros et al. 2015): Figure 3's horizontal lines.
PAPER_ORIGINAL = {'sick/pearson': 84.8, 'sick/mse': 28.7, 'mr': 75.5, 'cr': 79.3, 'subj': 92.1, 'mpqa': 86.9}
PANELS = (
  ('sick/pearson', 'SICK Pearson x 100', 100.0),
  ('sick/mse', 'SICK MSE x 100', 100.0),
  ('mr', 'MR accuracy', 1.0),
  ('cr', 'CR accuracy', 1.0),
  ('subj', 'SUBJ accuracy', 1.0),
  ('mpqa', 'MPQA accuracy', 1.0),
)
PREFIX = 'eval/downstream/'


def curves(workdir: str) -> dict[str, list[tuple[int, float, float]]]:
  """{panel key: [(step, value, error bar)]} from a run's metrics.jsonl (periodic evaluations, not best/*)."""
  out: dict[str, list] = {}
  for row in wd.read_rows(workdir):
    for key, _, _ in PANELS:
      metric = key if key.startswith('sick') else f'{key}/accuracy'
      if PREFIX + metric in row:
        std = row.get(PREFIX + metric + '_std', 0.0) if not key.startswith('sick') else 0.0
        out.setdefault(key, []).append((row['step'], row[PREFIX + metric], std))
  return out


def plot(workdirs: list[str], out: str, labels: list[str] | None = None) -> str:
  """Writes Figure 3 for `workdirs` to `out` (PNG) and returns the path."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  labels = labels or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  for workdir, label in zip(workdirs, labels, strict=True):
    data = curves(workdir)
    for ax, (key, _, scale) in zip(axes.flat, PANELS, strict=True):
      points = data.get(key, [])
      if points:
        steps, values, errors = zip(*points, strict=True)
        ax.errorbar(steps, [v * scale for v in values], yerr=errors, marker='o', ms=3, capsize=2, label=label)
  for ax, (key, title, _) in zip(axes.flat, PANELS, strict=True):
    ax.axhline(PAPER_ORIGINAL[key], color='gray', ls='--', lw=1, label='paper: original skip-thoughts')
    ax.set_title(title)
    ax.set_xlabel('training steps')
    ax.grid(alpha=0.3)
  axes.flat[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+', help='skip-thoughts run directories (e.g. the baseline and the LN run).')
  parser.add_argument('--out', default='fig3.png')
  parser.add_argument('--labels', nargs='*', help='Legend labels, one per workdir (default: the directory names).')
  args = parser.parse_args(argv)
  if args.labels and len(args.labels) != len(args.workdirs):
    parser.error('--labels needs one label per workdir.')
  missing = [w for w in args.workdirs if not os.path.isfile(os.path.join(w, 'metrics.jsonl'))]
  if missing:
    print(f'\nError: no metrics.jsonl in {", ".join(missing)}. Fix: train them first (python -m '
          'experiments.skip_thoughts --config configs/skip_thoughts.py --workdir DIR).\n', file=sys.stderr)  # fmt: skip
    return 3
  print(plot(args.workdirs, args.out, args.labels))
  return 0


if __name__ == '__main__':
  sys.exit(main())
