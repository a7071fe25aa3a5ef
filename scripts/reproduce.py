"""Reproduces the paper: runs (or collects) every table's and figure's sweep, then writes one report beside them.

  python -m scripts.reproduce --scale smoke --root runs/paper_smoke --out report_smoke/   # minutes: every code path
  python -m scripts.reproduce --scale cpu --root runs/paper --out report/                 # the README's results
  python -m scripts.reproduce --scale cpu --root runs/paper --out report/ --only fig6,table2 --seeds 3
  python -m scripts.reproduce --scale paper --root runs/paper_full --executor slurm --slurm_partition gpu ...

For each result (Table 1, Table 2 + Figure 1, Figure 2, Table 3 + Figure 3, Figures 4, 5 and 6; see
`scripts.paper_results`) it builds the config's sweep at the scale's variant (smoke: `smoke`; cpu: the configs'
defaults; paper: `paper`) into ROOT/<result>/ through `scripts.sweep`, so the SLURM path is the sweep's. At the cpu
scale it first fetches the real data a result can use (`python -m scripts.get_data`: MNIST for Figure 6, binarized
MNIST for Figure 4, a text corpus and MR/CR for Table 3, the Hershey fonts for Figure 5) and runs those results on
their config's `real` variant; a result whose data cannot be had runs on its config's default (the 8x8 digits, the
procedural text) and the report says so. `--data default` skips the fetching and runs every default. A run whose
workdir says `done` with the same config is collected as it is, without starting a process; anything else is run,
and an unfinished run resumes from its last checkpoint. Then it writes OUT/REPORT.md: per result the paper's numbers
or claim, ours (read from the workdirs' logs; mean and range over `--seeds`), the claims checked and a verdict,
the data, scale, hardware, wall time and exact commands, and the figures as PNGs (drawn by `scripts.plot`). The
numbers are also written to OUT/results.json, each with the run, metric and reading it came from.

Last comes a section beyond the paper, "RMSNorm on the same tasks" (`--only rms`): each experiment's LN point(s)
beside `norm=rms` at the same variant and seeds, in ROOT/<the paper result>/ next to the LN runs, which it collects
rather than re-runs; its step times come from ROOT/rms/regression.json, which `python -m benchmarks.regression`
writes (timed by this command when the file is missing, except at the smoke scale, where they are not judged).

With `--executor slurm` the unfinished runs are submitted and the report is written from what is done so far (the
rest marked incomplete): run the same command again when the jobs have finished.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

import ml_collections

from experiments import cli_errors
from experiments import data as data_lib
from experiments import workdir as wd
from experiments.flag_spelling import add_flag
from scripts import get_data, plot, sweep
from scripts import paper_results as pr

SCALES = {'smoke': 'smoke', 'cpu': None, 'paper': 'paper'}
SCALE_TEXT = {
  'smoke': "smoke (each config's `smoke` variant: seconds per run, numbers meaningless)",
  'cpu': "cpu (sized for 2 CPU cores: the configs' defaults, and their `real` variant where real data was fetched)",
  'paper': "paper (each config's `paper` variant: the paper's sizes and data)",
}
# config.data.source -> what the report says the data were.
DATA_KINDS = {
  'procedural': "procedural (generated with the task's structure)",
  'digits': "offline real (scikit-learn's 8x8 digits)",
  'hershey': 'offline real (Hershey stroke fonts, rendered as pen trajectories)',
  'idx': 'IDX image files from {dir}',
  'text': 'text files from {dir}',
  # The `real` variants: data `scripts.get_data` fetched (its MANIFEST.json says from where).
  'real:idx': 'real MNIST ({fetched}), 55k/5k/10k',
  'real:amat': 'binarized real MNIST ({fetched}), 50k/10k/10k',
  'real:text': 'real text ({fetched})',
  'tfds': 'paper data (TFDS MNIST)',
  'amat': 'paper data (binarized MNIST, .amat files from {dir})',
  'coco': 'paper data (COCO features and captions from {dir})',
  'iam': 'paper data (IAM-OnDB from {dir})',
  'questions': 'paper data (CNN questions from {dir})',
  'top4': 'paper data (CNN top-4 pickles from {dir})',
}


# --- Running and collecting ----------------------------------------------------------------------------------------


def result_points(
  result: pr.Result, variant: str | None, root: str, seeds: int, python: str, fields: dict | None = None
) -> list[sweep.Point]:
  """The result's runs; `fields` ({'data.dir': '/data/coco'}) are set in every run's config, as sweep's --set."""
  points = sweep.build_points(
    result.config,
    variant,
    os.path.join(root, result.key),
    python=python,
    extra=[f'{k}={sweep.format_value(v)}' for k, v in (fields or {}).items()],
    seeds=seeds,
    more_points=result.controls,
  )
  # A result runs the points its labels name: a config's grid may hold more (`norm=rms` beside `ln`, beyond the paper:
  # the RMSNorm result's runs, not the paper figure's).
  return [p for p in points if point_key(p) in result.labels]


