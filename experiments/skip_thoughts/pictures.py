"""Figure 3: each downstream score against training steps, for the runs given (baseline vs LN), from their logs.

  python -m experiments.skip_thoughts.pictures runs/table3/norm=none runs/table3/norm=ln --out fig3.png

Panels as the paper's: SICK Pearson x 100 and MSE x 100, then MR, CR, SUBJ, MPQA accuracy with the standard
deviation over the cross-validation folds as error bars; dashed lines are the paper's reported values for the
original skip-thoughts (Kiros et al. 2015), which only mean something next to runs on the real data. The drawing
is `experiments.figures`' (also `python -m scripts.plot RUNDIR... --layout fig3`).
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments import cli_errors, figures


def plot(workdirs: list[str], out: str, labels: list[str] | None = None) -> str:
  """Writes Figure 3 for `workdirs` to `out` (PNG) and returns the path; `labels` default to the paper's legend."""
  figures.draw('fig3', [figures.load(w) for w in workdirs], labels).savefig(out, dpi=110)
  return out


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+', help='skip-thoughts run directories (e.g. the baseline and the LN run).')
  parser.add_argument('--out', default='fig3.png')
  parser.add_argument(
    '--labels', nargs='*', help="Legend labels, one per workdir (default: the paper's, Ours / Ours + LN)."
  )
  args = parser.parse_args(argv)
  if args.labels and len(args.labels) != len(args.workdirs):
    parser.error('--labels needs one label per workdir.')
  figures.check_output_image(args.out)
  missing = [w for w in args.workdirs if not os.path.isfile(os.path.join(w, 'metrics.jsonl'))]
  if missing:
    raise cli_errors.CommandError(
      f'no metrics.jsonl in {", ".join(missing)}. Fix: train them first (python -m experiments.skip_thoughts '
      '--config configs/skip_thoughts.py --workdir DIR).'
    )
  try:
    print(plot(args.workdirs, args.out, args.labels or None))
  except ValueError as e:  # Runs of another experiment, or without the downstream scores.
    raise cli_errors.CommandError(str(e)) from e
  return 0


if __name__ == '__main__':
  sys.exit(main())
