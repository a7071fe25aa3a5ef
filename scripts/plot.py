"""Paper-style curves from workdirs: reads each run's `metrics.jsonl` and `config.json`, writes one PNG.

  # The paper's Figures 1-5 (experiments/figures.py has their metrics, axes and legends), e.g. Figure 2:
  python -m scripts.plot runs/fig2 --out fig2.png --layout fig2
  # fig1: order-embeddings' validation R@1/5/10 vs updates; fig2: attentive reader's validation error vs steps;
  # fig3: skip-thoughts' downstream scores vs iterations with the paper's "Original" lines; fig4: DRAW's test bound
  # vs epochs; fig5: handwriting's train and test NLL vs updates (log x).
  # Figure 6: per batch size, training NLL (log y) and test error against epochs, one curve per normalization.
  python -m scripts.plot runs/fig6 --out fig6.png --layout fig6
  # Any metrics against epochs or steps, one curve per run (DRAW's test bound, as Figure 4).
  python -m scripts.plot runs/draw_* --out fig4.png --metrics eval/test/bound --x epoch

A RUNDIR is a workdir (it has `metrics.jsonl`) or a sweep root whose subdirectories are workdirs. Curves are labelled
from `config.json` (`norm` / `model.norm`, `batch_size` / `*.batch_size`), else from `key=value` pairs in the
directory name (the sweep launcher names workdirs that way), else by the directory name. Plots are made from the
files only, never from live runs; a partly written last line of a running job is skipped. The seeds of one point
(configs equal apart from `seed`, workdirs `NAME` and `NAME,seed=K`) are one curve: their mean over a band from the
lowest to the highest seed, labelled '(N seeds)' (experiments/seed_bands.py).
"""

import dataclasses
import math
import os
import sys
from collections.abc import Iterable, Sequence

# Figure, not pyplot: no global figure registry or GUI backend, so this works headless and inside notebooks alike.
from matplotlib.figure import Figure

from experiments import cli_errors, figures, seed_bands, workdir

X_KEYS = ('step', 'epoch')
# Figure 6's metric names; the first one a run logged is used, so the figure survives renames in the loop. The
# epoch mean of the training loss comes first: Figure 6 plots one NLL per epoch, and a single logged step's loss at
# batch size 4 is too noisy to compare norms on a log scale.
FIG6_NLL_METRICS = ('train_epoch/loss', 'train/nll', 'train/loss', 'train/xent', 'train/cross_entropy')
FIG6_ERROR_METRICS = ('eval/test/error', 'test/error', 'eval/error', 'eval/test/err')
NORM_NAMES = {
  'bn': 'BatchNorm',
  'batchnorm': 'BatchNorm',
  'batch_norm': 'BatchNorm',
  'none': 'Baseline',
  'baseline': 'Baseline',
  'ln': 'LayerNorm',
  'layernorm': 'LayerNorm',
  'layer_norm': 'LayerNorm',
  'wn': 'WeightNorm',
  'weightnorm': 'WeightNorm',
  'weight_norm': 'WeightNorm',
  'rms': 'RMSNorm',
  'rmsnorm': 'RMSNorm',
  'rms_norm': 'RMSNorm',
}
# The paper's legend order, and one colour per normalization in every panel.
NORM_ORDER = ('BatchNorm', 'Baseline', 'LayerNorm', 'WeightNorm', 'RMSNorm')
NORM_COLOURS = {
  'BatchNorm': 'tab:blue',
  'Baseline': 'tab:green',
  'LayerNorm': 'tab:red',
  'WeightNorm': 'tab:purple',
  'RMSNorm': 'tab:orange',
}


@dataclasses.dataclass
class Run:
  """One workdir's logged rows and what its curves are called."""

  path: str
  rows: list[dict]
  norm: str | None  # Display name, e.g. 'LayerNorm'; None when the run does not say.
  batch_size: int | None
  config: dict = dataclasses.field(default_factory=dict)  # config.json as saved; {} when the run has none.

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.path))


def _lookup(config: dict, paths: Sequence[str]):
  """The value at the first dotted path present in `config`, else at the first key named like its last part."""
  for path in paths:
    node = config
    for key in path.split('.'):
      if not isinstance(node, dict) or key not in node:
        break
      node = node[key]
    else:
      return node
  leaves = {p.split('.')[-1] for p in paths}
  stack = [config]
  while stack:  # Breadth-first, so the shallowest match wins.
    node = stack.pop(0)
    for key, value in node.items():
      if key in leaves and not isinstance(value, dict):
        return value
    stack.extend(v for v in node.values() if isinstance(v, dict))
  return None