def point_key(point: sweep.Point) -> str:
  """The point's name without the scale's variant and the seed: the key `Result.labels` knows it by."""
  return sweep.workdir_name({k: v for k, v in point.overrides.items() if k != 'seed'})


def expected_config(module, variant: str | None, overrides: dict, extra: dict | None = None) -> dict:
  """The resolved config the point's command builds, as config.json holds it."""
  point_variant, fields = sweep.split_point(module, variant, overrides)
  config = module.get_config() if point_variant is None else module.get_config(point_variant)
  with config.unlocked():
    for key, value in {**fields, **(extra or {})}.items():
      *parents, leaf = key.split('.')
      node = config
      for part in parents:
        node = node[part]
      node[leaf] = value
  return json.loads(ml_collections.ConfigDict(config).to_json(sort_keys=True))


def is_done(point: sweep.Point, module, variant: str | None, extra: dict | None = None) -> bool:
  """True when the workdir finished this very config: collected without starting a process."""
  path = point.workdir
  try:
    status, saved = wd.read_status(path), wd.read_saved_config(path)
  except wd.WorkdirError:
    return False
  if not status or status.get('status') != 'done' or saved is None:
    return False
  return not wd.config_differences(saved, expected_config(module, variant, point.overrides, extra))


def in_flight(point: sweep.Point) -> bool:
  """True while another process trains in the point's workdir (it holds the workdir's lock): not launched again."""
  path = point.workdir
  if not os.path.isfile(os.path.join(path, wd.LOCK_FILE)):
    return False
  try:
    wd.lock(path).close()
  except wd.WorkdirError:
    return True
  return False


def fetched_sets(results: Sequence[pr.Result], fetch: bool) -> dict[str, str | None]:
  """{data set: None if it is there, else why not} for every set the results read; fetched first when `fetch`."""
  names = list(dict.fromkeys(name for r in results for name in r.data))
  if not names:
    return {}
  if not fetch:  # --dry_run: what is there already.
    return {
      name: None if os.path.isfile(manifest := os.path.join(data_lib.home(name), get_data.MANIFEST)) else
      f'not fetched yet (no {manifest})'
      for name in names
    }  # fmt: skip
  print(f'Fetching the real data: python -m scripts.get_data {" ".join(names)}', flush=True)
  lines: list[str] = []

  def out(line: str) -> None:
    lines.append(line)
    print(f'  {line}', flush=True)

  fetcher = get_data.Fetcher(data_lib.data_home(), get_data.Clients(), out=out)
  why = {}
  for name in names:
    del lines[:]
    try:
      had = fetcher.get(name)
    except OSError as e:
      had, lines[:] = False, [f'cannot write under {data_lib.data_home()}: {e.strerror or e}']
    why[name] = None if had else '; '.join(line for line in lines if 'not to be had' in line or 'cannot' in line)
  return why


def fetched_from(directory: str | None) -> str | None:
  """Where `scripts.get_data` got the files in `directory` (its MANIFEST.json), or None if it did not write them."""
  if not directory:
    return None
  try:
    manifest = wd.read_json(os.path.join(os.path.expanduser(directory), get_data.MANIFEST))
  except wd.WorkdirError:
    return None
  if not isinstance(manifest, dict) or not manifest:
    return None
  return '; '.join(f'{part}: {record.get("source", "?")}' for part, record in sorted(manifest.items()))


def result_variant(result: pr.Result, scale: str, missing: dict[str, str | None]) -> tuple[str | None, str | None]:
  """(the variant the result runs at, why it is not on real data or None)."""
  if scale != 'cpu' or not result.real_variant:
    return SCALES[scale], None
  first = result.data[0]
  if first not in missing:
    return SCALES[scale], 'real data not fetched (--data default)'
  if missing[first] is not None:
    return SCALES[scale], f'real data could not be had ({missing[first]})'
  return 'real', None


def run_seconds(path: str) -> float | None:
  """First start to last status of a run: TensorBoard's event files are named by their creation time."""
  try:
    starts = [int(m.group(1)) for f in os.listdir(path) if (m := re.match(r'events\.out\.tfevents\.(\d+)\.', f))]
    status = wd.read_status(path) or {}
  except (OSError, wd.WorkdirError):
    return None
  if not starts or 'updated' not in status:
    return None
  return datetime.datetime.fromisoformat(status['updated']).timestamp() - min(starts)


