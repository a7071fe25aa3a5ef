"""Pictures of a trained DRAW model, from its workdir's latest good checkpoint.

  python -m scripts.draw_pictures runs/fig4/norm=ln [--num_samples 64] [--num_sequences 8] [--steps 8] [--out DIR]

Writes `samples.png` (a grid of generated images: the final canvas's Bernoulli means) and `drawing.png` (for a few
samples, the canvas after evenly spaced glimpses, left to right: the drawing sequence DRAW is known for) into `--out`
(default: the workdir).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import numpy as np

from experiments import cli_errors, console
from experiments import workdir as wd
from experiments.draw.pictures import drawing_sequence, samples_grid, save_png
from experiments.draw.task import load_trained_model


def write_pictures(
  workdir: str, out_dir: str, *, num_samples: int = 64, num_sequences: int = 8, steps: int = 8, seed: int = 0
) -> list[str]:
  """Samples from the model in `workdir` and writes the PNGs; returns their paths."""
  model = load_trained_model(workdir)  # From config.json, task.json and the checkpoint: no data set is read.
  canvases_TxNxHxW = np.asarray(model.sample(max(num_samples, num_sequences), jax.random.key(seed)))
  os.makedirs(out_dir, exist_ok=True)
  grid = samples_grid(canvases_TxNxHxW[-1, :num_samples], ncols=math.ceil(math.sqrt(num_samples)))
  sequence = drawing_sequence(canvases_TxNxHxW[:, :num_sequences], steps=min(steps, canvases_TxNxHxW.shape[0]))
  return [
    save_png(grid, os.path.join(out_dir, 'samples.png')),
    save_png(sequence, os.path.join(out_dir, 'drawing.png')),
  ]


def steps_to_show(workdir: str, steps: int | None) -> int:
  """The glimpses to show per sequence: `steps`, or 8 (fewer for a model with fewer glimpses) when it is None.

  Fails before any model is loaded unless `workdir` is a DRAW run with at least `steps` glimpses.
  """
  saved = wd.read_saved_config(workdir) if os.path.isdir(workdir) else None
  glimpses = (saved or {}).get('model', {}).get('glimpses') if isinstance(saved, dict) else None
  if not isinstance(glimpses, int):
    raise cli_errors.CommandError(
      f'{workdir} is no workdir of experiments.draw (no config.json with model.glimpses). Fix: name a DRAW run, or '
      'train one first: python -m experiments.draw --config configs/draw.py --workdir DIR.',
      cli_errors.EXIT_WORKDIR,
    )
  if steps is None:
    return min(8, glimpses)
  if steps > glimpses:
    raise cli_errors.CommandError(
      f'--steps {steps}: the model in {workdir} draws in {glimpses} glimpses, so at most {glimpses} can be shown. '
      f'Fix: --steps {min(8, glimpses)} (or up to {glimpses}).'
    )
  return steps


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdir', help='A DRAW run directory (experiments.draw --workdir).')
  parser.add_argument('--out', help='Where to write the PNGs (default: the workdir).')
  parser.add_argument('--num_samples', type=int, default=64)
  parser.add_argument('--num_sequences', type=int, default=8)
  parser.add_argument(
    '--steps', type=int, default=None, help="Glimpses shown per drawing sequence (default: 8, or the model's glimpses)."
  )
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  console.quiet()
  if min(args.num_samples, args.num_sequences, 1 if args.steps is None else args.steps) < 1:
    parser.error('--num_samples, --num_sequences and --steps must be positive.')
  steps = steps_to_show(args.workdir, args.steps)
  if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
    parser.error(f'--out {args.out} is a file; name a directory (it is created if missing)')
  try:
    paths = write_pictures(
      args.workdir,
      args.out or args.workdir,
      num_samples=args.num_samples,
      num_sequences=args.num_sequences,
      steps=steps,
      seed=args.seed,
    )
  except FileNotFoundError as e:  # No task.json, or no usable checkpoint.
    raise cli_errors.CommandError(
      f'{e} Fix: train it first: python -m experiments.draw --config configs/draw.py --workdir DIR',
      cli_errors.EXIT_WORKDIR,
    ) from e
  print('\n'.join(paths))
  return 0


if __name__ == '__main__':
  sys.exit(main())