def _name_overrides(name: str) -> dict[str, str]:
  """`norm=ln,batch_size=4` (the sweep launcher's workdir names) -> {'norm': 'ln', 'batch_size': '4'}."""
  pairs = [p.split('=', 1) for p in name.split(',') if '=' in p]
  return {k.split('.')[-1]: v for k, v in pairs}


def load_run(path: str) -> Run:
  """Reads one workdir's rows and labels (config.json if present, else the directory name)."""
  rows = workdir.read_rows(path, strict=True)
  config = {}
  try:
    config = workdir.read_saved_config(path) or {}
  except workdir.WorkdirError as e:
    raise ValueError(str(e)) from None
  from_name = _name_overrides(os.path.basename(os.path.normpath(path)))
  norm = _lookup(config, ('norm', 'model.norm', 'normalization', 'model.normalization'))
  norm = from_name.get('norm') if norm is None else norm
  batch_size = _lookup(config, ('batch_size', 'data.batch_size', 'train.batch_size', 'input.batch_size'))
  batch_size = from_name.get('batch_size') if batch_size is None else batch_size
  return Run(
    path=path,
    rows=rows,
    norm=None if norm is None else NORM_NAMES.get(str(norm).lower(), str(norm)),
    batch_size=None if batch_size is None else int(batch_size),
    config=config,
  )


# Folders scripts.sweep writes beside the workdirs.
SWEEP_SIDE_DIRS = ('logs', 'submitit')


def find_runs(paths: Iterable[str]) -> list[str]:
  """Workdirs named by `paths`: each path itself if it has metrics.jsonl, else its subdirectories that do."""
  runs = []
  for path in paths:
    if os.path.basename(os.path.normpath(path)) in SWEEP_SIDE_DIRS:
      continue  # `runs/fig6/*` also matches the sweep's own logs/ and submitit/ folders.
    if os.path.isfile(os.path.join(path, workdir.METRICS_FILE)) or not os.path.isdir(path):
      runs.append(path)  # A path that is no directory fails in load_run with the file's name.
      continue
    children = sorted(c.path for c in os.scandir(path) if os.path.isfile(os.path.join(c.path, workdir.METRICS_FILE)))
    runs.extend(children or [path])
  return runs


def series(run: Run, metric: str, x: str) -> tuple[list[float], list[float]]:
  """(x, y) of the rows that have both `x` and `metric`; rows without a value are skipped, not zeros."""
  points = [(row[x], row[metric]) for row in run.rows if row.get(x) is not None and row.get(metric) is not None]
  return [p[0] for p in points], [p[1] for p in points]


def logged_metrics(runs: Sequence[Run]) -> list[str]:
  """Every numeric metric some run logged, sorted; the x keys (step, epoch) excluded."""
  keys = {k for run in runs for row in run.rows for k, v in row.items() if isinstance(v, int | float)}
  return sorted(keys - set(X_KEYS))


def pick_metric(runs: Sequence[Run], candidates: Sequence[str], what: str) -> str:
  """The first of `candidates` that some run logged; ValueError listing what the runs did log."""
  logged = set(logged_metrics(runs))
  for metric in candidates:
    if metric in logged:
      return metric
  raise ValueError(
    f'No run logged {what} under any of {", ".join(candidates)}. The runs logged: {", ".join(sorted(logged))}. '
    'Name the metrics with --metrics.'
  )


def _check_x(runs: Sequence[Run], x: str) -> None:
  missing = [run.path for run in runs if not any(row.get(x) is not None for row in run.rows)]
  if missing:
    other = 'step' if x == 'epoch' else 'epoch'
    raise ValueError(
      f'No row has {x!r} in {", ".join(os.path.join(p, workdir.METRICS_FILE) for p in missing)}; try --x {other}.'
    )


def points(runs: Sequence[Run]) -> list[list[Run]]:
  """The runs grouped into points: the seeds of one point (configs equal apart from `seed`) share a group."""
  return seed_bands.group_by_point(runs, lambda r: r.name, lambda r: r.config)


def _labels(points: Sequence[Sequence[Run]]) -> list[str]:
  """Norm names where they tell points apart; the directory name (without `seed=K`) added where they do not."""
  firsts = [point[0] for point in points]
  base = [run.norm or seed_bands.seedless(run.name) for run in firsts]
  named = figures.disambiguate(base, [run.name for run in firsts])
  return [n if run.norm else b for b, n, run in zip(base, named, firsts, strict=True)]