def run_table1(result: pr.Result, root: str, python: str) -> dict:
  """Table 1 has no runs: its command is run once, its output kept under ROOT/table1/."""
  out_dir = os.path.join(root, result.key)
  record_path = os.path.join(out_dir, 'table1.json')
  record = wd.read_json(record_path)
  if record is not None:
    print(f'  collected {record_path}', flush=True)
    return record
  os.makedirs(out_dir, exist_ok=True)
  argv = [python, '-m', *result.command]
  print(f'  running {shlex.join(["python", "-m", *result.command])}', flush=True)
  start = time.monotonic()
  done = subprocess.run(argv, capture_output=True, text=True, check=False)
  record = {
    'command': shlex.join(['python', '-m', *result.command]),
    'returncode': done.returncode,
    'seconds': time.monotonic() - start,
    'table': done.stdout.strip(),
    'stderr': done.stderr.strip()[-2000:],
  }
  if done.returncode in (0, 1):  # 1: a cell disagrees, which is a result; anything else failed to run.
    wd.write_json(record_path, record)
  return record


def collect(points: Sequence[sweep.Point]) -> tuple[pr.Groups, list[str]]:
  """Each point's finished runs, grouped by point key; and the workdirs that are missing or unreadable."""
  groups: pr.Groups = {}
  missing = []
  for point in points:
    path = point.workdir
    try:
      run = plot.load_run(path)
    except ValueError:
      missing.append(path)
      continue
    groups.setdefault(point_key(point), []).append(run)
  return groups, missing


# --- The report ----------------------------------------------------------------------------------------------------


def hardware() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    model = names[0] if names else model
  except OSError:
    pass
  return f'{model}, {os.cpu_count()} cores, {platform.system()} (the machine that ran this command)'


def data_kind(groups: pr.Groups) -> str:
  kinds = set()
  for runs in groups.values():
    for run in runs:
      config = wd.read_saved_config(run.path) or {}
      data = config.get('data', {})
      source = data.get('source', '?')
      fetched = fetched_from(data.get('dir'))
      kind = DATA_KINDS.get(f'real:{source}') if fetched else None
      kind = kind or DATA_KINDS.get(source, f'source={source} from {{dir}}')
      kinds.add(kind.format(dir=data.get('dir'), fetched=fetched) + downstream_data(run.path, config))
  return '; '.join(sorted(kinds)) or '-'


def downstream_data(path: str, config: dict) -> str:
  """', downstream: MR, CR real (...); SICK procedural' from the run's task.json, for skip-thoughts; else ''."""
  try:
    sources = (wd.read_task_metadata(path) or {}).get('downstream_sources') or {}
  except wd.WorkdirError:
    return ''
  if not sources:
    return ''
  real = [t.upper() for t, s in sources.items() if s == 'real']
  made = [t.upper() for t, s in sources.items() if s != 'real']
  eval_dir = (config.get('eval') or {}).get('dir')
  parts = [f'{", ".join(real)} real ({fetched_from(eval_dir) or f"files in {eval_dir}"})'] if real else []
  parts += [f'{", ".join(made)} procedural'] if made else []
  return '; downstream tasks: ' + ', '.join(parts)


def minutes(seconds: float | None) -> str:
  if seconds is None:
    return '-'
  return f'{seconds:.0f} s' if seconds < 120 else f'{seconds / 60:.1f} min'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines)


def draw_figures(result: pr.Result, groups: pr.Groups, out: str, keys_order: Sequence[str]) -> list[dict]:
  """Each of the result's figures as a PNG in `out`; a figure that cannot be drawn says why instead."""
  drawn = []
  for figure in result.figures:
    keys = [k for k in (figure.keys or keys_order) if k in groups]
    paths = [run.path for k in keys for run in groups[k]]
    entry = {'title': figure.title, 'file': figure.filename, 'layout': figure.layout, 'error': None}
    entry['command'] = shlex.join(
      ['python', '-m', 'scripts.plot', *paths, '--layout', figure.layout, '--out', os.path.join(out, figure.filename)]
    )
    try:
      if not paths:
        raise ValueError('no finished runs to draw')
      plot.make_figure(paths, layout=figure.layout).savefig(os.path.join(out, figure.filename), dpi=110)
    except ValueError as e:
      entry['error'] = str(e)
    drawn.append(entry)
  return drawn


