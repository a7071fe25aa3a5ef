"""Prints Table 1 of Ba, Kiros & Hinton (2016), measured, next to the paper's; exits 1 if any cell disagrees.

    python -m scripts.invariance_table              # aligned text table (the project's `make demo`)
    python -m scripts.invariance_table --markdown   # the same as a Markdown table, for the README

Each cell applies one of the paper's six transformations to a single normalized layer and reports the largest
relative change of any training case's output over several random layers (see `layernorm.invariance`). Below the
paper's three rows, an RMS norm row (not in the paper) is measured the same way beside the row its own paper predicts
(Zhang & Sennrich 2019); its 6 cells are counted apart from the paper's 18.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

from experiments import cli_errors
from layernorm import invariance as inv

MARK = '✗'
COLUMN = 17
ROW_LABEL = 22


def _verdict_text(cell: inv.Cell) -> str:
  return cell.verdict + ('' if cell.agrees else f' {MARK}')


def _change_text(cell: inv.Cell) -> str:
  """The number the verdict rests on: the largest change if nothing moved, the smallest if everything did."""
  lo, hi = min(cell.changes), max(cell.changes)
  if cell.verdict == inv.INVARIANT:
    return f'≤ {hi:.1e}'
  if cell.verdict == inv.NOT_INVARIANT:
    return f'≥ {lo:.2f}'
  return f'{lo:.0e}..{hi:.0e}'


def _sizes() -> str:
  layer = inv.random_layer(0)
  (n, d), h = layer.x_NxD.shape, layer.W_HxD.shape[0]
  return f'N = {n} cases, D = {d} inputs, H = {h} units'


def _expected_label(method: str) -> str:
  """Where a row's expected verdicts come from: the paper, or for a row beyond it, its own paper's prediction."""
  return 'paper' if method in inv.METHODS else 'predicted'


def _agreement(cells: list[inv.Cell]) -> str:
  """How many cells agree, the paper's 18 first (scripts.reproduce reads its verdict from 'N of 18 cells agree')."""
  paper = [c for c in cells if c.method in inv.METHODS]
  text = f"{sum(c.agrees for c in paper)} of {len(paper)} cells agree with the paper's Table 1."
  for method in inv.EXTENSION_METHODS:
    row = [c for c in cells if c.method == method]
    if row:
      text += (
        f' Not in the paper, the {inv.METHOD_TITLES[method]} row: {sum(c.agrees for c in row)} of its {len(row)} '
        f'agree with {inv.PREDICTION_SOURCES[method]}.'
      )
  return text


def _split_title(title: str) -> tuple[str, str]:
  """Two header lines of at most COLUMN - 2 characters, broken at the last space that fits."""
  cut = title.rfind(' ', 0, COLUMN - 1)
  return (title[:cut], title[cut + 1 :]) if len(title) > COLUMN - 2 else (title, '')


def text_table(cells: list[inv.Cell], num_layers: int, eps: float) -> str:
  by_key = {(c.method, c.transformation.name): c for c in cells}
  tops, bottoms = zip(*(_split_title(t.title) for t in inv.TRANSFORMATIONS), strict=True)
  lines = [
    'Table 1 of "Layer Normalization" (Ba, Kiros & Hinton 2016), measured: invariances of one normalized layer',
    "  h = f(g/σ (a − μ) + b),  a = W x,  computed with the library's BatchNorm, WeightNormLinear and layer_norm;",
    "  RMS norm (not in the paper: μ = 0, σ = root mean square of a, rms_norm) beside its paper's prediction",
    '  (Zhang & Sennrich 2019, Table 1)',
    '',
    ' ' * ROW_LABEL + ''.join(s.ljust(COLUMN) for s in tops).rstrip(),
    ' ' * ROW_LABEL + ''.join(s.ljust(COLUMN) for s in bottoms).rstrip(),
    '-' * (ROW_LABEL + COLUMN * len(inv.TRANSFORMATIONS)),
  ]
  methods = [m for m in inv.ALL_METHODS if (m, inv.TRANSFORMATIONS[0].name) in by_key]
  for method in methods:
    row = [by_key[method, t.name] for t in inv.TRANSFORMATIONS]
    title = inv.METHOD_TITLES[method]
    expected = _expected_label(method)
    lines.append(f'{title:<11} {expected:>9}' + ' ' + ''.join(c.paper.ljust(COLUMN) for c in row).rstrip())
    lines.append(f'{"":<11} {"measured":>9}' + ' ' + ''.join(_verdict_text(c).ljust(COLUMN) for c in row).rstrip())
    lines.append(f'{"":<11} {"change":>9}' + ' ' + ''.join(_change_text(c).ljust(COLUMN) for c in row).rstrip())
    lines.append('')
  lines += [
    f"change: largest relative change of any case's output, max_n ‖y'_n − y_n‖ / ‖y_n‖, over {num_layers} random "
    'layers',
    f'({_sizes()}, ε = {eps:g}); Invariant: every change < {inv.INVARIANT_TOL:g}, No: every change > '
    f'{inv.CHANGED_MIN:g}.',
    '',
    'Transformations (δ > 0 drawn from [1/4, 1/2] ∪ [2, 4], γ random at the scale of what it shifts):',
  ]
  width = max(len(t.title) for t in inv.TRANSFORMATIONS)
  lines += [f'  {t.title:<{width}}  {t.formula}' for t in inv.TRANSFORMATIONS]
  return '\n'.join(lines)