def _sort_key(point: Sequence[Run]):
  run = point[0]
  order = NORM_ORDER.index(run.norm) if run.norm in NORM_ORDER else len(NORM_ORDER)
  return order, run.norm or '', run.name


# Axis labels in the paper's words and units; a metric not covered here is labelled with its key.
X_LABELS = {'epoch': 'Epoch', 'step': 'Training step'}
SPLIT_WORDS = {'test': 'Test', 'valid': 'Validation', 'train': 'Training'}
METRIC_WORDS = {  # name -> (words, factor from the logged value to the axis' unit)
  'error': ('error (%)', 100.0),
  'nll': ('NLL (nats)', 1.0),
  'nll_bound': ('bound (nats)', 1.0),
  'loss': ('loss', 1.0),
}


def axis_label(metric: str) -> tuple[str, float]:
  """('Test error (%)', 100.0) for 'eval/test/error': the label and the factor the values are plotted with."""
  parts = metric.split('/')
  if parts[0] == 'eval' and len(parts) == 3:
    split, name = parts[1], parts[2]
  elif parts[0] in ('train', 'train_epoch') and len(parts) == 2:
    split, name = 'train', parts[1]
  else:
    return metric, 1.0
  if split not in SPLIT_WORDS or name not in METRIC_WORDS:
    return metric, 1.0
  words, factor = METRIC_WORDS[name]
  return f'{SPLIT_WORDS[split]} {words}', factor


def _draw(ax, runs: Sequence[Run], metric: str, x: str, colour_by_norm: bool) -> str:
  """One curve per point (the mean over its seeds, over a min-max band); returns the y label.

  A curve with a single point gets a marker (a line needs two).
  """
  grouped = sorted(points(runs), key=_sort_key)
  ylabel, factor = axis_label(metric)
  for point, label in zip(grouped, _labels(grouped), strict=True):
    logged = [series(run, metric, x) for run in point]
    # A point that logged nothing here keeps its (empty) legend entry, so every panel lists the same methods.
    logged = [(xs, [y * factor for y in ys]) for xs, ys in logged if xs] or [([], [])]
    drawn_xs = logged[0][0] if len(logged) == 1 else seed_bands.band(logged).xs
    colour = NORM_COLOURS.get(point[0].norm) if colour_by_norm else None
    seed_bands.draw(ax, logged, label, color=colour, marker='o' if len(drawn_xs) == 1 else None)
  ax.set_xlabel(X_LABELS.get(x, x))
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  figures.legend_by_label(ax)
  return ylabel


def plot_fig6(runs: Sequence[Run], x: str = 'epoch', nll_metric: str | None = None, error_metric: str | None = None):
  """Figure 6: one column per batch size (largest left), training NLL (log y) above test error.

  Args:
    runs: the loaded workdirs, any mix of norms and batch sizes.
    x: 'epoch' or 'step'.
    nll_metric, error_metric: metric names; None picks the first logged of FIG6_NLL_METRICS / FIG6_ERROR_METRICS.

  Returns:
    A matplotlib Figure, `fig.axes` [2 x number of batch sizes] in row-major order.
  """
  _check_x(runs, x)
  nll_metric = nll_metric or pick_metric(runs, FIG6_NLL_METRICS, 'a training NLL')
  error_metric = error_metric or pick_metric(runs, FIG6_ERROR_METRICS, 'a test error')
  sizes = sorted({r.batch_size for r in runs if r.batch_size is not None}, reverse=True)
  groups = [(f'batch size {b}', [r for r in runs if r.batch_size == b]) for b in sizes]
  if any(r.batch_size is None for r in runs):
    groups.append(('batch size unknown', [r for r in runs if r.batch_size is None]))
  fig = Figure(figsize=(5 * len(groups), 7), layout='constrained')
  axes = fig.subplots(2, len(groups), squeeze=False)
  for column, (title, group) in enumerate(groups):
    nll_ax, error_ax = axes[0, column], axes[1, column]
    nll_label = _draw(nll_ax, group, nll_metric, x, colour_by_norm=True)
    nll_ax.set_yscale('log')
    nll_ax.set_title(f'{title}: training NLL')
    # The paper's "Training NLL": every one of FIG6_NLL_METRICS is one; a metric named by the user keeps its label.
    nll_ax.set_ylabel(f'{"Training NLL" if nll_metric in FIG6_NLL_METRICS else nll_label} (log scale)')
    _draw(error_ax, group, error_metric, x, colour_by_norm=True)
    error_ax.set_title(f'{title}: test error')
  return fig