def judge(
  result: pr.Result,
  points: Sequence[sweep.Point],
  seeds: int,
  failed: Sequence[str],
  more_claims: Sequence[tuple[str, pr.Outcome]] = (),
) -> dict:
  """Reads the result's runs and checks its claims (and `more_claims`, judged already): the report's numbers, as a
  JSON-able dict."""
  groups, missing = collect(points)
  keys = list(dict.fromkeys(point_key(p) for p in points))
  table = {}
  for key in keys:
    row = {}
    for measure in result.measures:
      stat = result.stat(groups, key, measure)
      row[measure.label] = {
        'text': stat.text(measure.digits),
        'mean': stat.mean,
        'spread': stat.spread,
        'readings': [vars(r) for r in stat.readings],
      }
    table[result.label(key)] = row
  texts = [c.text for c in result.claims] + [text for text, _ in more_claims]
  outcomes = [claim.check(result, groups) for claim in result.claims] + [o for _, o in more_claims]
  word, why = pr.verdict(outcomes, seeds)
  seconds = [run_seconds(p.workdir) for p in points]
  return {
    'groups': groups,
    'keys': keys,
    'table': table,
    'claims': [{'text': t, 'holds': o.holds, 'detail': o.detail} for t, o in zip(texts, outcomes, strict=True)],
    'verdict': word,
    'why': why,
    'missing': missing,
    'failed': list(failed),
    'wall_seconds': sum(s for s in seconds if s is not None) if any(s is not None for s in seconds) else None,
    'runs': len(points),
  }


def table1_section(result: pr.Result, record: dict) -> tuple[dict, str]:
  agree = re.search(r'(\d+) of (\d+) cells agree', record.get('table', ''))
  if record['returncode'] not in (0, 1) or not agree:
    word, why = 'incomplete', f'the command failed (exit {record["returncode"]}): {record.get("stderr", "")[-300:]}'
  else:
    n, total = int(agree.group(1)), int(agree.group(2))
    word = 'reproduced' if n == total else ('partly' if n else 'not reproduced')
    why = f"{n} of {total} cells agree with the paper's Table 1"
  summary = {'verdict': word, 'why': why, 'wall_seconds': record.get('seconds'), 'runs': 0, 'data': 'random layers'}
  text = '\n\n'.join(
    [
      f'## {result.title}',
      f'**Verdict: {word}** ({why}).',
      f'**The paper.** {result.paper}',
      f'**Ours** (measured by `{record["command"]}`):\n\n{record.get("table", "")}',
      f'Wall time: {minutes(record.get("seconds"))}.',
    ]
  )
  return summary, text


def result_section(
  result: pr.Result,
  judged: dict,
  figures: list[dict],
  points: Sequence[sweep.Point],
  args: argparse.Namespace,
  seeds: int,
  variant: str | None,
) -> str:
  parts = [f'## {result.title}', f'**Verdict: {judged["verdict"]}** ({judged["why"]}).']
  claim_rows = [
    [c['text'], {True: 'yes', False: 'no', None: 'incomplete'}[c['holds']], c['detail']] for c in judged['claims']
  ]
  parts.append(markdown_table(['claim', 'holds', 'ours'], claim_rows))
  parts.append(f'**The paper.** {result.paper}')
  header = ['run'] + [m.label for m in result.measures]
  rows = [
    [f'paper: {label}'] + [pr.fmt(v, m.digits) for v, m in zip(values, result.measures, strict=True)]
    for label, values in result.paper_rows.items()
  ]
  rows += [[label] + [row[m.label]['text'] for m in result.measures] for label, row in judged['table'].items()]
  spread_note = f'mean over {seeds} seeds, (lowest to highest seed) in brackets' if seeds > 1 else 'one seed'
  paper_note = "; the paper's rows, on its data and scale, first" if result.paper_rows else ''
  parts.append(f'**Ours** ({spread_note}{paper_note}):\n\n' + markdown_table(header, rows))
  problems = []
  if judged['missing']:
    problems.append(
      f'{len(judged["missing"])} of {judged["runs"]} runs have no logs yet: ' + ', '.join(judged['missing']) + '.'
    )
  if judged['failed']:
    problems.append('Failed (see ROOT/<result>/logs/<run>.log): ' + ', '.join(judged['failed']) + '.')
  if problems:
    parts.append('**Incomplete.** ' + ' '.join(problems))
  scale = SCALE_TEXT[args.scale] + (f"; the configs' `{variant}` variant" if variant != SCALES[args.scale] else '')
  parts.append(
    f'Data: {judged["data"]}. Scale: {scale}. Seeds: {seeds}. '
    f"Hardware: {hardware()}. Wall time: {minutes(judged['wall_seconds'])} over {judged['runs']} runs (each run's "
    'first start to its last status).'
  )
  for figure in figures:
    if figure['error']:
      parts.append(f'*{figure["title"]}: not drawn ({figure["error"]}).*')
    else:
      parts.append(f'![{figure["title"]}]({figure["file"]})\n\n*{figure["title"]}.*')
  sweep_cmd = ['python', '-m', 'scripts.sweep', result.config, '--root', os.path.join(args.root, result.key)]
  sweep_cmd += ['--variant', variant] if variant else []
  sweep_cmd += ['--seeds', str(seeds)] if seeds > 1 else []
  commands = [shlex.join(sweep_cmd) + '   # the grid, or one run per line:']
  commands += [shlex.join(['python', *p.argv[1:]]) for p in points]
  commands += [f['command'] for f in figures]
  parts.append('Commands:\n\n```\n' + '\n'.join(commands) + '\n```')
  return '\n\n'.join(parts)


