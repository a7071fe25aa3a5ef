"""The absl entry point every experiment shares.

  python -m experiments.<name> --config configs/<name>.py[:variants] --workdir DIR [--config.field=value ...]

An experiment module ends with

  main = cli.make_main(train_and_evaluate, validate)
  if __name__ == '__main__':
    cli.run(main)

Every known mistake ends the process with one 'Error: ...' message on stderr that names the file or field and the fix,
and a non-zero exit code, without a traceback: a config file, variant or override that does not load, or an invalid
value, or missing or corrupt data (2; checked before anything is written, so an existing workdir is untouched), an
unusable workdir (3), a diverged run (4). `--traceback` or LAYERNORM_TRACEBACK=1 shows the full traceback instead.
SIGINT (Ctrl-C) or SIGTERM stops a run at a checkpoint of its current step with exit code 130 (128 + SIGINT, the
shell's convention), whichever signal it was, so that a wrapper re-runs or requeues the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments import allocator, cli_errors, console

console.quiet()  # Before jax is imported (by experiments.loop): JAX_PLATFORMS and jax's logger.

from experiments import loop  # noqa: E402
from experiments.data import DataError  # noqa: E402

EXIT_CONFIG = cli_errors.EXIT_CONFIG
EXIT_WORKDIR = cli_errors.EXIT_WORKDIR
EXIT_DIVERGED = cli_errors.EXIT_DIVERGED
EXIT_INTERRUPTED = cli_errors.EXIT_INTERRUPTED

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the shared flags (once per process) and makes them the ones `--help` shows."""
  if 'workdir' in FLAGS:
    return
  config_flags.DEFINE_config_file(
    'config',
    None,
    'Config file, with variants after a colon: configs/mnist.py:norm=ln,batch_size=4. Override any field with '
    "--config.field=value; `--config configs/mnist.py --list_config` prints the file's variants and every field.",
    lock_config=True,
  )
  flags.DEFINE_string('workdir', None, 'Directory for logs and checkpoints; re-running the same command resumes.')
  flags.DEFINE_bool('list_config', False, "Print the config file's variants and the resolved config, then exit.")
  flags.DEFINE_bool(
    'dry_run', False, 'Check the config (validate: values, data files present) and exit, without touching the workdir.'
  )
  flags.DEFINE_bool('traceback', False, 'Show the full traceback of a known error (also: LAYERNORM_TRACEBACK=1).')
  flags.DEFINE_bool(
    'jax_distributed',
    False,
    'Call jax.distributed.initialize() first (multi-host runs). On a cluster it finds the coordinator, process count '
    'and id itself (SLURM, Open MPI, TPU pods); elsewhere set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES '
    'and JAX_PROCESS_ID in each process (e.g. two processes on one machine with localhost:PORT and ids 0 and 1).',
  )
  # absl's --help lists the main module's key flags only; the main module is the experiment's __main__.py.
  for name in ('config', 'workdir', 'list_config', 'dry_run', 'traceback', 'jax_distributed'):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def expand_paths(config: ml_collections.ConfigDict) -> None:
  """Expands `~` and $VARS in every string field named `dir` or `*_dir` (the shell leaves `--x.dir=~/d` alone)."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      expand_paths(value)
    elif isinstance(value, str) and (key == 'dir' or key.endswith('_dir')):
      config[key] = os.path.expandvars(os.path.expanduser(value))


def run_experiment(
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict[str, float]],
  validate: Callable[[ml_collections.ConfigDict], None],
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  dry_run: bool = False,
) -> int:
  """Validates `config`, then trains in `workdir`; returns the process exit code (0, or one of the EXIT_* codes).

  Known failures print one message to stderr instead of a traceback; anything else propagates.
  """
  workdir = os.path.expandvars(os.path.expanduser(workdir))
  with config.unlocked():
    expand_paths(config)
  try:
    validate(config)
  except ValueError as e:
    return cli_errors.fail(e, str(e), EXIT_CONFIG)
  except (AttributeError, KeyError) as e:  # A field the experiment reads is missing: another experiment's config.
    return cli_errors.fail(e, cli_errors.missing_field_message(e, train_and_evaluate), EXIT_CONFIG)
  if dry_run:
    print(f'Config OK: would train in {workdir}.')
    return 0
  try:
    train_and_evaluate(config, workdir)  # The loop logs the final metrics' summary ('Done: ...').
  except (loop.ConfigError, DataError) as e:
    return cli_errors.fail(e, str(e), EXIT_CONFIG)
  except (loop.WorkdirError, loop.CheckpointMismatchError) as e:  # The workdir holds another model's or optimizer's.
    return cli_errors.fail(e, str(e), EXIT_WORKDIR)
  except loop.DivergedError as e:
    return cli_errors.fail(e, str(e), EXIT_DIVERGED)
  except OSError as e:  # The OS refused a file: in the workdir (read-only, full disk) or a data file.
    return cli_errors.fail(e, *cli_errors.os_error_message(e, workdir))
  except loop.Interrupted as e:
    print(f'\n{e}\n', file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
  except KeyboardInterrupt:  # A second Ctrl-C, or one before training started: nothing was saved just now.
    print('\nAborted; re-run the same command to resume from the last checkpoint.\n', file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
  return 0


def make_main(
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict[str, float]],
  validate: Callable[[ml_collections.ConfigDict], None],
) -> Callable[[Sequence[str]], None]:
  """An absl `main(argv)` running `run_experiment` on --config and --workdir and exiting with its code."""

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      sys.exit(cli_errors.fail(None, f'unexpected arguments: {" ".join(argv[1:])}. {cli_errors.HELP}', EXIT_CONFIG))
    if FLAGS.config is None:
      sys.exit(cli_errors.fail(None, f'--config is required. {cli_errors.HELP}', EXIT_CONFIG))
    if FLAGS.list_config:
      print(cli_errors.describe_config(FLAGS['config'].config_filename, FLAGS.config))
      return
    if not FLAGS.workdir:
      sys.exit(
        cli_errors.fail(None, '--workdir is required. Fix: add --workdir DIR (new, or a run to resume).', EXIT_CONFIG)
      )
    if FLAGS.jax_distributed:
      _initialize_distributed()
    code = run_experiment(train_and_evaluate, validate, FLAGS.config, FLAGS.workdir, dry_run=FLAGS.dry_run)
    if code:
      sys.exit(code)

  main = cli_errors.entry_point(main)  # What run_experiment does not catch (a Ctrl-C before it) ends as a script's.
  main.experiment = cli_errors.experiment_name(train_and_evaluate)
  return main


def _initialize_distributed() -> None:
  """jax.distributed.initialize(), with the process count and id from the environment where they are set.

  jax reads JAX_COORDINATOR_ADDRESS itself but takes the count and id only as arguments or from a detected cluster;
  the two variables make a run launchable by hand (or by a test) without a cluster manager.
  """
  import jax

  def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
      return None
    try:
      return int(value)
    except ValueError:
      sys.exit(cli_errors.fail(None, f'{name}={value!r} must be an integer. Fix: e.g. {name}=0.', EXIT_CONFIG))

  jax.distributed.initialize(num_processes=env_int('JAX_NUM_PROCESSES'), process_id=env_int('JAX_PROCESS_ID'))


def run(main: Callable[[Sequence[str]], None]) -> None:
  """Defines the flags and runs `main` under absl, turning flag and config-file errors into one message.

  First it keeps freed memory in the process (`experiments.allocator`: 20 % faster training steps under glibc).
  """
  try:
    allocator.keep_freed_memory()
  except ValueError as e:
    sys.exit(cli_errors.fail(e, str(e), EXIT_CONFIG))
  define_flags()
  experiment = getattr(main, 'experiment', None)
  app.run(main, flags_parser=lambda argv: cli_errors.parse_flags(FLAGS, argv, experiment))
