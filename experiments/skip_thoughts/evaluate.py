"""A Table 3 row for a trained skip-thoughts model: its frozen encoder on SICK, MR, CR, SUBJ and MPQA.

  python -m experiments.skip_thoughts.evaluate --workdir W [--eval_dir D] [--checkpoint best|latest|STEP]

Without --eval_dir, the data the run was scored on: config.eval.dir's real files where it had them, the procedural sets
of its config elsewhere (regenerated: they are a function of config.data.seed). The cross-validation settings are the
run's (config.eval).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from experiments import console

console.quiet()  # Before jax is imported.

from experiments import cli_errors, loop  # noqa: E402
from experiments.skip_thoughts import downstream, task  # noqa: E402

COLUMNS = ('sick/pearson', 'sick/spearman', 'sick/mse', 'mr/accuracy', 'cr/accuracy', 'subj/accuracy', 'mpqa/accuracy')
HEADER = ('SICK r', 'SICK rho', 'SICK MSE', 'MR', 'CR', 'SUBJ', 'MPQA')


def table_row(name: str, results: dict[str, float]) -> str:
  """A markdown row in Table 3's column order (r, rho, MSE to 3 places; accuracies to 1); '-' where missing."""
  cells = []
  for key in COLUMNS:
    value = results.get(key)
    cells.append('-' if value is None else (f'{value:.3f}' if key.startswith('sick') else f'{value:.1f}'))
  return f'| {name} | ' + ' | '.join(cells) + ' |'


def evaluate_workdir(workdir: str, eval_dir: str | None = None, checkpoint: str = 'best') -> dict[str, float]:
  """The downstream scores of the encoder in `workdir` at `checkpoint` ('best', 'latest' or a kept step)."""
  which: str | int = int(checkpoint) if checkpoint.isdigit() else checkpoint
  config = loop.read_config(workdir)
  model, vocab = task.load_trained_model(workdir, which)
  if eval_dir is None:
    eval_dir = task.eval_directory(config)  # The run's own: real files where it had them, procedural sets elsewhere.
  encode = task.sentence_encoder(model, vocab, pad_multiple=config.data.pad_multiple)
  return downstream.evaluate_all(encode, eval_dir, tuple(config.eval.tasks), **task.cv_options(config.eval))


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='A skip-thoughts run directory.')
  parser.add_argument('--eval_dir', help='The downstream files (SICK_*.txt, rt-polarity.*, ...); default: see above.')
  parser.add_argument('--checkpoint', default='best', help='best | latest | a kept step (e.g. 400).')
  args = parser.parse_args(argv)
  checkpoint = args.checkpoint
  if checkpoint not in ('best', 'latest') and not checkpoint.isdigit():
    return cli_errors.fail(None, f'--checkpoint={checkpoint!r}: use best, latest or a step (e.g. --checkpoint=400).', 2)
  if args.eval_dir and not os.path.isdir(args.eval_dir):
    return cli_errors.fail(None, f'--eval_dir={args.eval_dir!r} is no directory. Fix: the data directory.', 2)
  try:
    results = evaluate_workdir(args.workdir, args.eval_dir, checkpoint)
  except (FileNotFoundError, loop.WorkdirError) as e:
    message = f'{e} Fix: a --workdir trained by experiments.skip_thoughts (and a checkpoint it kept).'
    return cli_errors.fail(e, message, cli_errors.EXIT_WORKDIR)
  print('| Method | ' + ' | '.join(HEADER) + ' |')
  print('|---' * (len(HEADER) + 1) + '|')
  print(table_row(f'{args.workdir} ({checkpoint})', results))
  return 0


if __name__ == '__main__':
  sys.exit(main())