def summary_table(summaries: dict[str, dict], titles: dict[str, str]) -> str:
  rows = [
    [
      titles[key],
      f'**{s["verdict"]}**',
      s['why'],
      s.get('data', '-'),
      str(s['runs']),
      str(s.get('seeds', '-')),
      minutes(s['wall_seconds']),
    ]
    for key, s in summaries.items()
  ]
  return markdown_table(['result', 'verdict', 'why', 'data', 'runs', 'seeds', 'wall time'], rows)


def total_line(summaries: dict[str, dict]) -> str:
  runs = sum(s['runs'] for s in summaries.values())
  seconds = sum(s['wall_seconds'] or 0 for s in summaries.values())
  return (
    f'{runs} runs; their wall times add up to {seconds / 3600:.1f} h (runs launched side by side with --jobs take '
    'less time from start to end).'
  )


def git_commit(out: str = '') -> str:
  """HEAD's short hash, '(with uncommitted changes)' if tracked files differ; the report's own files (`out`) aside,
  since a regenerated report always differs from the committed one while it is written."""
  exclude = [f':(exclude){os.path.relpath(out)}'] if out and not os.path.relpath(out).startswith('..') else []
  try:
    done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=False)
    status = ['git', 'status', '--porcelain', '--untracked-files=no', '--', '.', *exclude]
    dirty = subprocess.run(status, capture_output=True, text=True, check=False)
  except OSError:
    return 'unknown'
  return done.stdout.strip() + (' (with uncommitted changes)' if dirty.stdout.strip() else '') or 'unknown'


# --- The command ---------------------------------------------------------------------------------------------------


def run_pending(
  result: pr.Result, points: Sequence[sweep.Point], variant: str | None, args: argparse.Namespace, heading: str
) -> list[str]:
  """Launches the result's points that are neither done nor running elsewhere (--dry_run: prints them); the names
  of those that did not finish. Raises sweep.LaunchError when the executor cannot start."""
  module = sweep.load_config_module(result.config)
  extra = args.fields_of.get(result.key)
  pending = [p for p in points if not is_done(p, module, variant, extra)]
  running = [p for p in pending if in_flight(p)]
  pending = [p for p in pending if p not in running]
  elsewhere = f', {len(running)} running in another process (collected as far as they got)' if running else ''
  print(
    f'{heading}: {len(points) - len(pending) - len(running)} of {len(points)} runs done, {len(pending)} to run'
    f'{elsewhere}',
    flush=True,
  )
  if args.dry_run:
    for point in pending:
      print('  ' + shlex.join(['python', *point.argv[1:]]))
    return []
  failed = []
  if pending:
    sweep.launch(pending, os.path.join(args.root, result.key), args, result.key)
    if args.executor != 'slurm':
      failed = [p.name for p in pending if not is_done(p, module, variant, extra)]
  if running:
    failed += [f'{p.name} (still running)' for p in running]
  return failed


# --- A result beyond the paper, over several experiments -------------------------------------------------------------


def speed_command(result: pr.Result, path: str) -> list[str]:
  rows = list(dict.fromkeys(row for part in result.parts for _, *pair in part.speed for row in pair))
  return ['python', '-m', 'benchmarks.regression', '--rows', ','.join(rows), '--json', path]


def timed_when(written: dict) -> str:
  """'timed 2026-12-05 16:20 UTC, 1-min load 0.15 to 1.69, by `python -m benchmarks.regression --check ...`; ' from
  the table's own record of its run (the file may come from a full regression run rather than the report's command);
  '' where the file does not say."""
  env, flags = written.get('environment') or {}, written.get('args') or {}
  if not isinstance(env, dict) or not isinstance(flags, dict) or not env.get('date'):
    return ''
  try:
    when = datetime.datetime.fromisoformat(env['date']).astimezone(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')
  except (TypeError, ValueError):
    return ''
  loads = [env.get(k) for k in ('loadavg_start', 'loadavg_end')]
  load = [f'{v[0]:.2f}' for v in loads if isinstance(v, list) and v and isinstance(v[0], int | float)]
  shown = ('quick', 'check', 'rows', 'write_baseline', 'repeats')
  given = [f'--{k}' if v is True else f'--{k} {v}' for k, v in flags.items() if k in shown and v not in (None, False)]
  return (
    f'timed {when}'
    + (f', 1-min load {" to ".join(load)}' if load else '')
    + f', by `{" ".join(["python -m benchmarks.regression", *given])}`; '
  )


def speed_table(result: pr.Result, args: argparse.Namespace) -> tuple[dict | None, str, str]:
  """benchmarks.regression's rows by name, from ROOT/<result>/regression.json, timed now (except at the smoke scale)
  when the file is not there; a sentence saying where they came from or why there are none; and why in brief."""
  path = os.path.join(args.root, result.key, 'regression.json')
  command = speed_command(result, path)
  if not os.path.isfile(path) and args.scale != 'smoke':
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f'  timing the training steps: {shlex.join(command)}', flush=True)
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not os.path.isfile(path):
      why = f'`{shlex.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-300:]}'
      return None, why, 'the timing failed (see above)'
  if not os.path.isfile(path):
    why = f'not timed at the smoke scale (`{shlex.join(command)}` writes the table the cpu scale reads)'
    return None, why, 'not timed at the smoke scale'
  try:
    written = wd.read_json(path) or {}
    table = {row['row']: row for row in written.get('rows', [])}
  except (wd.WorkdirError, AttributeError, TypeError, KeyError) as e:
    return None, f'{path} is not a benchmarks.regression table ({e}); delete it to time again', 'no table (see above)'
  note = f'from `{path}` ({timed_when(written)}the CPU-scale configs, loop ms per step; delete the file to time again)'
  return table, note, ''  # With a table, a missing row says so itself.


