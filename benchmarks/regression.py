"""The speed regression table: every experiment's training step in the loop, beside a minimal step of the same task.

    python -m benchmarks.regression [--quick] [--check] [--rows mnist,attentive_reader/ln,...] [--repeats N]
        [--write_baseline] [--json OUT]

For each experiment at its CPU-scale config (`configs/<name>.py`), each norm it offers, and MNIST at batch 4 as well
as 128, two candidates are timed in one process, round-robin (`benchmarks/timing.py`):

  loop       the training loop's own jitted chunk of `config.steps_per_dispatch` steps, as `experiments.loop.train`
             issues it (`benchmarks.mnist_throughput.LoopChunk`: the host builds the batches the schedule picks,
             the state is donated, the step computes the loop's metrics, the config's optimizer and clipping);
  reference  the same task's model and `loss_fn` on the same batches with plain per-leaf `optax.adam`, the same
             number of steps in one `jax.jit` over a `lax.scan`, and nothing else: no metrics, no clipping, no
             schedule, batches already on the device.

Each row prints ms per step of both, `loop/ref` (the loop's overhead; target <= 1.10) and `x none` (the loop's time
for this norm over the same group's `norm=none` row: layer norm's cost; target <= 1.10 for LN). All candidates of
one experiment (one group) share the round-robin, so a burst of load from another process slows them alike.

`--check` compares both ratios of every measured row with `benchmarks/regression_baseline.json` and exits with
status 1, naming each row, when one rises more than 15% above its baseline. `--quick` measures the rows that matter
most (the small-batch MNIST rows, where per-step overhead shows first, and LN in the recurrent experiments) with
fewer repeats, in about 40 s on 2 cores: run `--quick --check` before every commit that touches the loop, the
library or a model. `--write_baseline` records the measured ratios (merged into the file; rows not measured keep
theirs). Time on a quiet machine: the load average is printed at the start and the end.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import optax
from flax import nnx

from benchmarks import timing
from benchmarks.layer_norm import environment
from benchmarks.mnist_throughput import LoopChunk
from experiments import allocator, cli_errors, loop
from experiments.flag_spelling import add_flag

BASELINE_PATH = os.path.join(os.path.dirname(__file__), 'regression_baseline.json')
TOLERANCE = 1.15  # A ratio more than 15% above its baseline fails --check.
TARGET = 1.10  # The targets for loop/ref and LN's x none.


@dataclasses.dataclass(frozen=True)
class Row:
  experiment: str
  variant: str  # The `get_config` argument, e.g. 'norm=ln,batch_size=4'.
  group: str  # Rows of one group share a round-robin and a `norm=none` baseline.

  @property
  def name(self) -> str:
    return f'{self.experiment}/{self.variant}'

  @property
  def norm(self) -> str:
    return dict(part.split('=') for part in self.variant.split(','))['norm']


def _rows() -> list[Row]:
  rows = []
  # `rms` (beyond the paper: issue 27's RMSNorm) beside each `ln`: the report's RMSNorm section reads both rows.
  for batch in (4, 128):
    for norm in ('none', 'bn', 'ln', 'rms'):
      rows.append(Row('mnist', f'norm={norm},batch_size={batch}', f'mnist/batch_size={batch}'))
  for experiment, norms in (
    ('draw', ('none', 'ln', 'rms')),
    ('order_embeddings', ('none', 'ln', 'rms')),
    ('attentive_reader', ('none', 'bn', 'bn_everywhere', 'ln', 'rms')),
    ('skip_thoughts', ('none', 'ln', 'rms')),
    ('handwriting', ('none', 'ln', 'rms')),
  ):
    rows += [Row(experiment, f'norm={norm}', experiment) for norm in norms]
  return rows


ROWS = _rows()
ORDER = {row.name: i for i, row in enumerate(ROWS)}
QUICK_ROWS = (
  'mnist/norm=none,batch_size=4',
  'mnist/norm=ln,batch_size=4',
  'mnist/norm=bn,batch_size=4',
  'order_embeddings/norm=none',
  'order_embeddings/norm=ln',
)


class UsageError(SystemExit):
  """A bad argument or baseline file: one `Error:` line on stderr and exit status 2 (1 means a ratio regressed)."""

  def __init__(self, message: str):
    print(f'Error: {message}', file=sys.stderr)
    super().__init__(2)
    self.message = message


def select_rows(spec: str | None, quick: bool) -> list[Row]:
  """The rows named by `--rows` (experiment names or whole row names, comma-separated), the quick set, or all.

  Raises UsageError naming the choices when a name matches no row.
  """
  if spec is None:
    return [r for r in ROWS if r.name in QUICK_ROWS] if quick else list(ROWS)
  chosen = []
  for part in (p.strip() for p in spec.split(',') if p.strip()):
    matches = [r for r in ROWS if part in (r.experiment, r.name, r.group)]
    if not matches:
      experiments = sorted({r.experiment for r in ROWS})
      raise UsageError(
        f'--rows: no row {part!r}. Choose experiments ({", ".join(experiments)}) or rows like {ROWS[2].name!r}.'
      )
    chosen += [r for r in matches if r not in chosen]
  return chosen


class ReferenceChunk:
  """The minimal step of a task: its model and `loss_fn`, per-leaf `optax.adam`, a `lax.scan` of `steps` steps.

  It trains on one fixed stack of batches (the loop's first chunk of them, already on the device), so that nothing
  but the arithmetic of the task's step is timed.
  """

  def __init__(self, loop_chunk: LoopChunk):
    config, task = loop_chunk.config, loop_chunk.task
    self.batches = loop_chunk.next_batches()
    model = task.build_model(loop.model_rngs(config.seed))
    model.train()
    train_def, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(config.optimizer.learning_rate)
    key = jax.random.key(config.seed)

    def one_step(carry, batch):
      params, rest, opt_state, step = carry

      def loss_of(params):
        model = nnx.merge(train_def, params, jax.tree.map(lambda x: x, rest))
        loss, _ = task.loss_fn(model, batch, jax.random.fold_in(key, step))
        return loss, nnx.split(model, nnx.Param, ...)[2]

      (_, rest), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), rest, opt_state, step + 1), None

    self.run = jax.jit(lambda carry, batches: jax.lax.scan(one_step, carry, batches)[0], donate_argnums=0)
    self.carry = (params, rest, tx.init(params), jax.numpy.zeros((), jax.numpy.int32))
    self.steps_per_call = loop_chunk.steps_per_call

  def __call__(self):
    self.carry = self.run(self.carry, self.batches)
    return self.carry


def build_candidates(rows: Sequence[Row]) -> dict[str, tuple[LoopChunk, ReferenceChunk]]:
  """(loop, reference) per row, each compiled and run once."""
  candidates = {}
  for row in rows:
    config = importlib.import_module(f'configs.{row.experiment}').get_config(row.variant)
    experiment = importlib.import_module(f'experiments.{row.experiment}')
    experiment.validate(config)
    task = experiment.build_task(config)
    loop_chunk = LoopChunk(config, task)
    reference = ReferenceChunk(loop_chunk)
    candidates[row.name] = (loop_chunk, reference)
  return candidates


def measure(rows: Sequence[Row], repeats: int, warmup: int, min_sample_seconds: float) -> list[dict]:
  """The table's rows, group by group (each group one round-robin)."""
  results = []
  groups = list(dict.fromkeys(r.group for r in rows))
  for group in groups:
    members = [r for r in rows if r.group == group]
    start = time.perf_counter()
    candidates = build_candidates(members)
    fns = {}
    for name, (loop_chunk, reference) in candidates.items():
      fns[f'{name} loop'] = loop_chunk
      fns[f'{name} ref'] = reference
    samples = timing.compare(fns, repeats=repeats, warmup=warmup, min_sample_seconds=min_sample_seconds)
    none_loop = next((samples[f'{r.name} loop'].median for r in members if r.norm == 'none'), None)
    for row in members:
      steps = candidates[row.name][0].steps_per_call
      loop_s, ref_s = samples[f'{row.name} loop'], samples[f'{row.name} ref']
      results.append(
        {
          'row': row.name,
          'group': group,
          'norm': row.norm,
          'steps_per_call': steps,
          'loop_ms': loop_s.median / steps * 1e3,
          'ref_ms': ref_s.median / steps * 1e3,
          'loop_over_ref': loop_s.median / ref_s.median,
          'over_none': loop_s.median / none_loop if none_loop else None,
          'loop_samples_s': list(loop_s.seconds),
          'ref_samples_s': list(ref_s.seconds),
        }
      )
    print(f'# measured {group} ({time.perf_counter() - start:.0f} s)', file=sys.stderr, flush=True)
  return results


def format_table(results: Sequence[dict]) -> str:
  header = ('row', 'loop ms/step', 'ref ms/step', 'loop/ref', 'x none')
  lines = [
    (
      r['row'],
      f'{r["loop_ms"]:.3f}',
      f'{r["ref_ms"]:.3f}',
      f'{r["loop_over_ref"]:.3f}',
      '-' if r['over_none'] is None else f'{r["over_none"]:.3f}',
    )
    for r in results
  ]
  return timing.text_table(header, lines, text_columns={0})


RATIOS = ('loop_over_ref', 'over_none')


def regressions(results: Sequence[dict], baseline: dict) -> list[str]:
  """One line per ratio more than 15% above its baseline (rows or ratios the baseline lacks are not judged)."""
  problems = []
  for r in results:
    base = baseline.get(r['row'], {})
    for ratio in RATIOS:
      if r[ratio] is None or base.get(ratio) is None:
        continue
      if r[ratio] > base[ratio] * TOLERANCE:
        problems.append(
          f'{r["row"]}: {ratio} = {r[ratio]:.3f}, more than 15% above its baseline {base[ratio]:.3f} '
          f'(limit {base[ratio] * TOLERANCE:.3f})'
        )
  return problems


def load_baseline(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)['rows']
  except FileNotFoundError:
    raise UsageError(f'no baseline at {path}: run with --write_baseline first.') from None
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise UsageError(f'{path} is not a regression baseline ({e}); rewrite it with --write_baseline.') from None


def write_baseline(path: str, results: Sequence[dict], env: dict) -> None:
  try:
    rows = load_baseline(path)
  except UsageError:
    rows = {}
  for r in results:
    rows[r['row']] = {ratio: None if r[ratio] is None else round(r[ratio], 4) for ratio in RATIOS}
  payload = {
    'about': 'Ratios of benchmarks.regression (median time ratios) that --check compares against, +15% allowed.',
    'measured': {k: env[k] for k in ('date', 'cpu', 'cpus_usable', 'loadavg_start', 'loadavg_end')},
    'rows': dict(
      sorted(
        rows.items(),
        key=lambda kv: [r.name for r in ROWS].index(kv[0]) if kv[0] in [r.name for r in ROWS] else len(ROWS),
      )
    ),
  }
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=1)
    f.write('\n')
  os.replace(tmp, path)
  print(f'wrote {path}')


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='the rows that matter most, fewer repeats (about 40 s)')
  parser.add_argument('--check', action='store_true', help='exit 1 when a ratio is >15%% above its baseline')
  parser.add_argument('--rows', help='comma-separated experiments or rows (default: all, or the quick set)')
  parser.add_argument('--baseline', default=BASELINE_PATH, help='the baseline file (default: %(default)s)')
  add_flag(parser, '--write_baseline', action='store_true', help='record the measured ratios as the baseline')
  timing.add_sampling_arguments(parser, repeats=7, warmup=1)
  args = parser.parse_args(argv)
  rows = select_rows(args.rows, args.quick)
  repeats = min(args.repeats, 5) if args.quick else args.repeats
  baseline = load_baseline(args.baseline) if args.check else {}
  allocator.keep_freed_memory()  # As every experiment's command line does (LAYERNORM_KEEP_MEMORY=0: glibc's default).

  env = environment(use_torch=False)
  env.pop('torch_note', None)
  timing.print_header(
    'training step: the loop against a minimal jitted step of the same task (CPU-scale configs)',
    env,
    '',
    f'{repeats} samples per candidate',
  )
  results = measure(rows, repeats, args.warmup, min_sample_seconds=0.05 if args.quick else 0.2)
  timing.print_results(
    env,
    format_table(results),
    "loop/ref: the loop's median time per step over the minimal step's (target <= 1.10).",
    "x none: this norm's loop time over its group's norm=none (target <= 1.10 for ln).",
  )
  timing.write_json(args.json, {'environment': env, 'args': vars(args), 'rows': results})
  if args.write_baseline:
    write_baseline(args.baseline, results, env)
  if args.check:
    problems = regressions(results, baseline)
    for line in problems:
      print(f'REGRESSION {line}')
    if problems:
      print(f'{len(problems)} ratio(s) regressed; see benchmarks/README.md ("The regression table") for what to do.')
      return 1
    print(f'check passed: {len(results)} rows within 15% of {args.baseline}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
