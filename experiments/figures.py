"""The paper's Figures 1-5 drawn from workdirs: one table of layouts (metrics, axes, legends) and one drawing function.

Used by `python -m scripts.plot --layout figN`, `experiments.skip_thoughts.pictures` (Figure 3) and
`experiments.handwriting.figure5` (Figure 5). Reads only each workdir's metrics.jsonl, config.json and status.json
(through `experiments.workdir`); no jax, so plots work on a machine that only has the logs.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Sequence

# Figure, not pyplot: no global figure registry or GUI backend, so this works headless and inside notebooks alike.
from matplotlib.figure import Figure

from experiments import cli_errors, seed_bands
from experiments import workdir as wd
from experiments.seed_bands import seedless


@dataclasses.dataclass(frozen=True)
class Line:
  """One logged metric drawn as one line per run; `suffix` is added to the run's legend label."""

  metric: str
  suffix: str = ''
  style: str = '-'
  std: str | None = None  # Metric holding the error bar (e.g. the spread over cross-validation folds).


@dataclasses.dataclass(frozen=True)
class Panel:
  title: str
  ylabel: str
  lines: tuple[Line, ...]
  scale: float = 1.0  # Logged value -> the axis' unit.
  paper: float | None = None  # The paper's reported value, drawn as a dashed horizontal line.


@dataclasses.dataclass(frozen=True)
class Kind:
  """A legend entry: the runs whose config matches `match` (model fields, see `run_fields`)."""

  label: str
  colour: str
  match: tuple[tuple[str, object], ...]


@dataclasses.dataclass(frozen=True)
class Layout:
  title: str
  experiment: str  # The module whose runs this figure reads, for error messages.
  x: str  # 'step' or 'epoch'.
  xlabel: str
  panels: tuple[Panel, ...]
  legend: tuple[Kind, ...]  # In the paper's legend order.
  columns: int = 1
  xscale: str = 'linear'
  paper_label: str = ''  # Legend of the `Panel.paper` lines.
  config_keys: tuple[str, ...] = ()  # Dotted config fields only this experiment has: other runs are refused.


def _kind(label: str, colour: str, **match) -> Kind:
  return Kind(label, colour, tuple(match.items()))


def _recall(k: int) -> Panel:
  return Panel(f'R@{k}', f'Validation image retrieval R@{k} (%)', (Line(f'eval/val/image_r{k}'),))


def _accuracy(task: str) -> Panel:
  metric = f'eval/downstream/{task}/accuracy'
  return Panel(task.upper(), 'Accuracy (%)', (Line(metric, std=f'{metric}_std'),), paper=SKIP_THOUGHTS_ORIGINAL[task])


# The paper's "Original" row of Table 3 (uni-skip of Kiros et al. 2015): Figure 3's horizontal lines.
SKIP_THOUGHTS_ORIGINAL = {'sick/pearson': 84.8, 'sick/mse': 28.7, 'mr': 75.5, 'cr': 79.3, 'subj': 92.1, 'mpqa': 86.9}
# RMSNorm (beyond the paper) is drawn beside LN where a sweep ran it (`norm=rms` is a point of every sweep).
BASELINE, LN, RMS = 'tab:green', 'tab:red', 'tab:orange'

