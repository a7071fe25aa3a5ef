"""Launches the grid a config declares in its `sweep(add)`: one experiment run, with its own workdir, per point.

  python -m scripts.sweep configs/mnist.py --variant smoke --root runs/fig6 --dry_run      # print the commands
  python -m scripts.sweep configs/mnist.py --root runs/fig6 --jobs 2                       # local process pool
  python -m scripts.sweep configs/mnist.py --root runs/fig6 --seeds 3                      # each point 3 times
  python -m scripts.sweep configs/mnist.py --root runs/fig6 --executor slurm --slurm_partition gpu --gpus_per_node 1

The config file's `sweep(add)` calls `add(**overrides)` once per point (big_vision's convention). A key that the
config's `get_config` accepts as a variant (`add(norm='ln', batch_size=4)` for `configs/mnist.py:norm=ln,batch_size=4`)
is passed as one, so whatever the variant derives from it is set too (at batch size 4, BN's unbiased variance); any
other key is a config field, dotted for nested fields (`add(**{'optimizer.learning_rate': 1e-3})`). Each point runs

  python -m experiments.<config file name> --config CONFIG[:VARIANTS] --config.<field>=<value>... --workdir ROOT/<name>

where <name> is the --variant and the overrides as `key=value`, joined by commas (`norm=ln,batch_size=4`, or
`smoke,norm=ln,batch_size=4` with --variant smoke), which scripts.plot reads back as labels: sweeps of different
variants into one root never share a workdir. Each point's output is appended to ROOT/logs/<name>.log.
Before the first launch every point's config is checked as its experiment's command line checks it (a bad --set
is one Error: line, and nothing runs). Ctrl-C starts no further point; the running ones stop at a checkpoint, and
the line printed says what to re-run. Re-running a sweep re-runs every point; each run resumes from its workdir's
last checkpoint, so finished points end at once. On SLURM the points form one submitit job array; a preempted or
timed-out job is requeued (submitit checkpointing) and, by the same resume, continues where it stopped.
"""

import argparse
import concurrent.futures
import dataclasses
import importlib
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import submitit

from experiments import cli_errors
from experiments.flag_spelling import add_flag

EXECUTORS = ('local', 'slurm', 'submitit-local')


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep."""

  name: str  # The workdir's name under the root.
  overrides: dict[str, Any]
  argv: list[str]  # The command that runs it.
  workdir: str  # ROOT/<name>, as the command's --workdir.


def load_config_module(path: str):
  """Imports a config file by path (it need not be importable as a module name)."""
  if not os.path.isfile(path):
    raise ValueError(f'Config file {path} not found.')
  name = '_sweep_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def collect_points(module, path: str) -> list[dict[str, Any]]:
  """The overrides that the config's `sweep(add)` adds, in order."""
  if not callable(getattr(module, 'sweep', None)):
    raise ValueError(f'{path} defines no sweep(add): add one that calls add(**overrides) per point of the grid.')
  points = []
  module.sweep(lambda **overrides: points.append(overrides))
  if not points:
    raise ValueError(f"{path}'s sweep(add) added no points.")
  return points


def join_variants(*variants: str | None) -> str | None:
  """'smoke' + 'norm=ln' -> 'smoke,norm=ln'; None when there is none."""
  return ','.join(v for v in variants if v) or None


