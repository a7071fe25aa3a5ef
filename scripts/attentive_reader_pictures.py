"""Figure 2 and attention pictures of attentive reader runs, from their workdirs.

  python -m scripts.attentive_reader_pictures runs/fig2/norm=* [--out DIR] [--num_examples 3] [--which best]

Writes `figure2.png` (validation error against training steps from metrics.jsonl, one curve per run; a point's seeds:
their mean and a band) into `--out` (default: the first run's parent) and, for each run, `attention.png` in its
workdir: the first validation passages with each token shaded by the model's attention, the query, and the predicted
and true answers. The validation data are rebuilt from the run's config (procedural data are regenerated; file
sources are read again).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from matplotlib.figure import Figure

from experiments import cli_errors, console, loop
from experiments import workdir as wd
from experiments.attentive_reader import data as qa_data
from experiments.attentive_reader.pictures import attention_figure
from experiments.attentive_reader.task import load_data, load_trained_model
from scripts import plot


def attention_examples(workdir: str, num_examples: int, which: str = 'best') -> list[dict]:
  """The first `num_examples` validation questions as `attention_figure` wants them, under the run's model."""
  model, vocab = load_trained_model(workdir, which)
  config = loop.read_config(workdir)
  split = load_data(config.data).splits['valid']
  batch = qa_data.QASource(split).batch(np.arange(min(num_examples, len(split))))
  logits, alpha = model(batch)
  out = []
  for i, predicted in enumerate(np.asarray(logits).argmax(-1)):
    n, m = batch['passage_length'][i], batch['query_length'][i]
    out.append(
      {
        'passage': [vocab[t] for t in batch['passage'][i, :n]],
        'alpha': np.asarray(alpha)[i, :n],
        'query': [vocab[t] for t in batch['query'][i, :m]],
        'predicted': vocab[predicted],
        'answer': vocab[batch['answer'][i]],
      }
    )
  return out


def figure2(runs: list[str]) -> Figure:
  """Validation error (%) against steps, one curve per run (seeds: mean and band), labelled as in Figure 2."""
  return plot.make_figure(runs, layout='fig2')


def summary_table(runs: list[str], at_steps: list[int], reach: list[float]) -> str:
  """A Markdown table: each run's validation error at `at_steps`, its best and when, the first step <= each `reach`."""
  head = ['run', *(f'step {s}' for s in at_steps), 'best (step)', *(f'first step <= {r}' for r in reach)]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for path in runs:
    run = plot.load_run(path)
    points = dict(zip(*plot.series(run, 'eval/valid/error', 'step'), strict=True))
    if not points:
      continue
    at = [f'{points[s]:.3f}' if s in points else '-' for s in at_steps]
    best = min(points, key=lambda s: (points[s], s))
    first = [next((f'{s:.0f}' for s in sorted(points) if points[s] <= r), 'never') for r in reach]
    lines.append(
      f'| {os.path.basename(path)} | ' + ' | '.join([*at, f'{points[best]:.3f} ({best:.0f})', *first]) + ' |'
    )
  return '\n'.join(lines)


def parse_which(text: str) -> str | int:
  """--which: 'best', 'latest' or a step (an int); CommandError for anything else."""
  if text in ('best', 'latest'):
    return text
  if text.isdigit():
    return int(text)
  raise cli_errors.CommandError(f'--which {text}: use best, latest or a kept step (e.g. --which 2000).')


def check_runs(runs: list[str]) -> None:
  """Fails before anything is drawn unless every run is a workdir of experiments.attentive_reader."""
  for run in runs:
    if 'vocab_size' not in wd.read_task_metadata(run):
      raise cli_errors.CommandError(
        f'{run} is no workdir of experiments.attentive_reader (its task.json records no vocabulary). Fix: name '
        'attentive reader runs only, e.g. runs/fig2/norm=*.',
        cli_errors.EXIT_WORKDIR,
      )


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+', help='Attentive reader run directories (or a sweep root).')
  parser.add_argument('--out', help="Where figure2.png goes (default: the first run's parent directory).")
  parser.add_argument('--num_examples', type=int, default=3)
  parser.add_argument('--which', default='best', help="'best', 'latest' or a kept step.")
  parser.add_argument('--at_steps', type=int, nargs='*', default=[1000, 2000, 3000], help='Table columns.')
  parser.add_argument('--reach', type=float, nargs='*', default=[0.7, 0.6], help='"First step <= error" columns.')
  args = parser.parse_args(argv)
  which = parse_which(args.which)
  if not all(math.isfinite(r) for r in args.reach):
    parser.error(f'--reach takes finite error rates, e.g. --reach 0.7 0.6; got {" ".join(map(str, args.reach))}')
  if any(s < 0 for s in args.at_steps):
    parser.error(f'--at_steps takes training steps >= 0; got {" ".join(map(str, args.at_steps))}')
  if args.num_examples < 0:
    parser.error(f'--num_examples must be >= 0 (0: no attention pictures); got {args.num_examples}')
  if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
    parser.error(f'--out {args.out} is a file; name a directory (it is created if missing)')
  console.quiet()
  runs = [r for r in plot.find_runs(args.workdirs) if os.path.isfile(os.path.join(r, 'metrics.jsonl'))]
  if not runs:
    raise cli_errors.CommandError(
      f'no workdirs with metrics.jsonl in {" ".join(args.workdirs)}. Fix: train one first: python -m '
      'experiments.attentive_reader --config configs/attentive_reader.py --workdir DIR',
      cli_errors.EXIT_WORKDIR,
    )
  check_runs(runs)
  # Everything is drawn before anything is written: a run that fails (no such checkpoint) leaves no partial output.
  figures = {}
  try:
    figures[os.path.join(args.out or os.path.dirname(os.path.abspath(runs[0])), 'figure2.png')] = figure2(runs)
  except ValueError as e:  # A malformed metrics.jsonl.
    raise cli_errors.CommandError(str(e), cli_errors.EXIT_WORKDIR) from e
  for run in runs if args.num_examples > 0 else []:
    try:
      examples = attention_examples(run, args.num_examples, which)
    except FileNotFoundError as e:  # No such checkpoint, or no best model.
      message = f'{e} Fix: --which best, latest or a step the run kept.'
      raise cli_errors.CommandError(message, cli_errors.EXIT_WORKDIR) from e
    figures[os.path.join(run, 'attention.png')] = attention_figure(examples)
  os.makedirs(os.path.dirname(next(iter(figures))), exist_ok=True)
  for path, fig in figures.items():
    fig.savefig(path, dpi=120 if path.endswith('figure2.png') else 110)
  print(summary_table(runs, args.at_steps, args.reach))
  print('\n'.join(figures))
  return 0


if __name__ == '__main__':
  sys.exit(main())
