"""The paper's tables and figures: what each reports, which sweep reproduces it, and how our runs are judged.

One `Result` per table or figure (Table 2 and Figure 1 share their runs, as do Table 3 and Figure 3). A result names
its config file (whose `sweep(add)` is the grid), how its runs are labelled, the numbers read from each run's logs
(`Measure`: a metric's last, smallest or largest logged value, or the step a curve first reaches a level), the
paper's numbers or claim (typed in from the paper, see docs/paper.md), and the claims a verdict rests on (`Claim`).

Verdicts follow one rule everywhere: a claim "A is better than B" holds when A's mean over seeds beats B's by more
than the spread (max - min) between either's seeds; a smaller difference is "within spread", not a reproduction.
With one seed there is no spread to test against, so every verdict then says so.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence

from scripts import plot

Run = plot.Run


@dataclasses.dataclass(frozen=True)
class Reading:
  """One number read from one run's logs, with where it came from (so a test can read it again)."""

  value: float | None
  run: str
  metric: str
  how: str  # 'last' | 'min' | 'max' | 'first_step<=X' | 'first_step>=X' | 'status:<key>'


@dataclasses.dataclass(frozen=True)
class Measure:
  """A column of a result's table: how to read one number from a run."""

  label: str
  metric: str
  how: str  # 'last', 'min' or 'max' of the logged values.
  higher_is_better: bool
  digits: int = 3  # Significant digits shown.
  # A classifier's chance level: two runs both near it are not compared. A metric name: the level each run logged
  # (the majority class's share, which depends on the data the run was scored on), averaged over the runs compared.
  chance: float | str | None = None

  def chance_level(self, runs: Sequence[Run]) -> float | None:
    if not isinstance(self.chance, str):
      return self.chance
    levels = [v for run in runs if (v := Measure(self.chance, self.chance, 'last', True).read(run).value) is not None]
    return sum(levels) / len(levels) if levels else None

  def read(self, run: Run) -> Reading:
    values = [row[self.metric] for row in run.rows if _finite(row.get(self.metric))]
    value = None
    if values:
      value = {'last': values[-1], 'min': min(values), 'max': max(values)}[self.how]
    return Reading(value, run.path, self.metric, self.how)