def split_point(module, variant: str | None, overrides: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
  """Splits a point into the variants `get_config` accepts (joined after `variant`) and plain field overrides."""
  get_config = getattr(module, 'get_config', None)
  variants, fields = [], {}
  for key, value in overrides.items():
    candidate = f'{key}={format_value(value)}'
    try:
      if get_config is None or '.' in key:
        raise ValueError
      get_config(join_variants(variant, *variants, candidate))
    except ValueError:  # Not a variant of this config (or not a valid value for one): a config field.
      fields[key] = value
    else:
      variants.append(candidate)
  return join_variants(variant, *variants), fields


def check_keys(module, path: str, variant: str | None, points: list[dict[str, Any]]) -> None:
  """Fails fast on a misspelled override, before anything is launched, by looking each field up in the config."""
  get_config = getattr(module, 'get_config', None)
  if get_config is None:
    return
  for point in points:
    point_variant, overrides = split_point(module, variant, point)
    config = get_config() if point_variant is None else get_config(point_variant)
    for key in overrides:
      node = config
      for i, part in enumerate(key.split('.')):
        try:
          node = node[part]
        except (KeyError, TypeError, AttributeError):
          where = '.'.join(key.split('.')[:i]) or 'the config'
          known = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else 'none (not a section)'
          raise ValueError(
            f'{path}: sweep point {point} overrides {key!r}, which is no variant of get_config, and {where} has no '
            f'field {part!r} (fields: {known}).'
          ) from None


def format_value(value: Any) -> str:
  """A value as ml_collections' config flags parse it: strings as they are, everything else as a literal."""
  return value if isinstance(value, str) else repr(value)


def workdir_name(overrides: dict[str, Any], variant: str | None = None) -> str:
  """`{'norm': 'ln', 'batch_size': 4}`, 'smoke' -> 'smoke,norm=ln,batch_size=4'; separators and blanks become '_'.

  The variant is part of the name (first, as in `--config CONFIG:smoke,norm=ln`): a smoke sweep and the full grid
  into one root would otherwise share every workdir, and the second would fail on each point as a config mismatch.
  """
  parts = ([variant] if variant else []) + [f'{k}={format_value(v)}' for k, v in overrides.items()]
  if not parts:
    return 'default'
  name = ','.join(parts)
  return ''.join('_' if c in '/\\' or c.isspace() else c for c in name)


def build_points(
  config_path: str,
  variant: str | None,
  root: str,
  module: str | None = None,
  python: str = sys.executable,
  extra: Sequence[str] = (),
  seeds: int = 1,
  more_points: Sequence[dict[str, Any]] = (),
) -> list[Point]:
  """Reads the config's sweep and turns each point into its command line.

  Args:
    config_path: the config file, e.g. configs/mnist.py.
    variant: passed as `--config CONFIG:VARIANT` (and to `get_config` when checking the keys).
    root: the sweep's root directory; each point's workdir is ROOT/<workdir_name(overrides, variant)>.
    module: the experiment module to run; None: experiments.<config file name>.
    python: the interpreter that runs the points.
    extra: `field=value` overrides given to every point (e.g. `data.dir=/usr/share/datasets/fashion-mnist`).
    seeds: runs per point, with `config.seed` 0, 1, ..., seeds - 1. Seed 0 (the configs' default) keeps the point's
      name, so a sweep re-run with more seeds adds runs beside the ones it has; seed k > 0 appends `,seed=k`.
    more_points: overrides of points to run beside the config's grid (e.g. a control run), named the same way; one
      the grid already has is not repeated.

  Returns:
    The points, in the order `sweep(add)` added them (then `more_points`), each point's seeds in a row.
  """
  if seeds < 1:
    raise ValueError(f'seeds must be at least 1, got {seeds}.')
  config_module = load_config_module(config_path)
  grid = collect_points(config_module, config_path)
  grid += [dict(p) for p in more_points if dict(p) not in grid]  # A control the grid already has runs once.
  all_overrides = [p if seed == 0 else {**p, 'seed': seed} for p in grid for seed in range(seeds)]
  check_keys(config_module, config_path, variant, all_overrides)
  for item in extra:
    key, has_value, _ = item.partition('=')
    if not has_value:
      raise ValueError(f'--set {item!r}: expected FIELD=VALUE, e.g. --set data.dir=/usr/share/datasets/fashion-mnist')
    check_keys(config_module, config_path, variant, [{key: None}])
  module = module or 'experiments.' + os.path.splitext(os.path.basename(config_path))[0]
  points, seen = [], {}
  for overrides in all_overrides:
    name = workdir_name(overrides, variant)
    if name in seen:
      raise ValueError(f'{config_path}: sweep points {seen[name]} and {overrides} would share workdir {name}.')
    seen[name] = overrides
    point_variant, fields = split_point(config_module, variant, overrides)
    config_arg = config_path if point_variant is None else f'{config_path}:{point_variant}'
    argv = [python, '-m', module, '--config', config_arg]
    argv += [f'--config.{k}={format_value(v)}' for k, v in fields.items()]
    argv += [f'--config.{item}' for item in extra]
    workdir = os.path.join(root, name)
    argv += ['--workdir', workdir]
    points.append(Point(name, overrides, argv, workdir))
  return points


def run_local(points: Sequence[Point], root: str, jobs: int) -> int:
  """Runs the points, `jobs` at a time, each with its output in ROOT/logs/<name>.log; returns how many failed.

  Ctrl-C (KeyboardInterrupt) starts no further point: the running ones are asked to stop (SIGTERM: they checkpoint
  the step they reached, as on a first Ctrl-C), are waited for, and the KeyboardInterrupt goes on to the caller.
  """
  log_dir = os.path.join(root, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  stopping = threading.Event()
  running: dict[str, subprocess.Popen] = {}
  lock = threading.Lock()

  def run(point: Point) -> tuple[Point, int | None, float, str]:
    log_path = os.path.join(log_dir, point.name + '.log')
    start = time.monotonic()
    with lock:  # Checked and started under the lock: after a Ctrl-C no point starts (nor opens its log).
      if stopping.is_set():
        return point, None, 0.0, log_path
      print(f'  running {point.name} (output in {log_path})', flush=True)
      # Appended: a re-run (which resumes) keeps the output of the runs before it.
      with open(log_path, 'a') as log:
        log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")}\n{shlex.join(point.argv)}\n')
        log.flush()
        running[point.name] = subprocess.Popen(point.argv, stdout=log, stderr=subprocess.STDOUT)
    returncode = running[point.name].wait()
    return point, returncode, time.monotonic() - start, log_path

  failed = []
  # Threads only wait on the child processes, which do the work.
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    futures = [pool.submit(run, p) for p in points]
    try:
      for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
        point, returncode, seconds, log_path = future.result()
        status = 'done' if returncode == 0 else f'FAILED (exit {returncode}), see {log_path}'
        print(f'[{done}/{len(points)}] {point.name}: {status} in {seconds:.0f}s', flush=True)
        if returncode:
          failed.append(point.name)
    except KeyboardInterrupt:
      _stop_running(stopping, lock, running)
      pool.shutdown(wait=False, cancel_futures=True)
      raise
  if failed:
    print(f'{len(failed)} of {len(points)} runs failed: {", ".join(failed)}. Logs in {log_dir}.', file=sys.stderr)
  return len(failed)


def _stop_running(stopping: threading.Event, lock: threading.Lock, running: dict[str, subprocess.Popen]) -> None:
  """Starts no more points and lets the running ones checkpoint and exit (a second Ctrl-C leaves them at once).

  SIGTERM, not SIGINT: a Ctrl-C at a terminal already reached them (one process group), and a second SIGINT would
  make them abort without their checkpoint; SIGTERM after it is ignored, and alone it stops them as a Ctrl-C does.
  """
  with lock:
    stopping.set()
    alive = [p for p in running.values() if p.poll() is None]
  for proc in alive:
    proc.send_signal(signal.SIGTERM)
  try:
    for proc in alive:
      proc.wait()
  except KeyboardInterrupt:  # The second Ctrl-C: the user does not want to wait; the children got it too.
    pass


class Command(submitit.helpers.Checkpointable):
  """Runs one point's command in the launch directory, as a submitit job.

  Checkpointable: on preemption or timeout submitit requeues the same command, and the run resumes from its workdir.
  """

  def __init__(self, cwd: str):
    self.cwd = cwd

  def __call__(self, argv: list[str]) -> None:
    # Output goes to submitit's per-job log files.
    returncode = subprocess.run(argv, cwd=self.cwd, check=False).returncode
    if returncode:
      raise RuntimeError(f'{shlex.join(argv)} exited with status {returncode}.')


def run_submitit(points: Sequence[Point], root: str, cluster: str, parameters: dict[str, Any]) -> list:
  """Submits the points as one job array (SLURM, or submitit's local cluster); returns the submitit jobs."""
  executor = submitit.AutoExecutor(folder=os.path.join(root, 'submitit', '%j'), cluster=cluster)
  executor.update_parameters(**parameters)
  return executor.map_array(Command(os.getcwd()), [p.argv for p in points])


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
  """The executor flags (local pool, SLURM, submitit's local cluster), shared with scripts.reproduce."""
  parser.add_argument(
    '--executor',
    choices=EXECUTORS,
    default='local',
    help='local: a pool of --jobs processes here; slurm: a submitit job array; submitit-local: the SLURM code path '
    'run by submitit on this machine (all points at once; for testing)',
  )
  parser.add_argument('--jobs', type=int, default=1, help='local: runs at a time; slurm: array parallelism')
  slurm = parser.add_argument_group('slurm / submitit')
  slurm.add_argument('--slurm_partition')
  slurm.add_argument('--slurm_account')
  slurm.add_argument('--timeout_min', type=int, default=24 * 60, help='per job; requeued jobs resume (default 1 day)')
  slurm.add_argument('--gpus_per_node', type=int)
  slurm.add_argument('--cpus_per_task', type=int)
  slurm.add_argument('--mem_gb', type=float)


def launch(points: Sequence[Point], root: str, args: argparse.Namespace, name: str) -> int:
  """Runs (local, submitit-local) or submits (slurm) the points as `add_launch_arguments`' flags say.

  Returns:
    The number of points that failed; 0 once a SLURM array is submitted (its jobs run on after this returns).
  """
  if args.executor == 'local':
    return run_local(points, root, args.jobs)
  parameters = {
    'name': f'sweep_{name}',
    'timeout_min': args.timeout_min,
    'gpus_per_node': args.gpus_per_node,
    'cpus_per_task': args.cpus_per_task,
    'mem_gb': args.mem_gb,
    'slurm_partition': args.slurm_partition,
    'slurm_array_parallelism': args.jobs,
    'slurm_additional_parameters': {'account': args.slurm_account} if args.slurm_account else None,
  }
  cluster = 'local' if args.executor == 'submitit-local' else 'slurm'
  try:
    jobs = run_submitit(points, root, cluster, parameters)
  except RuntimeError as e:  # submitit's SlurmExecutor raises this where there is no srun.
    raise LaunchError(
      f'cannot submit to SLURM here ({e}). Launch from a login node of the cluster, or use --executor '
      'local (a process pool here) or submitit-local.'
    ) from None
  for point, job in zip(points, jobs, strict=True):
    print(f'{job.job_id}  {point.name}')
  print(f'submitted {len(jobs)} jobs; logs in {os.path.join(root, "submitit")}', flush=True)
  failed = 0
  if cluster == 'local':  # submitit cancels local jobs when their Job objects go away: wait for them.
    for point, job in zip(points, jobs, strict=True):
      try:
        job.result()
      except Exception as e:  # Report every failed point, not just the first.
        failed += 1
        print(f'{point.name}: FAILED: {str(e).strip().splitlines()[-1]}', file=sys.stderr)
  return failed


class LaunchError(Exception):
  """The executor cannot start here (e.g. no SLURM); the message says what to use instead."""


def config_problem(point: Point) -> str | None:
  """Why the experiment would refuse `point`'s config (parsed from its command, validated as its CLI does), or None.

  Checked for every point before the first is launched: a bad --set would otherwise fail each point in its log. Only
  experiments of this project (experiments.<name> with a task.validate) are validated; other modules are launched.
  """
  module = point.argv[2]
  if not module.startswith('experiments.'):
    return None
  from absl import flags
  from ml_collections import config_flags

  from experiments import cli  # Before the task: it quiets jax's logging as jax is imported.

  try:
    task = importlib.import_module(f'{module}.task')
  except ImportError:
    return None
  if not callable(getattr(task, 'validate', None)):
    return None

  argv = [module, *point.argv[3 : point.argv.index('--workdir')]]
  flag_values = flags.FlagValues()
  # sys_argv: the overrides to define as flags are read from the command, not from this process's sys.argv.
  config_flags.DEFINE_config_file(
    'config', None, 'The config file.', flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  try:
    flag_values(argv)
  except Exception as e:  # The config file is user code: any exception is the user's to fix.
    return cli_errors.flag_error_message(e, argv)
  config = flag_values['config'].value
  with config.unlocked():
    cli.expand_paths(config)
  try:
    task.validate(config)
  except ValueError as e:
    return str(e)
  except (AttributeError, KeyError) as e:  # A field the experiment reads is missing: another experiment's config.
    return cli_errors.missing_field_message(e, task.train_and_evaluate)
  return None


def check_points(points: Sequence[Point]) -> None:
  """CommandError naming the first point whose config its experiment refuses; nothing is launched then."""
  for point in points:
    problem = config_problem(point)
    if problem:
      raise cli_errors.CommandError(
        f'sweep point {point.name}: {problem.strip()} (No point was launched; {len(points)} points were checked.)'
      )


@cli_errors.entry_point
def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(
    prog='python -m scripts.sweep', description=__doc__.split('\n')[0], formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument('config', help='config file with a sweep(add), e.g. configs/mnist.py')
  parser.add_argument('--variant', help='config variant, passed as --config CONFIG:VARIANT (e.g. smoke)')
  parser.add_argument('--root', required=True, help='directory holding one workdir per point')
  parser.add_argument('--seeds', type=int, default=1, help='runs per point, config.seed 0..N-1 (default 1)')
  add_flag(parser, '--dry_run', action='store_true', help='print the commands, launch nothing')
  parser.add_argument(
    '--set',
    dest='extra',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='config field override for every point (repeatable), e.g. --set data.dir=/usr/share/datasets/fashion-mnist',
  )
  parser.add_argument('--module', help='experiment module to run (default: experiments.<config file name>)')
  add_launch_arguments(parser)
  args = parser.parse_args(argv)
  if args.jobs < 1:
    parser.error(f'--jobs must be at least 1, got {args.jobs}.')
  if args.seeds < 1:
    parser.error(f'--seeds must be at least 1, got {args.seeds}.')
  if os.path.exists(args.root) and not os.path.isdir(args.root):
    parser.error(f'--root {args.root} is a file; give a directory (it is created if missing)')

  try:
    points = build_points(args.config, args.variant, args.root, args.module, extra=args.extra, seeds=args.seeds)
  except ValueError as e:
    raise cli_errors.CommandError(str(e)) from e
  if args.dry_run:
    for point in points:
      print(shlex.join(point.argv))
    return 0
  check_points(points)
  try:
    failed = launch(points, args.root, args, os.path.splitext(os.path.basename(args.config))[0])
  except LaunchError as e:
    raise cli_errors.CommandError(str(e)) from e
  except KeyboardInterrupt:
    if cli_errors.wants_traceback():
      raise
    command = shlex.join(['python', '-m', 'scripts.sweep', *(sys.argv[1:] if argv is None else argv)])
    what = (
      'no further point was started, and the running ones stopped at a checkpoint'
      if args.executor == 'local'
      else "submitit's jobs may have been cancelled; each resumes from its checkpoint"
    )
    print(f'\nInterrupted: {what}. To go on, re-run: {command}\n', file=sys.stderr, flush=True)
    return cli_errors.EXIT_INTERRUPTED
  return int(failed > 0)


if __name__ == '__main__':
  sys.exit(main())