def parts_section(
  result: pr.Result,
  plans: dict[str, list[sweep.Point]],
  failed: dict[str, list[str]],
  table: dict | None,
  table_note: str,
  missing_note: str,
  args: argparse.Namespace,
  variants: dict[str, str | None],
) -> tuple[dict, str, dict]:
  """(summary row, Markdown section, results.json entry) of a result made of parts: one subsection per part."""
  outcomes, texts, record = [], [], {}
  for part in result.parts:
    seeds = seeds_for(args, part)
    speed = [(text, pr.step_time(table, a, b, missing_note)) for text, a, b in part.speed]
    judged = judge(part, plans[part.key], seeds, failed[part.key], speed)
    judged['data'] = data_kind(judged['groups'])
    own = [p for p in plans[part.key] if p.overrides.get('norm') == 'rms']
    seconds = [s for p in own if (s := run_seconds(p.workdir)) is not None]
    judged['own'] = {'runs': len(own), 'wall_seconds': sum(seconds) if seconds else None}
    outcomes += [pr.Outcome(c['holds'], c['detail']) for c in judged['claims']]
    texts.append(part_section(part, judged, plans[part.key], args, seeds, variants[part.key]))
    record[part.key] = {k: judged[k] for k in ('verdict', 'why', 'table', 'claims', 'missing', 'failed', 'own')}
  seeds = sorted({seeds_for(args, part) for part in result.parts})
  word, why = pr.verdict(outcomes, seeds[0])
  runs = sum(r['own']['runs'] for r in record.values())
  walls = [r['own']['wall_seconds'] for r in record.values() if r['own']['wall_seconds'] is not None]
  summary = {
    'verdict': word,
    'why': why,
    'wall_seconds': sum(walls) if walls else None,
    'runs': runs,
    'data': "each experiment's, as in its section above",
    'seeds': f'{seeds[0]}-{seeds[-1]}' if len(seeds) > 1 else seeds[0],
  }
  text = '\n\n'.join(
    [
      f'## {result.title}',
      f'**Verdict: {word}** ({why}; the runs and wall time in the summary are the RMS runs this section adds).',
      f'**What is compared.** {result.paper} Step times: {table_note}.',
      *texts,
    ]
  )
  return summary, text, {'verdict': word, 'why': why, 'parts': record, 'runs': runs}