def _finite(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def first_step(run: Run, metric: str, level: float, higher_is_better: bool, x: str = 'step') -> Reading:
  """The first logged `x` (step or epoch) at which `metric` is at least as good as `level`; None if never."""
  how = f'first_{x}{">=" if higher_is_better else "<="}{level!r}'
  for row in run.rows:
    value = row.get(metric)
    if _finite(value) and row.get(x) is not None and (value >= level if higher_is_better else value <= level):
      return Reading(float(row[x]), run.path, metric, how)
  return Reading(None, run.path, metric, how)


@dataclasses.dataclass(frozen=True)
class Stat:
  """A number over seeds: the readings of one point's runs."""

  readings: tuple[Reading, ...]

  @property
  def values(self) -> list[float]:
    return [r.value for r in self.readings if r.value is not None]

  @property
  def complete(self) -> bool:
    return bool(self.readings) and all(r.value is not None for r in self.readings)

  @property
  def mean(self) -> float | None:
    return statistics.fmean(self.values) if self.values else None

  @property
  def spread(self) -> float | None:
    """max - min over seeds; None with fewer than two."""
    values = self.values
    return max(values) - min(values) if len(values) > 1 else None

  def text(self, digits: int = 3) -> str:
    if not self.values:
      return '-'
    if len(self.values) == 1:
      return fmt(self.values[0], digits)
    return f'{fmt(self.mean, digits)} ({fmt(min(self.values), digits)} to {fmt(max(self.values), digits)})'


def fmt(value: float | None, digits: int = 3) -> str:
  """A number as the report prints it (and as the test finds it again)."""
  if value is None:
    return '-'
  if value == 0 or 1e-3 <= abs(value) < 1e6:
    text = f'{value:.{digits}g}' if abs(value) < 10**digits else f'{value:.0f}'
    return text
  return f'{value:.2e}'


def compare(a: Stat, b: Stat, higher_is_better: bool) -> str:
  """'better' / 'worse' when A beats / trails B by more than either's spread over seeds; 'within spread' when not;
  'missing' when either has no value. With one seed each the spread is unknown and the direction decides."""
  if a.mean is None or b.mean is None:
    return 'missing'
  diff = (a.mean - b.mean) * (1 if higher_is_better else -1)
  spread = max(a.spread or 0.0, b.spread or 0.0)
  if abs(diff) <= spread or diff == 0:
    return 'within spread'
  return 'better' if diff > 0 else 'worse'


@dataclasses.dataclass(frozen=True)
class Outcome:
  holds: bool | None  # None: the runs needed are missing or unfinished.
  detail: str


Groups = dict[str, list[Run]]  # Point key (workdir name without variant and seed) -> its runs, one per seed.


@dataclasses.dataclass(frozen=True)
class Claim:
  """One sentence of the paper that our runs can confirm or not."""

  text: str
  check: Callable[[Result, Groups], Outcome]


@dataclasses.dataclass(frozen=True)
class Figure:
  layout: str  # A scripts.plot layout.
  filename: str  # Under the report's directory.
  title: str
  keys: tuple[str, ...] = ()  # Points drawn; () = all of the result's points.


@dataclasses.dataclass(frozen=True)
class Result:
  """A table or figure of the paper, the sweep that reproduces it, and how its runs are judged."""

  key: str  # 'fig6'; also the directory under --root.
  aliases: tuple[str, ...]  # Other names --only accepts ('fig1' for Table 2's runs).
  title: str
  config: str | None  # The config file whose sweep(add) is the grid; None: `command` instead.
  # Point key -> the paper's name for it, in the paper's order: the result runs these points of the grid and
  # `controls`, no others (a part beyond the paper shares a paper result's key, directory, seeds and --set fields,
  # and so reuses its runs).
  labels: dict[str, str]
  measures: tuple[Measure, ...]
  paper: str  # The paper's numbers or claim, as Markdown.
  claims: tuple[Claim, ...]
  figures: tuple[Figure, ...] = ()
  controls: tuple[dict, ...] = ()  # Points run beside the grid (not the paper's), e.g. a query-only reader.
  # The paper's numbers in the measures' columns (None: not reported), one row per name, shown above ours.
  paper_rows: dict[str, tuple[float | None, ...]] = dataclasses.field(default_factory=dict)
  command: tuple[str, ...] = ()  # For a result with no runs: the module run (with its arguments) instead.
  # `python -m scripts.get_data` sets the result reads: at the cpu scale, fetched first; `real_variant` runs on them
  # when the first is there (the others may be partial: skip-thoughts fills missing downstream sets procedurally).
  data: tuple[str, ...] = ()
  real_variant: bool = False  # The config has a `real` variant: the cpu scale on the fetched data.
  parts: tuple[Result, ...] = ()  # A result spanning several experiments: one part per experiment, no config.
  # (claim, benchmarks.regression row of A, row of B): "A's training step takes no longer than B's", on its table.
  speed: tuple[tuple[str, str, str], ...] = ()

  def label(self, key: str) -> str:
    return self.labels.get(key, key)

  def stat(self, groups: Groups, key: str, measure: Measure) -> Stat:
    return Stat(tuple(measure.read(run) for run in groups.get(key, [])))

  def measure(self, label: str) -> Measure:
    return next(m for m in self.measures if m.label == label)


CHANCE_MARGIN = 5.0  # Accuracy points: a binary classifier at 45-55% has learnt nothing the claim could rest on.


def _compared(result: Result, groups: Groups, a: str, b: str, measure_label: str):
  """(measure, stat of a, stat of b, compare()'s verdict or None when a run is missing or unfinished, the detail)."""
  measure = result.measure(measure_label)
  sa, sb = result.stat(groups, a, measure), result.stat(groups, b, measure)
  verdict = compare(sa, sb, measure.higher_is_better)
  detail = (
    f'{result.label(a)} {sa.text(measure.digits)} vs {result.label(b)} {sb.text(measure.digits)} '
    f'({measure.label}): {verdict}'
  )
  if verdict == 'missing' or not (sa.complete and sb.complete):
    return (
      measure,
      sa,
      sb,
      None,
      detail + ' (not logged: a run is missing or unfinished, or this scale does not evaluate it)',
    )
  return measure, sa, sb, verdict, detail


def beats(a: str, b: str, measure_label: str) -> Callable[[Result, Groups], Outcome]:
  """Holds when point `a` is better than point `b` on a measure, beyond the seeds' spread."""

  def check(result: Result, groups: Groups) -> Outcome:
    measure, sa, sb, verdict, detail = _compared(result, groups, a, b, measure_label)
    if verdict is None:
      return Outcome(None, detail)
    chance = measure.chance_level([*groups.get(a, []), *groups.get(b, [])])
    if chance is not None and all(abs(s.mean - chance) < CHANCE_MARGIN for s in (sa, sb)):
      return Outcome(False, detail + f' - but both are within {CHANCE_MARGIN:g} of chance ({chance:.3g}): no evidence')
    return Outcome(verdict == 'better', detail)

  return check


def reaches_first(
  a: str, b: str, metric: str, higher_is_better: bool, x: str = 'step', within: float = 1.0
) -> Callable[[Result, Groups], Outcome]:
  """Holds when `a` reaches `b`'s best logged value of `metric` in at most `within` x the steps `b` took to get there,
  for every seed (seed k of `a` against seed k of `b`): the paper's "trains faster" read off the curves."""

  def check(result: Result, groups: Groups) -> Outcome:
    runs_a, runs_b = groups.get(a, []), groups.get(b, [])
    if not runs_a or len(runs_a) != len(runs_b):
      return Outcome(None, f'{result.label(a)} or {result.label(b)}: runs missing')
    ratios, parts = [], []
    for run_a, run_b in zip(runs_a, runs_b, strict=True):
      best = Measure('best', metric, 'max' if higher_is_better else 'min', higher_is_better).read(run_b).value
      if best is None:
        return Outcome(None, f'{result.label(b)} logged no {metric}')
      when_b = first_step(run_b, metric, best, higher_is_better, x).value
      when_a = first_step(run_a, metric, best, higher_is_better, x).value
      parts.append(f'{result.label(a)} at {fmt(when_a)} vs {result.label(b)} at {fmt(when_b)} {x}s')
      ratios.append(math.inf if when_a is None else when_a / when_b)
    holds = all(r <= within for r in ratios)
    shown = ', '.join('never' if math.isinf(r) else f'{100 * r:.0f}%' for r in ratios)
    return Outcome(
      holds, f"{result.label(a)} reaches {result.label(b)}'s best {metric} in {shown} of its {x}s ({'; '.join(parts)})"
    )

  return check


def robust_to_batch_size(norm: str, other: str, measure_label: str) -> Callable[[Result, Groups], Outcome]:
  """Holds when `norm`'s change from batch 128 to 4 is smaller than `other`'s beyond the spread between seeds (seed k
  at batch 4 against seed k at batch 128): Figure 6's "robust to the batch size"."""

  def check(result: Result, groups: Groups) -> Outcome:
    measure = result.measure(measure_label)
    changes = {}
    for n in (norm, other):
      big = result.stat(groups, f'norm={n},batch_size=128', measure)
      small = result.stat(groups, f'norm={n},batch_size=4', measure)
      if not (big.complete and small.complete) or len(big.readings) != len(small.readings):
        return Outcome(None, f'{n}: runs missing or unfinished')
      changes[n] = Stat(
        tuple(
          Reading(abs(s.value - b.value), s.run, measure.metric, f'abs(batch 4 - batch 128) of {measure.how}')
          for s, b in zip(small.readings, big.readings, strict=True)
        )
      )
    verdict = compare(changes[norm], changes[other], higher_is_better=False)
    detail = ', '.join(f'{n}: {c.text()}' for n, c in changes.items())
    return Outcome(verdict == 'better', f'{measure.label}, size of its change from batch 128 to 4: {detail}: {verdict}')

  return check


def within_spread_or_better(a: str, b: str, measure_label: str) -> Callable[[Result, Groups], Outcome]:
  """Holds when point `a` is within the seeds' spread of point `b` on a measure, or better: "as good as"."""

  def check(result: Result, groups: Groups) -> Outcome:
    _, _, _, verdict, detail = _compared(result, groups, a, b, measure_label)
    return Outcome(None if verdict is None else verdict in ('better', 'within spread'), detail)

  return check


def step_time(table: dict[str, dict] | None, a: str, b: str, missing: str) -> Outcome:
  """Holds when row `a` of benchmarks.regression's table (its rows by name) trains no slower per step than row `b`:
  better or within the spread of their timing samples (the loop's samples, per step). `missing`: why no table."""
  rows = [(table or {}).get(name) for name in (a, b)]
  if table is None or not all(rows):
    return Outcome(None, missing if table is None else f'the regression table has no row {a if not rows[0] else b}')
  stats = [
    Stat(
      tuple(
        Reading(1e3 * s / row['steps_per_call'], row['row'], 'loop ms/step', 'sample') for s in row['loop_samples_s']
      )
    )
    for row in rows
  ]
  word = compare(*stats, higher_is_better=False)
  ratio = rows[0]['loop_ms'] / rows[1]['loop_ms']
  return Outcome(
    None if word == 'missing' else word in ('better', 'within spread'),
    f'{a} {fmt(rows[0]["loop_ms"])} vs {b} {fmt(rows[1]["loop_ms"])} ms per step (medians; {stats[0].text()} vs '
    f'{stats[1].text()} over samples): {ratio:.2f}x, {word}',
  )


def verdict(outcomes: Sequence[Outcome], seeds: int) -> tuple[str, str]:
  """('reproduced' | 'partly' | 'not reproduced' | 'incomplete', one line saying why)."""
  if not outcomes or any(o.holds is None for o in outcomes):
    word = 'incomplete'
  elif all(o.holds for o in outcomes):
    word = 'reproduced'
  elif any(o.holds for o in outcomes):
    word = 'partly'
  else:
    word = 'not reproduced'
  held = sum(bool(o.holds) for o in outcomes)
  why = f'{held} of {len(outcomes)} claims hold'
  if seeds < 2:
    why += '; one seed, so no difference was tested against the spread between seeds'
  return word, why


# --- The paper's results -------------------------------------------------------------------------------------------

FIG6_NORMS = {'bn': 'BatchNorm', 'none': 'Baseline', 'ln': 'LayerNorm'}

PAPER_RESULTS: tuple[Result, ...] = (
  Result(
    key='table1',
    aliases=('invariance',),
    title='Table 1: invariance under re-scaling and re-centering',
    config=None,
    labels={},
    measures=(),
    paper='Batch, weight and layer normalization are each invariant to some of: weight matrix re-scaling and '
    're-centering, weight vector re-scaling, dataset re-scaling and re-centering, single training case re-scaling '
    "(the paper's Table 1, 18 cells).",
    claims=(),
    command=('scripts.invariance_table', '--markdown'),
  ),
  Result(
    key='table2',
    aliases=('fig1', 'order_embeddings'),
    title='Table 2 and Figure 1: order-embeddings, image-caption retrieval',
    config='configs/order_embeddings.py',
    labels={'model=sym,norm=none': 'Sym', 'model=oe,norm=none': 'OE', 'model=oe,norm=ln': 'OE + LN'},
    measures=(
      Measure('caption R@1', 'best/eval/test/caption_r1', 'last', True),
      Measure('caption R@5', 'best/eval/test/caption_r5', 'last', True),
      Measure('caption R@10', 'best/eval/test/caption_r10', 'last', True),
      Measure('caption mean r', 'best/eval/test/caption_mean_rank', 'last', False),
      Measure('image R@1', 'best/eval/test/image_r1', 'last', True),
      Measure('image R@5', 'best/eval/test/image_r5', 'last', True),
      Measure('image R@10', 'best/eval/test/image_r10', 'last', True),
      Measure('image mean r', 'best/eval/test/image_mean_rank', 'last', False),
    ),
    paper='Table 2 (COCO, mean over 5 test folds of 1,000 images): OE (ours) caption R@1/R@5/R@10 46.6/79.3/89.1, '
    'mean r 5.2, image 37.8/73.6/85.7, mean r 7.9; OE + LN caption 48.5/80.6/89.8, 5.1, image 38.9/74.3/86.3, 7.6 '
    '(Sym of Vendrov et al.: caption R@1 45.4, image R@1 36.3). Figure 1: LN reaches its best validation model in '
    '60% of the time the baseline needs. Our numbers: the test split at the best validation R@ sum.',
    claims=(
      Claim(
        'OE + LN retrieves images better than OE (test image R@1)',
        beats('model=oe,norm=ln', 'model=oe,norm=none', 'image R@1'),
      ),
      Claim(
        'OE + LN retrieves captions better than OE (test caption R@1)',
        beats('model=oe,norm=ln', 'model=oe,norm=none', 'caption R@1'),
      ),
      Claim(
        "OE + LN reaches OE's best validation R@1 + R@5 + R@10 in fewer updates (paper: 60% of the time)",
        reaches_first('model=oe,norm=ln', 'model=oe,norm=none', 'eval/val/image_r_sum', True),
      ),
    ),
    paper_rows={
      'Sym (Vendrov et al.)': (45.4, None, 88.7, 5.8, 36.3, None, 85.8, 9.0),
      'OE': (46.6, 79.3, 89.1, 5.2, 37.8, 73.6, 85.7, 7.9),
      'OE + LN': (48.5, 80.6, 89.8, 5.1, 38.9, 74.3, 86.3, 7.6),
    },
    figures=(
      Figure(
        'fig1',
        'fig1.png',
        'Figure 1: validation image retrieval R@K against updates',
        ('model=oe,norm=none', 'model=oe,norm=ln'),
      ),
    ),
  ),
  Result(
    key='fig2',
    aliases=('attentive_reader',),
    title='Figure 2: the attentive reader, question answering',
    config='configs/attentive_reader.py',
    labels={
      'norm=none': 'LSTM',
      'norm=bn': 'BN-LSTM',
      'norm=bn_everywhere': 'BN-everywhere',
      'norm=ln': 'LN-LSTM',
      'norm=ln,query_only=True': 'query only (control)',
    },
    measures=(
      Measure('best validation error', 'eval/valid/error', 'min', False),
      Measure('final validation error', 'eval/valid/error', 'last', False),
    ),
    paper='Figure 2 (CNN, validation error against steps): LN-LSTM trains faster and reaches a lower validation '
    "error than LSTM, BN-LSTM and BN-everywhere; no number for LN in the text (the others' minima, from Cooijmans et "
    'al.: LSTM 50.3%, BN-LSTM 49.5%, BN-everywhere 50.0%). The query-only control is ours: it shows the answer '
    'cannot be read off the query alone.',
    claims=(
      Claim('LN-LSTM ends lower than LSTM', beats('norm=ln', 'norm=none', 'best validation error')),
      Claim('LN-LSTM ends lower than BN-LSTM', beats('norm=ln', 'norm=bn', 'best validation error')),
      Claim('LN-LSTM ends lower than BN-everywhere', beats('norm=ln', 'norm=bn_everywhere', 'best validation error')),
      Claim(
        "LN-LSTM reaches LSTM's best validation error first",
        reaches_first('norm=ln', 'norm=none', 'eval/valid/error', False),
      ),
    ),
    paper_rows={  # Cooijmans et al.'s minima, which the paper's BN curves are; none is given for LN.
      'LSTM': (0.503, None),
      'BN-LSTM': (0.495, None),
      'BN-everywhere': (0.500, None),
    },
    figures=(Figure('fig2', 'fig2.png', 'Figure 2: validation error against training steps'),),
    controls=({'norm': 'ln', 'query_only': True},),
  ),
  Result(
    key='table3',
    aliases=('fig3', 'skip_thoughts'),
    title='Table 3 and Figure 3: skip-thought vectors',
    config='configs/skip_thoughts.py',
    labels={'norm=none': 'Baseline', 'norm=ln': 'LN'},
    measures=(
      Measure('SICK r', 'best/eval/downstream/sick/pearson', 'last', True),
      Measure('SICK rho', 'best/eval/downstream/sick/spearman', 'last', True),
      Measure('SICK MSE', 'best/eval/downstream/sick/mse', 'last', False),
      *(
        Measure(
          task.upper(), f'best/eval/downstream/{task}/accuracy', 'last', True, chance=f'eval/downstream/{task}/majority'
        )
        for task in ('mr', 'cr', 'subj', 'mpqa')
      ),
    ),
    paper='Table 3 (BookCorpus, 1M iterations): Ours SICK r/rho/MSE 0.842/0.767/0.298, MR 77.3, CR 81.8, SUBJ 92.6, '
    'MPQA 87.9; Ours + LN 0.854/0.785/0.277, 79.5, 82.6, 93.4, 89.0 (LN better on every task). Figure 3: LN gives '
    'a speed-up and better final results. Our numbers: the downstream scores of the best validation checkpoint.',
    claims=tuple(
      Claim(f'LN is better on {m}', beats('norm=ln', 'norm=none', m))
      for m in ('SICK r', 'SICK rho', 'SICK MSE', 'MR', 'CR', 'SUBJ', 'MPQA')
    ),
    paper_rows={
      'Original (Kiros et al.)': (0.848, 0.778, 0.287, 75.5, 79.3, 92.1, 86.9),
      'Ours (1M it.)': (0.842, 0.767, 0.298, 77.3, 81.8, 92.6, 87.9),
      'Ours + LN (1M it.)': (0.854, 0.785, 0.277, 79.5, 82.6, 93.4, 89.0),
    },
    figures=(Figure('fig3', 'fig3.png', 'Figure 3: downstream scores against training steps'),),
    data=('text', 'senteval'),
    real_variant=True,
  ),
  Result(
    key='fig4',
    aliases=('draw',),
    title='Figure 4: DRAW',
    config='configs/draw.py',
    labels={'norm=none': 'Baseline', 'norm=ln': 'LN'},
    measures=(
      Measure('final test bound (nats)', 'eval/test/nll_bound', 'last', False, digits=4),
      Measure('best test bound (nats)', 'eval/test/nll_bound', 'min', False, digits=4),
    ),
    paper='Figure 4 (binarized MNIST, test variational bound against epochs): LN converges almost twice as fast; '
    'after 200 epochs baseline 82.36 nats, LN 82.09 nats.',
    claims=(
      Claim('LN ends with a lower test bound', beats('norm=ln', 'norm=none', 'final test bound (nats)')),
      Claim(
        "LN reaches the baseline's best test bound in at most 75% of its epochs (the paper: about half)",
        reaches_first('norm=ln', 'norm=none', 'eval/test/nll_bound', False, x='epoch', within=0.75),
      ),
    ),
    paper_rows={'Baseline (200 epochs)': (82.36, None), 'LN (200 epochs)': (82.09, None)},
    figures=(Figure('fig4', 'fig4.png', 'Figure 4: test variational bound against epochs'),),
    data=('binarized_mnist',),
    real_variant=True,
  ),
  Result(
    key='fig5',
    aliases=('handwriting',),
    title='Figure 5: handwriting sequence generation',
    config='configs/handwriting.py',
    labels={'norm=none': 'Baseline', 'norm=ln': 'LN'},
    measures=(
      Measure('final test NLL per sequence', 'eval/test/nll', 'last', False),
      Measure('final train NLL per sequence', 'train/loss', 'last', False),
    ),
    paper='Figure 5 (IAM-OnDB, NLL against updates, log x): LN reaches a log-likelihood comparable to the baseline '
    'but much faster; no numbers in the text.',
    claims=(
      Claim(
        'LN ends lower than the baseline (test NLL)',
        beats('norm=ln', 'norm=none', 'final test NLL per sequence'),
      ),
      Claim(
        "LN reaches the baseline's best test NLL in fewer updates",
        reaches_first('norm=ln', 'norm=none', 'eval/test/nll', False),
      ),
    ),
    figures=(Figure('fig5', 'fig5.png', 'Figure 5: NLL against updates'),),
    data=('hershey',),  # The stroke fonts its default (the only) CPU-scale source renders.
  ),
  Result(
    key='fig6',
    aliases=('mnist',),
    title='Figure 6: permutation-invariant MNIST',
    config='configs/mnist.py',
    labels={f'norm={n},batch_size={b}': f'{name}, batch {b}' for b in (128, 4) for n, name in FIG6_NORMS.items()},
    measures=(
      # The lowest epoch NLL rather than the last: near 1e-9 Adam at batch 4 can spike for an epoch (seen at
      # epoch 60 of one LN seed), and the figure's claim is about how far training gets.
      Measure('lowest train NLL', 'train_epoch/loss', 'min', False),
      Measure('final train NLL', 'train_epoch/loss', 'last', False),
      Measure('final test error', 'eval/test/error', 'last', False),
    ),
    paper='Figure 6 (MNIST 784-1000-1000-10, NLL and test error against epochs, batch 128 and 4): LN is robust to '
    'the batch size and converges faster in training than batch normalization applied to all layers; no numbers '
    'in the text.',
    claims=(
      Claim(
        'At batch 128, LN trains to a lower NLL than BN',
        beats('norm=ln,batch_size=128', 'norm=bn,batch_size=128', 'lowest train NLL'),
      ),
      Claim(
        'At batch 4, LN trains to a lower NLL than BN',
        beats('norm=ln,batch_size=4', 'norm=bn,batch_size=4', 'lowest train NLL'),
      ),
      Claim(
        'At batch 4, LN has a lower test error than BN',
        beats('norm=ln,batch_size=4', 'norm=bn,batch_size=4', 'final test error'),
      ),
      Claim(
        "LN's test error changes less than BN's from batch 128 to 4",
        robust_to_batch_size('ln', 'bn', 'final test error'),
      ),
    ),
    figures=(Figure('fig6', 'fig6.png', 'Figure 6: NLL and test error against epochs'),),
    data=('mnist',),
    real_variant=True,
  ),
)


# --- Beyond the paper ----------------------------------------------------------------------------------------------


def rms_part(base_key: str, title: str, ln_points: Sequence[dict], measure_label: str) -> Result:
  """One experiment of the RMSNorm extension: its LN point(s) of the paper result `base_key` and their `norm=rms`
  counterparts. The part shares the paper result's key, so its runs are ROOT/<base_key>/ beside the LN runs (which it
  reuses, not re-runs), at the paper result's variant, seeds and --set fields."""
  base = next(r for r in PAPER_RESULTS if r.key == base_key)
  experiment = base.config.rsplit('/', 1)[-1].removesuffix('.py')
  labels, controls, claims, speed = {}, [], [], []
  for ln in ln_points:
    rms = {**ln, 'norm': 'rms'}
    ln_key, rms_key = (','.join(f'{k}={v}' for k, v in p.items()) for p in (ln, rms))
    ln_label = base.label(ln_key)
    labels[ln_key], labels[rms_key] = ln_label, ln_label.replace('LayerNorm', 'RMSNorm').replace('LN', 'RMS')
    controls.append(rms)
    claims.append(
      Claim(
        f"{labels[rms_key]} is within the seeds' spread of {ln_label}, or better ({measure_label})",
        within_spread_or_better(rms_key, ln_key, measure_label),
      )
    )
    # benchmarks.regression's rows name the norm and the batch size (the model is the config's default).
    row = ','.join(f'{k}={v}' for k, v in rms.items() if k in ('norm', 'batch_size'))
    speed.append(
      (
        f"{labels[rms_key]}'s training step takes no longer than {ln_label}'s (benchmarks.regression)",
        f'{experiment}/{row}',
        f'{experiment}/{row.replace("norm=rms", "norm=ln")}',
      )
    )
  return Result(
    key=base.key,
    aliases=(),
    title=title,
    config=base.config,
    labels=labels,
    measures=base.measures,
    paper='',
    claims=tuple(claims),
    controls=tuple(controls),
    data=base.data,
    real_variant=base.real_variant,
    speed=tuple(speed),
  )


RMS_PARTS = (
  rms_part('fig6', 'MNIST (Figure 6)', [{'norm': 'ln', 'batch_size': 128}, {'norm': 'ln', 'batch_size': 4}],
           'lowest train NLL'),
  rms_part('table2', 'Order-embeddings (Table 2)', [{'model': 'oe', 'norm': 'ln'}], 'image R@1'),
  rms_part('fig2', 'The attentive reader (Figure 2)', [{'norm': 'ln'}], 'best validation error'),
  rms_part('table3', 'Skip-thoughts (Table 3)', [{'norm': 'ln'}], 'SICK r'),
  rms_part('fig4', 'DRAW (Figure 4)', [{'norm': 'ln'}], 'final test bound (nats)'),
  rms_part('fig5', 'Handwriting (Figure 5)', [{'norm': 'ln'}], 'final test NLL per sequence'),
)  # fmt: skip

RMS_RESULT = Result(
  key='rms',
  aliases=('rmsnorm',),
  title='Beyond the paper: RMSNorm on the same tasks',
  config=None,
  labels={},
  measures=(),
  paper="RMSNorm (Zhang & Sennrich, NeurIPS 2019) drops layer norm's re-centering and keeps its re-scaling; it claims "
  'quality comparable to layer norm at 7-64% less running time (on the attentive reader and order-embeddings among '
  "others). Here each experiment's LN point(s) run beside `norm=rms` at the same scale, variant and seeds (the LN "
  "runs are the paper results' own). Quality: RMS is within the seeds' spread of LN, or better, on the measure the "
  "experiment's paper claim uses. Speed: RMS's training step against LN's in benchmarks.regression's table, no "
  'slower beyond the spread of the timing samples.',
  claims=(),
  parts=RMS_PARTS,
  data=tuple(dict.fromkeys(name for part in RMS_PARTS for name in part.data)),
)

# The paper's results in its order, then what this codebase adds beyond it.
RESULTS: tuple[Result, ...] = (*PAPER_RESULTS, RMS_RESULT)


def select(only: Sequence[str] | None) -> list[Result]:
  """The results named by --only (keys or aliases), in the paper's order; all of them for None."""
  if not only:
    return list(RESULTS)
  names = {name: r for r in RESULTS for name in (r.key, *r.aliases)}
  unknown = [n for n in only if n not in names]
  if unknown:
    known = ', '.join(f'{r.key} ({"/".join(r.aliases)})' for r in RESULTS)
    raise ValueError(f'--only: unknown result {", ".join(unknown)}; choose from {known}.')
  wanted = {names[n].key for n in only}
  return [r for r in RESULTS if r.key in wanted]