def markdown_table(cells: list[inv.Cell], num_layers: int, eps: float) -> str:
  by_key = {(c.method, c.transformation.name): c for c in cells}
  lines = [
    '| | ' + ' | '.join(t.title for t in inv.TRANSFORMATIONS) + ' |',
    '|---' * (len(inv.TRANSFORMATIONS) + 1) + '|',
  ]
  methods = [m for m in inv.ALL_METHODS if (m, inv.TRANSFORMATIONS[0].name) in by_key]
  for method in methods:
    entries = []
    for t in inv.TRANSFORMATIONS:
      c = by_key[method, t.name]
      entry = f'{c.verdict} ({_change_text(c)})'
      entries.append(entry if c.agrees else f'**{entry}** {MARK} {_expected_label(method)}: {c.paper}')
    lines.append(f'| {inv.METHOD_TITLES[method]} | ' + ' | '.join(entries) + ' |')
  lines += [
    '',
    f'Measured with `python -m scripts.invariance_table --markdown`: in brackets the largest relative change of any '
    f"training case's output over {num_layers} random layers ({_sizes()}, ε = {eps:g}); Invariant means "
    f'every change < {inv.INVARIANT_TOL:g}, No every change > {inv.CHANGED_MIN:g}. {_agreement(cells)}',
  ]
  return '\n'.join(lines)


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--markdown', action='store_true', help='print a Markdown table (for the README)')
  parser.add_argument('--layers', type=int, default=5, help='random layers measured per cell (default 5)')
  parser.add_argument(
    '--eps',
    type=float,
    default=inv.MEASURE_EPS,
    help=f'epsilon added to the variance by batch and layer norm (default {inv.MEASURE_EPS:g}; the paper has none)',
  )
  args = parser.parse_args(argv)
  if args.layers < 1:
    parser.error(f'--layers must be at least 1; got {args.layers}.')
  if not (math.isfinite(args.eps) and args.eps >= 0):
    parser.error(f"--eps must be a number >= 0 (0: the paper's formulas, without epsilon); got {args.eps}")

  start = time.perf_counter()
  cells = inv.measure_table(range(args.layers), eps=args.eps, methods=inv.ALL_METHODS)
  seconds = time.perf_counter() - start
  if args.markdown:
    print(markdown_table(cells, args.layers, args.eps))
  else:
    print(text_table(cells, args.layers, args.eps))

  disagreements = [c for c in cells if not c.agrees]
  if not args.markdown:
    print()
    _print_verdicts(cells, seconds)
  return 1 if disagreements else 0


def _print_verdicts(cells: list[inv.Cell], seconds: float) -> None:
  """One summary for the paper's cells and one per row beyond it, each judged against its own source."""
  paper = [c for c in cells if c.method in inv.METHODS]
  _print_group(paper, f'{len(paper)} cells', 'the paper', f' ({seconds:.1f} s)')
  for method in inv.EXTENSION_METHODS:
    row = [c for c in cells if c.method == method]
    if row:
      what = f'{len(row)} cells of the {inv.METHOD_TITLES[method]} row (not in the paper)'
      _print_group(row, what, inv.PREDICTION_SOURCES[method], '')
  if any(c.verdict == inv.UNCLEAR for c in cells):
    print(
      f'  Unclear: some changes lie between {inv.INVARIANT_TOL:g} and {inv.CHANGED_MIN:g}. An ε that is not small '
      'next to the variances\n  breaks the scale invariances by about ε/(2σ²); see layernorm/invariance.py.'
    )


def _print_group(group: list[inv.Cell], what: str, source: str, suffix: str) -> None:
  wrong = [c for c in group if not c.agrees]
  if not wrong:
    print(f'All {what} agree with {source}{suffix}.')
    return
  print(f'{MARK} {len(wrong)} of {what} disagree with {source}:')
  for c in wrong:
    print(
      f'  {inv.METHOD_TITLES[c.method]}, {c.transformation.title}: measured {c.verdict}, '
      f'{_expected_label(c.method)} {c.paper}; changes {", ".join(f"{x:.2e}" for x in c.changes)}'
    )


if __name__ == '__main__':
  sys.exit(main())