def part_section(
  part: pr.Result,
  judged: dict,
  points: Sequence[sweep.Point],
  args: argparse.Namespace,
  seeds: int,
  variant: str | None,
) -> str:
  """One experiment's subsection of a result made of parts: its claims, numbers, data and commands."""
  claim_rows = [
    [c['text'], {True: 'yes', False: 'no', None: 'incomplete'}[c['holds']], c['detail']] for c in judged['claims']
  ]
  rows = [[label] + [row[m.label]['text'] for m in part.measures] for label, row in judged['table'].items()]
  spread_note = f'mean over {seeds} seeds, (lowest to highest seed) in brackets' if seeds > 1 else 'one seed'
  parts = [
    f'### {part.title}',
    markdown_table(['claim', 'holds', 'ours'], claim_rows),
    f'**Ours** ({spread_note}):\n\n' + markdown_table(['run'] + [m.label for m in part.measures], rows),
  ]
  problems = []
  if judged['missing']:
    problems.append(
      f'{len(judged["missing"])} of {judged["runs"]} runs have no logs yet: ' + ', '.join(judged['missing'])
    )
  if judged['failed']:
    problems.append(f'Failed (see ROOT/{part.key}/logs/<run>.log): ' + ', '.join(judged['failed']))
  if problems:
    parts.append('**Incomplete.** ' + '. '.join(problems) + '.')
  scale = SCALE_TEXT[args.scale] + (f"; the configs' `{variant}` variant" if variant != SCALES[args.scale] else '')
  parts.append(
    f'Data: {judged["data"]}. Scale: {scale}. Seeds: {seeds}. Wall time of the RMS runs: '
    f'{minutes(judged["own"]["wall_seconds"])} over {judged["own"]["runs"]} runs.'
  )
  commands = [shlex.join(['python', *p.argv[1:]]) for p in points]
  parts.append('Commands (the LN runs are those of the paper result above):\n\n```\n' + '\n'.join(commands) + '\n```')
  return '\n\n'.join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli_errors.ArgumentParser(
    prog='python -m scripts.reproduce',
    description=__doc__.split('\n')[0],
    formatter_class=argparse.RawTextHelpFormatter,
  )
  parser.add_argument('--scale', choices=tuple(SCALES), required=True, help='smoke | cpu | paper (see above)')
  parser.add_argument('--root', required=True, help='directory of the runs: ROOT/<result>/<run>')
  parser.add_argument('--out', default='report', help='directory for REPORT.md, results.json and the PNGs')
  parser.add_argument('--only', help='comma-separated results, e.g. fig6,table2 (aliases: fig1, fig3, mnist, ...)')
  parser.add_argument(
    '--seeds',
    default='1',
    help='runs per point (config.seed 0..N-1), default 1; per result too: 1,fig4=3,fig6=3 (3 seeds where cheap)',
  )
  parser.add_argument(
    '--set',
    dest='sets',
    action='append',
    default=[],
    metavar='RESULT:FIELD=VALUE',
    help='a config field for every run of one result (repeatable), e.g. fig4:data.dir=/data/binarized_mnist',
  )
  parser.add_argument(
    '--data',
    choices=('real', 'default'),
    default='real',
    help='cpu scale: real (default) fetches the real data first and runs Figures 4 and 6 and Table 3 on it; '
    "default runs every config's default (8x8 digits, procedural text) and fetches nothing",
  )
  add_flag(parser, '--dry_run', action='store_true', help='print what would run and what is done; run nothing')
  sweep.add_launch_arguments(parser)
  args = parser.parse_args(argv)
  try:
    args.seeds_of = parse_seeds(args.seeds)
  except ValueError as e:
    parser.error(str(e))
  if args.jobs < 1:
    parser.error(f'--jobs must be at least 1, got {args.jobs}.')
  try:
    args.fields_of = parse_sets(args.sets)
  except ValueError as e:
    parser.error(str(e))
  for flag, path in (('--root', args.root), ('--out', args.out)):
    if os.path.exists(path) and not os.path.isdir(path):
      parser.error(f'{flag} {path} is a file; give a directory (it is created if missing).')
  return args


def parse_seeds(text: str) -> dict[str, int]:
  """'3' -> {'*': 3}; '1,fig4=3' -> {'*': 1, 'fig4': 3} (keys or aliases of results)."""
  seeds = {'*': 1}
  names = {name: r.key for r in pr.RESULTS for name in (r.key, *r.aliases)}
  for item in filter(None, (t.strip() for t in text.split(','))):
    name, has_name, count = item.rpartition('=')
    if has_name and name not in names:
      raise ValueError(f'--seeds {text!r}: unknown result {name!r}; results: {", ".join(r.key for r in pr.RESULTS)}.')
    try:
      n = int(count)
    except ValueError:
      n = 0
    if n < 1:
      raise ValueError(f'--seeds {text!r}: {item!r} needs a whole number of seeds of at least 1, e.g. 3 or fig4=3.')
    seeds[names[name] if has_name else '*'] = n
  return seeds


def parse_sets(items: Sequence[str]) -> dict[str, dict]:
  """['fig4:data.dir=/d'] -> {'fig4': {'data.dir': '/d'}}; values as Python literals where they parse, else text."""
  names = {name: r.key for r in pr.RESULTS for name in (r.key, *r.aliases)}
  fields: dict[str, dict] = {}
  for item in items:
    name, colon, assignment = item.partition(':')
    field, equals, text = assignment.partition('=')
    if not colon or not equals or not field or name not in names:
      raise ValueError(
        f'--set {item!r}: expected RESULT:FIELD=VALUE with RESULT one of {", ".join(r.key for r in pr.RESULTS)}, '
        'e.g. --set fig4:data.dir=/data/binarized_mnist.'
      )
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    fields.setdefault(names[name], {})[field] = value
  return fields