LAYOUTS: dict[str, Layout] = {
  'fig1': Layout(
    title='Figure 1: order-embeddings, recall@K of image retrieval (a caption ranks the images) on the validation set',
    experiment='experiments.order_embeddings',
    x='step',
    xlabel='Updates',
    panels=tuple(_recall(k) for k in (1, 5, 10)),
    legend=(
      _kind('Order-Embedding', BASELINE, model='oe', norm='none'),
      _kind('Order-Embedding + LN', LN, model='oe', norm='ln'),
      _kind('Sym', 'tab:blue', model='sym', norm='none'),
      _kind('Sym + LN', 'tab:purple', model='sym', norm='ln'),
      _kind('Order-Embedding + RMSNorm', RMS, model='oe', norm='rms'),
    ),
    columns=3,
    config_keys=('model.margin',),
  ),
  'fig2': Layout(
    title='Figure 2: attentive reader, validation curves',
    experiment='experiments.attentive_reader',
    x='step',
    xlabel='Training steps',
    panels=(Panel('', 'Validation error (%)', (Line('eval/valid/error'),), scale=100.0),),
    legend=(
      _kind('LSTM', BASELINE, norm='none', query_only=False),
      _kind('BN-LSTM', 'tab:blue', norm='bn', query_only=False),
      _kind('BN-everywhere', 'tab:purple', norm='bn_everywhere', query_only=False),
      _kind('LN-LSTM', LN, norm='ln', query_only=False),
      _kind('LN-LSTM, query only (control)', 'tab:gray', norm='ln', query_only=True),
      _kind('LSTM, query only (control)', 'tab:olive', norm='none', query_only=True),
      _kind('RMS-LSTM', RMS, norm='rms', query_only=False),
    ),
    config_keys=('model.query_only',),
  ),
  'fig3': Layout(
    title='Figure 3: skip-thoughts, downstream performance during training',
    experiment='experiments.skip_thoughts',
    x='step',
    xlabel='Iterations',
    panels=(
      Panel(
        'SICK', 'Pearson × 100', (Line('eval/downstream/sick/pearson'),), 100.0, SKIP_THOUGHTS_ORIGINAL['sick/pearson']
      ),
      Panel('SICK', 'MSE × 100', (Line('eval/downstream/sick/mse'),), 100.0, SKIP_THOUGHTS_ORIGINAL['sick/mse']),
      *(_accuracy(task) for task in ('mr', 'cr', 'subj', 'mpqa')),
    ),
    legend=(
      _kind('Ours', BASELINE, norm='none'),
      _kind('Ours + LN', LN, norm='ln'),
      _kind('Ours + RMSNorm', RMS, norm='rms'),
    ),
    columns=3,
    paper_label='Original (Kiros et al. 2015, reported)',
  ),
  'fig4': Layout(
    title='Figure 4: DRAW, test negative log likelihood with and without layer normalization',
    experiment='experiments.draw',
    x='epoch',
    xlabel='Epoch',
    panels=(Panel('', 'Test variational bound (nats)', (Line('eval/test/nll_bound'),)),),
    legend=(_kind('Baseline', BASELINE, norm='none'), _kind('LN', LN, norm='ln'), _kind('RMSNorm', RMS, norm='rms')),
  ),
  'fig5': Layout(
    title='Figure 5: handwriting generation, negative log likelihood with and without layer normalization',
    experiment='experiments.handwriting',
    x='step',
    xlabel='Updates (log scale)',
    panels=(
      Panel(
        '',
        'Negative log likelihood per sequence (nats)',
        (Line('eval/test/nll', ' test', '-'), Line('train/loss', ' train', ':')),
      ),
    ),
    legend=(_kind('Baseline', BASELINE, norm='none'), _kind('LN', LN, norm='ln'), _kind('RMSNorm', RMS, norm='rms')),
    xscale='log',
    config_keys=('model.window_mixtures',),
  ),
}
# What a run is, for the legend: the dotted config fields read (first present wins), and their value when absent.
RUN_FIELDS = {'norm': ('model.norm', 'norm'), 'model': ('model.model',), 'query_only': ('model.query_only',)}
RUN_DEFAULTS = {'query_only': False}


@dataclasses.dataclass(frozen=True)
class RunLogs:
  """What a figure reads from one workdir."""

  path: str
  rows: list[dict]
  config: dict
  status: dict | None

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.path))


def disambiguate(labels: Sequence[str], names: Sequence[str]) -> list[str]:
  """Labels that two different points share get the point's directory name; the seeds of one point keep one label."""
  pairs = list(zip(labels, names, strict=True))
  points = {label: {seedless(name) for other, name in pairs if other == label} for label in labels}
  return [f'{label} ({seedless(name)})' if len(points[label]) > 1 else label for label, name in pairs]


def legend_by_label(ax, **kwargs) -> None:
  """The legend with one entry per label (seeds that share no x are drawn as lines under one label, see seed_bands)."""
  handles, labels = ax.get_legend_handles_labels()
  first = {}
  for handle, label in zip(handles, labels, strict=True):
    first.setdefault(label, handle)
  ax.legend(list(first.values()), list(first), **kwargs)


def load(path: str) -> RunLogs:
  """Reads `path`'s metrics.jsonl (ValueError naming the file if missing or malformed), config.json, status.json."""
  rows = wd.read_rows(path, strict=True)
  try:
    return RunLogs(path, rows, wd.read_saved_config(path) or {}, wd.read_status(path))
  except wd.WorkdirError as e:
    raise ValueError(str(e)) from None


def _get(config: dict, dotted: str):
  node = config
  for key in dotted.split('.'):
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node


def run_fields(run: RunLogs) -> dict[str, object]:
  """{'norm': 'ln', 'model': 'oe', 'query_only': False}: from config.json, else the directory's `key=value` parts."""
  from_name = {}
  for part in run.name.split(','):
    key, _, value = part.partition('=')
    from_name[key.split('.')[-1]] = value if value else True  # `norm=ln,query_only`: a bare key is a true flag.
  fields = {}
  for field, paths in RUN_FIELDS.items():
    value = next((v for v in (_get(run.config, p) for p in paths) if v is not None), None)
    value = from_name.get(field) if value is None and not run.config else value
    fields[field] = RUN_DEFAULTS.get(field) if value is None else value
  return fields


