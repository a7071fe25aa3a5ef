"""Prints a Markdown table of workdirs' logged metrics at chosen epochs: the numbers behind the README's rows.

  python -m scripts.report runs/fig6_fashion --metrics train_epoch/loss eval/test/error --epochs 1 5 10
  python -m scripts.report runs/fig4/* --metrics eval/test/nll_bound --epochs 1 5 20 --reach eval/test/nll_bound=30

Each row is a run (sorted by batch size, then in the paper's legend order); each column is a metric at an epoch: the
value logged at the last row of that epoch (`-` if the run did not log it there, e.g. it stopped earlier). `--reach
METRIC=VALUE` adds a column with the first epoch whose METRIC is <= VALUE (the "converges N times faster" question);
`--status` adds each run's `status.json` (done, running or diverged, and the step).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from experiments import cli_errors, workdir
from experiments.epochs import format_epoch
from scripts import plot


def value_at_epoch(run: plot.Run, metric: str, epoch: float) -> float | None:
  """The last logged value of `metric` among rows whose epoch equals `epoch`, or None."""
  values = [row[metric] for row in run.rows if row.get('epoch') == epoch and row.get(metric) is not None]
  return values[-1] if values else None


def first_epoch_reaching(run: plot.Run, metric: str, threshold: float) -> float | None:
  """The first logged epoch at which `metric` <= `threshold`, or None if it never does."""
  for row in run.rows:
    value = row.get(metric)
    if value is not None and row.get('epoch') is not None and value <= threshold:
      return row['epoch']
  return None


def parse_reach(text: str) -> tuple[str, float]:
  metric, sep, value = text.rpartition('=')
  try:
    if not sep or not metric or not math.isfinite(float(value)):
      raise ValueError
    return metric, float(value)
  except ValueError:
    raise ValueError(
      f'--reach expects METRIC=VALUE with a finite VALUE, e.g. eval/test/nll_bound=30; got {text!r}.'
    ) from None


def run_status(run: plot.Run) -> str:
  try:
    status = workdir.read_status(run.path)
  except workdir.WorkdirError:
    return 'unreadable'
  if status is None:
    return '-'
  return f'{status.get("status", "?")} at step {status.get("step", "?")}'


def _format(value: float | None) -> str:
  if value is None:
    return '-'
  return f'{value:.4g}' if abs(value) >= 1e-3 or value == 0 else f'{value:.2e}'


def _label(run: plot.Run) -> str:
  parts = [run.norm or run.name]
  if run.batch_size is not None:
    parts.append(f'batch {run.batch_size}')
  return ', '.join(parts)


def _order(run: plot.Run):
  norm_rank = plot.NORM_ORDER.index(run.norm) if run.norm in plot.NORM_ORDER else len(plot.NORM_ORDER)
  return (-(run.batch_size or 0), norm_rank, run.name)


def make_table(
  runs: Sequence[plot.Run],
  metrics: Sequence[str],
  epochs: Sequence[float],
  reach: Sequence[tuple[str, float]] = (),
  status: bool = False,
) -> str:
  """The Markdown table (header, separator, one line per run)."""
  logged = set(plot.logged_metrics(runs))
  unknown = [m for m in list(metrics) + [m for m, _ in reach] if m not in logged]
  if unknown:
    raise ValueError(f'No run logged {", ".join(unknown)}. The runs logged: {", ".join(sorted(logged))}.')
  header = ['run'] + [f'{m} @ epoch {e:g}' for m in metrics for e in epochs]
  header += [f'first epoch with {m} <= {v:g}' for m, v in reach]
  header += ['status'] if status else []
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for run in sorted(runs, key=_order):
    cells = [_label(run)] + [_format(value_at_epoch(run, m, e)) for m in metrics for e in epochs]
    reached = [first_epoch_reaching(run, m, v) for m, v in reach]
    cells += ['never' if e is None else format_epoch(e) for e in reached]
    cells += [run_status(run)] if status else []
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def check_epochs(epochs: Sequence[float]) -> None:
  """Epochs are counted from 1 (the first epoch's end); a negative, zero or NaN one can match no logged row."""
  bad = [e for e in epochs if not (math.isfinite(e) and e > 0)]
  if bad:
    raise cli_errors.CommandError(
      f'--epochs {" ".join(f"{e:g}" for e in bad)}: each epoch must be a positive number (runs log epoch 1 at the end '
      'of their first epoch). Fix: e.g. --epochs 1 5 10.'
    )


def check_some_value(runs: Sequence[plot.Run], metrics: Sequence[str], epochs: Sequence[float]) -> None:
  """A table of dashes answers nothing: fails, naming the epochs the runs did log, when no cell has a value."""
  if any(value_at_epoch(run, m, e) is not None for run in runs for m in metrics for e in epochs):
    return
  logged = sorted({row['epoch'] for run in runs for row in run.rows if isinstance(row.get('epoch'), int | float)})
  shown = ', '.join(f'{e:g}' for e in logged[:10]) + (f', ... {logged[-1]:g}' if len(logged) > 10 else '')
  raise cli_errors.CommandError(
    f'no run logged {", ".join(metrics)} at epoch {", ".join(f"{e:g}" for e in epochs)}; the runs logged epochs '
    f'{shown or "none"}. Fix: --epochs with some of those.'
  )


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(prog='python -m scripts.report', description=__doc__.split('\n')[0])
  parser.add_argument('rundirs', nargs='+', metavar='RUNDIR', help='workdirs, or sweep roots holding workdirs')
  parser.add_argument('--metrics', nargs='+', required=True, help='metric names, e.g. eval/test/error')
  parser.add_argument('--epochs', nargs='+', type=float, required=True, help='epochs to read the metrics at')
  parser.add_argument('--reach', nargs='*', default=[], metavar='METRIC=VALUE', help='first epoch with METRIC <= VALUE')
  parser.add_argument('--status', action='store_true', help="add each run's status.json")
  args = parser.parse_args(argv)
  check_epochs(args.epochs)
  try:
    reach = [parse_reach(r) for r in args.reach]
    runs = [plot.load_run(p) for p in plot.find_runs(args.rundirs)]
    table = make_table(runs, args.metrics, args.epochs, reach, args.status)
  except ValueError as e:  # A workdir's files, a metric no run logged, or a malformed --reach.
    raise cli_errors.CommandError(str(e)) from e
  check_some_value(runs, args.metrics, args.epochs)
  print(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
