"""The absl entry point every experiment shares.

  python -m experiments.<name> --config configs/<name>.py[:variants] --workdir DIR [--config.field=value ...]

An experiment module ends with

  main = cli.make_main(train_and_evaluate, validate)
  if __name__ == '__main__':
    cli.run(main)

Known failures end the process with one message on stderr and a non-zero exit code, without a traceback:
an invalid config (2, checked before anything else, so an existing workdir is untouched), an unusable workdir (3),
a diverged run (4).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import loop

EXIT_CONFIG = 2
EXIT_WORKDIR = 3
EXIT_DIVERGED = 4

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines --config, --workdir and --jax_distributed (once per process)."""
  if 'workdir' in FLAGS:
    return
  config_flags.DEFINE_config_file(
    'config', None, 'Config file, with variants after a colon: configs/mnist.py:norm=ln,batch_size=4.', lock_config=True
  )
  flags.DEFINE_string('workdir', None, 'Directory for logs and checkpoints; re-running the same command resumes.')
  flags.DEFINE_bool(
    'jax_distributed',
    False,
    'Call jax.distributed.initialize() first (multi-host runs). On a cluster it finds the coordinator, process count '
    'and id itself (SLURM, Open MPI, TPU pods); elsewhere set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES '
    'and JAX_PROCESS_ID in each process (e.g. two processes on one machine with localhost:PORT and ids 0 and 1).',
  )
  flags.mark_flags_as_required(['config', 'workdir'])


def run_experiment(
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict[str, float]],
  validate: Callable[[ml_collections.ConfigDict], None],
  config: ml_collections.ConfigDict,
  workdir: str,
) -> int:
  """Validates `config`, then trains in `workdir`; returns the process exit code (0, or one of the EXIT_* codes).

  Known failures print one message to stderr instead of a traceback; anything else propagates.
  """
  try:
    validate(config)
  except ValueError as e:
    return _fail(str(e), EXIT_CONFIG)
  try:
    metrics = train_and_evaluate(config, workdir)
  except loop.ConfigError as e:
    return _fail(str(e), EXIT_CONFIG)
  except loop.WorkdirError as e:
    return _fail(str(e), EXIT_WORKDIR)
  except loop.DivergedError as e:
    return _fail(str(e), EXIT_DIVERGED)
  logging.info('Final metrics: %s', metrics)
  return 0


def _fail(message: str, code: int) -> int:
  print(f'\nError: {message}\n', file=sys.stderr, flush=True)
  return code


def make_main(
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict[str, float]],
  validate: Callable[[ml_collections.ConfigDict], None],
) -> Callable[[Sequence[str]], None]:
  """An absl `main(argv)` running `run_experiment` on --config and --workdir and exiting with its code."""

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
    if FLAGS.jax_distributed:
      _initialize_distributed()
    code = run_experiment(train_and_evaluate, validate, FLAGS.config, FLAGS.workdir)
    if code:
      sys.exit(code)

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
      raise app.UsageError(f'{name}={value!r} must be an integer.') from None

  jax.distributed.initialize(num_processes=env_int('JAX_NUM_PROCESSES'), process_id=env_int('JAX_PROCESS_ID'))


def run(main: Callable[[Sequence[str]], None]) -> None:
  """Defines the flags and runs `main` under absl."""
  define_flags()
  app.run(main)