def seeds_for(args: argparse.Namespace, result: pr.Result) -> int:
  return args.seeds_of.get(result.key, args.seeds_of['*'])


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  start = time.monotonic()
  try:
    results = pr.select(args.only.split(',') if args.only else None)
  except ValueError as e:
    return cli_errors.fail(e, str(e), cli_errors.EXIT_CONFIG)
  real = args.scale == 'cpu' and args.data == 'real'
  missing = fetched_sets(results, fetch=not args.dry_run) if real else {}
  variants, not_real = {}, {}
  for r in results:
    variants[r.key], not_real[r.key] = result_variant(r, args.scale, missing)
    if not_real[r.key] and args.data == 'real':
      print(f'{r.title}: runs on its default data: {not_real[r.key]}', flush=True)
  for part in (part for r in results for part in r.parts):  # A part shares its paper result's data and variant.
    variants[part.key], not_real[part.key] = result_variant(part, args.scale, missing)

  def plan(r: pr.Result) -> list[sweep.Point]:
    fields = args.fields_of.get(r.key)
    return (
      []
      if r.config is None
      else result_points(r, variants[r.key], args.root, seeds_for(args, r), sys.executable, fields)
    )

  try:
    plans = {r.key: plan(r) for r in results}
    part_plans = {r.key: {part.key: plan(part) for part in r.parts} for r in results}
  except ValueError as e:
    return cli_errors.fail(e, str(e), cli_errors.EXIT_CONFIG)
  if not args.dry_run:
    os.makedirs(args.out, exist_ok=True)
  sections, summaries, numbers = [], {}, {}
  for i, result in enumerate(results, 1):
    points = plans[result.key]
    if result.parts:
      judged_parts = {}
      for part in result.parts:
        heading = f'[{i}/{len(results)}] {result.title}, {part.title}'
        try:
          failed = run_pending(part, part_plans[result.key][part.key], variants[part.key], args, heading)
        except sweep.LaunchError as e:
          return cli_errors.fail(e, str(e), cli_errors.EXIT_CONFIG)
        if not args.dry_run:
          judged_parts[part.key] = failed
      if args.dry_run:
        continue
      table, table_note, missing_note = speed_table(result, args)
      summary, text, record = parts_section(
        result, part_plans[result.key], judged_parts, table, table_note, missing_note, args, variants
      )
      summaries[result.key], numbers[result.key] = summary, record
      sections.append(text)
      continue
    if result.config is None:
      print(f'[{i}/{len(results)}] {result.title}', flush=True)
      if args.dry_run:
        continue
      summary, text = table1_section(result, run_table1(result, args.root, sys.executable))
      summaries[result.key], numbers[result.key] = summary, {'verdict': summary['verdict'], 'why': summary['why']}
      sections.append(text)
      continue
    variant = variants[result.key]
    try:
      failed = run_pending(result, points, variant, args, f'[{i}/{len(results)}] {result.title}')
    except sweep.LaunchError as e:
      return cli_errors.fail(e, str(e), cli_errors.EXIT_CONFIG)
    if args.dry_run:
      continue
    judged = judge(result, points, seeds_for(args, result), failed)
    figures = draw_figures(result, judged['groups'], args.out, judged['keys'])
    judged['data'] = data_kind(judged['groups'])
    if not_real[result.key] and real:
      judged['data'] += f' ({not_real[result.key]})'
    sections.append(result_section(result, judged, figures, points, args, seeds_for(args, result), variant))
    summaries[result.key] = {k: judged[k] for k in ('verdict', 'why', 'wall_seconds', 'runs', 'data')}
    summaries[result.key]['seeds'] = seeds_for(args, result)
    numbers[result.key] = {
      k: judged[k] for k in ('verdict', 'why', 'table', 'claims', 'missing', 'failed', 'wall_seconds', 'runs')
    }
    numbers[result.key]['figures'] = figures
  if args.dry_run:
    return 0
  titles = {r.key: r.title for r in results}
  command = shlex.join(['python', '-m', 'scripts.reproduce', *(sys.argv[1:] if argv is None else argv)])
  header = [
    '# Layer Normalization (Ba, Kiros, Hinton 2016): the paper reproduced',
    f'Written by `{command}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC '
    f'at commit {git_commit(args.out)}; '
    f'scale {SCALE_TEXT[args.scale]}; seeds per run: {args.seeds}; hardware {hardware()}. Every number below is '
    f"read from the runs' logs under `{args.root}` (also in `results.json`, with the run and metric each came from).",
    'A claim "A beats B" holds when their means over seeds differ by more than the spread between seeds (with one '
    'seed, the direction alone decides, and the verdict says so).',
    summary_table(summaries, titles),
    total_line(summaries),
  ]
  report = '\n\n'.join(header + sections) + '\n'
  wd.atomic_write(os.path.join(args.out, 'REPORT.md'), report)
  wd.write_json(os.path.join(args.out, 'results.json'), numbers)
  counts = {}
  for s in summaries.values():
    counts[s['verdict']] = counts.get(s['verdict'], 0) + 1
  tally = ', '.join(f'{n} {word}' for word, n in counts.items())
  print(f'Wrote {os.path.join(args.out, "REPORT.md")} ({tally}) in {minutes(time.monotonic() - start)}.', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