def legend_entry(layout: Layout, run: RunLogs) -> tuple[int, str, str | None]:
  """(position in the paper's legend, label, colour) of a run; a run the legend does not name comes last, by name."""
  fields = run_fields(run)
  for i, kind in enumerate(layout.legend):
    if all(fields.get(k) == v for k, v in kind.match):
      return i, kind.label, kind.colour
  return len(layout.legend), run.name, None


def _metrics(layout: Layout) -> list[str]:
  return [line.metric for panel in layout.panels for line in panel.lines]


def _check(name: str, layout: Layout, runs: Sequence[RunLogs]) -> None:
  """ValueError naming what is missing: no runs, a run of another experiment, a metric or x that nobody logged."""
  if not runs:
    raise ValueError(f'--layout {name} got no workdirs.')
  wanted = _metrics(layout)
  for run in runs:
    logged = {k for row in run.rows for k in row}
    missing_keys = [k for k in layout.config_keys if run.config and _get(run.config, k) is None]
    if missing_keys or not logged & set(wanted):
      status = (run.status or {}).get('status')
      if missing_keys:
        why = f'is not one: its config.json has no {", ".join(missing_keys)}'
      else:
        why = f'is not one, or has not evaluated yet: it logged none of {wanted}'
      raise ValueError(
        f'{name} ({layout.title.split(": ")[0]}) draws runs of {layout.experiment}, but {run.path} {why}'
        f'{f" (status: {status})" if status else ""}. It logged: {", ".join(sorted(logged - {"step"}))}.'
      )
  for metric in wanted:  # A metric nobody logged (a task the config left out) gets an empty panel, said so there.
    with_metric = [row for run in runs for row in run.rows if row.get(metric) is not None]
    if with_metric and not any(row.get(layout.x) is not None for row in with_metric):
      raise ValueError(f'{name} plots {metric} against {layout.x!r}, but no row that has {metric} has {layout.x!r}.')


def series(run: RunLogs, line: Line, x: str) -> tuple[list[float], list[float], list[float] | None]:
  """(x, y, error bars or None) of the rows that have both `x` and the line's metric; rows without one are skipped."""
  rows = [r for r in run.rows if r.get(x) is not None and r.get(line.metric) is not None]
  errors = [r.get(line.std) or 0.0 for r in rows] if line.std else None
  return [r[x] for r in rows], [r[line.metric] for r in rows], errors


