"""Figure 5: training and test NLL per sequence against updates (log x axis), one pair of curves per run.

  python -m experiments.handwriting.figure5 runs/fig5/norm=none runs/fig5/norm=ln --out fig5.png

Reads only the workdirs' metrics.jsonl and config.json (no jax). The training curve is the loop's `train/loss` (the
mean over the steps since the previous log), the test curve `eval/test/nll`; the paper plots the log-likelihood,
i.e. these with the sign flipped, so its curves go down where ours go down too. The drawing is
`experiments.figures`' (also `python -m scripts.plot RUNDIR... --layout fig5`).
"""

from __future__ import annotations

import argparse
import sys

from experiments import cli_errors, figures
from experiments import workdir as wd


def curves(workdir: str) -> tuple[str, dict[str, tuple[list[int], list[float]]]]:
  """(label, {'train' | 'test': (steps, NLL per sequence)}) of one run, as Figure 5 draws it."""
  if wd.read_saved_config(workdir) is None:
    raise FileNotFoundError(f'{workdir} has no config.json: is it a workdir of experiments.handwriting?')
  run, layout = figures.load(workdir), figures.LAYOUTS['fig5']
  _, label, _ = figures.legend_entry(layout, run)
  lines = layout.panels[0].lines
  return label, {line.suffix.strip(): figures.series(run, line, layout.x)[:2] for line in lines}


def plot(workdirs: list[str], out: str) -> str:
  """Writes Figure 5 for `workdirs` to `out` (PNG) and returns the path."""
  missing = [w for w in workdirs if wd.read_saved_config(w) is None]
  if missing:
    raise FileNotFoundError(f'{missing[0]} has no config.json: is it a workdir of experiments.handwriting?')
  figures.draw('fig5', [figures.load(w) for w in workdirs]).savefig(out, dpi=110, bbox_inches='tight')
  return out


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  figures.check_output_image(args.out)
  try:
    print(plot(args.workdirs, args.out))
  except (FileNotFoundError, ValueError) as e:  # Not a handwriting workdir, or its metrics.jsonl is malformed.
    raise cli_errors.CommandError(f'{e} Fix: name workdirs of experiments.handwriting runs.') from e
  return 0


if __name__ == '__main__':
  sys.exit(main())