def plot_curves(runs: Sequence[Run], metrics: Sequence[str] | None = None, x: str = 'step', logy: bool = False):
  """One panel per metric (default: every metric logged), one curve per point (seeds: their mean and a band).

  Returns:
    A matplotlib Figure, `fig.axes` one per metric in `metrics` order (then hidden spares).
  """
  _check_x(runs, x)
  metrics = list(metrics or logged_metrics(runs))
  logged = set(logged_metrics(runs))
  unknown = [m for m in metrics if m not in logged]
  if unknown:
    raise ValueError(f'No run logged {", ".join(unknown)}. The runs logged: {", ".join(sorted(logged))}.')
  columns = min(len(metrics), 3)
  rows = math.ceil(len(metrics) / columns)
  fig = Figure(figsize=(5 * columns, 3.8 * rows), layout='constrained')
  axes = fig.subplots(rows, columns, squeeze=False)
  one_per_norm = all(r.norm for r in runs) and len({r.norm for r in runs}) == len(points(runs))
  for ax, metric in zip(axes.flat, metrics, strict=False):
    _draw(ax, runs, metric, x, colour_by_norm=one_per_norm)
    ax.set_title(metric)
    if logy:
      ax.set_yscale('log')
  for ax in axes.flat[len(metrics) :]:
    ax.set_visible(False)
  return fig


LAYOUTS = (*figures.LAYOUTS, 'fig6', 'curves')


def make_figure(paths: Sequence[str], layout: str = 'curves', x: str | None = None, metrics=None, logy=False) -> Figure:
  """Loads the runs under `paths` and draws `layout` (one of LAYOUTS).

  fig1 ... fig5 are drawn as the paper's (`experiments.figures.LAYOUTS`: fixed metrics and x); fig6 takes `metrics`
  (training NLL, test error) and `x` (default epoch); curves takes any `metrics`, `x` (default step) and `logy`.
  Raises ValueError naming what is missing when the runs did not log what the layout draws.
  """
  if layout in figures.LAYOUTS:
    paper = figures.LAYOUTS[layout]
    if metrics or logy or (x and x != paper.x):
      raise ValueError(
        f"--layout {layout} draws the paper's metrics against {paper.x}; --metrics, --x and --logy are for "
        '--layout curves (and fig6).'
      )
    return figures.draw(layout, [figures.load(p) for p in find_runs(paths)])
  runs = [load_run(p) for p in find_runs(paths)]
  if layout == 'fig6':
    if metrics and len(metrics) != 2:
      raise ValueError(f'--layout fig6 takes two metrics, the training NLL and the test error; got {list(metrics)}.')
    return plot_fig6(runs, x or 'epoch', *(metrics or (None, None)))
  if layout == 'curves':
    return plot_curves(runs, metrics, x or 'step', logy)
  raise ValueError(f'Unknown layout {layout!r}; choose one of {", ".join(LAYOUTS)}.')


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(prog='python -m scripts.plot', description=__doc__.split('\n')[0])
  parser.add_argument('rundirs', nargs='+', metavar='RUNDIR', help='workdirs, or sweep roots holding workdirs')
  parser.add_argument('--out', required=True, help='PNG file to write')
  parser.add_argument('--layout', choices=LAYOUTS, default='curves', help="a paper figure's layout, or any curves")
  parser.add_argument('--x', choices=X_KEYS, default=None, help='x axis (default: epoch for fig6, step for curves)')
  parser.add_argument(
    '--metrics',
    nargs='+',
    help='metric names; fig6: training NLL then test error (default: the first logged of '
    f'{"/".join(FIG6_NLL_METRICS)} and {"/".join(FIG6_ERROR_METRICS)}); curves: default all',
  )
  parser.add_argument('--logy', action='store_true', help='log-scale y axes (curves layout)')
  args = parser.parse_args(argv)
  figures.check_output_image(args.out)
  try:
    fig = make_figure(args.rundirs, args.layout, args.x, args.metrics, args.logy)
  except ValueError as e:  # A workdir's files, or metrics and layout that do not go together.
    raise cli_errors.CommandError(str(e)) from e
  fig.savefig(args.out, dpi=150)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