def draw(name: str, runs: Sequence[RunLogs], labels: Sequence[str] | None = None) -> Figure:
  """Figure `name` of LAYOUTS for `runs`: a panel per metric, a line per point (and per train/test where the paper has).

  A point run over several seeds (configs equal apart from `seed`, see `seed_bands`) is one line, the mean over its
  seeds, over a band from the lowest to the highest seed, labelled once with '(N seeds)'.

  Args:
    name: a key of LAYOUTS ('fig1' ... 'fig5').
    runs: the loaded workdirs (`load`).
    labels: legend labels, one per run in `runs` order (default: the paper's legend name of each run's config); a
      point's seeds are labelled by the first of them.

  Returns:
    A matplotlib Figure, `fig.axes` one per panel of the layout in order.

  Raises:
    ValueError: naming what is missing when a run logged none of the layout's metrics or is of another experiment.
      A panel whose metric no run logged (a smoke run evaluates fewer tasks) is drawn empty, with a note.
  """
  if name not in LAYOUTS:
    raise ValueError(f'Unknown figure {name!r}; choose one of {", ".join(LAYOUTS)}.')
  layout = LAYOUTS[name]
  _check(name, layout, runs)
  if labels is not None and len(labels) != len(runs):
    raise ValueError(f'{len(labels)} labels for {len(runs)} runs; give one label per run.')
  entries = [legend_entry(layout, run) for run in runs]
  if labels is not None:
    entries = [(i, label, colour) for (i, _, colour), label in zip(entries, labels, strict=True)]
  # The seeds of one point are one curve (their mean over a band); the point's legend entry is its first run's.
  entry_of = {id(run): entry for run, entry in zip(runs, entries, strict=True)}
  points = seed_bands.group_by_point(runs, lambda r: r.name, lambda r: r.config)
  entries = [entry_of[id(point[0])] for point in points]
  # Two points of one kind (learning rates, ...) are told apart by their directory names.
  shown = disambiguate([e[1] for e in entries], [point[0].name for point in points])
  entries = [(i, label, c) for (i, _, c), label in zip(entries, shown, strict=True)]
  drawn = sorted(zip(entries, points, strict=True), key=lambda ep: (ep[0][0], ep[0][1]))
  rows = len(layout.panels) // layout.columns  # Every layout fills its grid.
  width = 4.6 * layout.columns + 1.0
  fig = Figure(figsize=(width, 3.9 * rows + 0.5), layout='constrained')
  axes = fig.subplots(rows, layout.columns, squeeze=False).flat
  for ax, panel in zip(axes, layout.panels, strict=True):
    unlogged = []
    for line in panel.lines:
      if not any(series(run, line, layout.x)[0] for run in runs):
        unlogged.append(line.metric)
    if unlogged:
      ax.text(
        0.5,
        0.5,
        'not logged by these runs:\n' + '\n'.join(unlogged),
        transform=ax.transAxes,
        ha='center',
        bbox={'facecolor': 'white', 'edgecolor': '0.8'},
      )
    for (_, label, colour), point in drawn:
      for line in panel.lines:
        logged = [series(run, line, layout.x) for run in point]
        logged = [(xs, [y * panel.scale for y in ys], errors) for xs, ys, errors in logged if xs]
        if not logged:
          continue
        style = {
          'color': colour,
          'linestyle': line.style,
          'marker': 'o',
          'markersize': 3.5,
          # A marker on every point of a short run; on a long one, markers evenly spaced as drawn (log x too).
          'markevery': None if len(logged[0][0]) <= 20 else 0.06,
        }
        xs, ys, errors = logged[0]
        if len(logged) == 1 and errors is not None:
          ax.errorbar(xs, ys, yerr=[e * panel.scale for e in errors], capsize=2, label=label + line.suffix, **style)
        else:  # Several seeds: the band over seeds stands in for a line's error bars; both would hide the curve.
          seed_bands.draw(ax, [(xs, ys) for xs, ys, _ in logged], label + line.suffix, **style)
    if panel.paper is not None:
      ax.axhline(panel.paper, color='gray', linestyle='--', linewidth=1, label=layout.paper_label)
    ax.set_xscale(layout.xscale)
    ax.set_title(panel.title)
    ax.set_xlabel(layout.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3, which='both' if layout.xscale == 'log' else 'major')
  legend_by_label(fig.axes[0], fontsize=8)
  sources = {_get(r.config, 'data.source') for r in runs} - {None}
  title = layout.title + (f' (data: {sources.pop()}{downstream_note(runs)})' if len(sources) == 1 else '')
  fig.suptitle(textwrap.fill(title, int(13 * width)), fontsize=10)
  return fig


def downstream_note(runs: Sequence[RunLogs]) -> str:
  """'; downstream CR, MR real, SICK procedural' where the runs' task.json says which evaluation tasks were made up
  (skip-thoughts fills a task it has no files for procedurally), so that a title naming the training data does not
  claim them all; '' when every task was real or nothing was recorded."""
  sources = {}
  for run in runs:
    try:
      recorded = wd.read_task_metadata(run.path).get('downstream_sources')
    except (wd.WorkdirError, AttributeError):  # No task.json, or one that is not an object: nothing to say.
      continue
    sources.update(recorded if isinstance(recorded, dict) else {})
  made = [task.upper() for task, source in sources.items() if source != 'real']
  if not made:
    return ''
  real = [task.upper() for task, source in sources.items() if source == 'real']
  return '; downstream ' + ', '.join(
    filter(None, [f'{", ".join(real)} real' if real else '', f'{", ".join(made)} procedural'])
  )


def check_output_image(out: str) -> None:
  """Fails before any figure is drawn unless `out` names an image file in an existing directory.

  matplotlib would append '.png' to a name without an extension (a directory's name too) and write beside it.
  """
  if os.path.isdir(out):
    raise cli_errors.CommandError(
      f'--out {out} is a directory. Fix: name the PNG file to write, e.g. --out {os.path.join(out, "figure.png")}.'
    )
  parent = os.path.dirname(out) or '.'
  if not os.path.isdir(parent):
    raise cli_errors.CommandError(f'--out {out}: the directory {parent} does not exist. Fix: mkdir -p {parent}.')
  extension = os.path.splitext(out)[1].lstrip('.').lower()
  supported = Figure().canvas.get_supported_filetypes()
  if extension not in supported:
    raise cli_errors.CommandError(
      f'--out {out}: {f"{extension!r} is no image format" if extension else "no file extension"} '
      f'(matplotlib writes {", ".join(sorted(supported))}). Fix: e.g. --out {os.path.splitext(out)[0]}.png.'
    )
