"""The absl entry point every experiment shares.

  python -m experiments.<name> --config configs/<name>.py[:variants] --workdir DIR [--config.field=value ...]

An experiment module ends with

  main = cli.make_main(train_and_evaluate, validate)
  if __name__ == '__main__':
    cli.run(main)

Known failures end the process with one message on stderr and a non-zero exit code, without a traceback:
an invalid config (2, checked before anything else, so an existing workdir is untouched), an unusable workdir (3),
a diverged run (4). SIGINT (Ctrl-C) or SIGTERM stops a run at a checkpoint of its current step with exit code 130
(128 + SIGINT, the shell's convention), whichever signal it was, so that a wrapper re-runs or requeues the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import loop

EXIT_CONFIG = 2
EXIT_WORKDIR = 3
EXIT_DIVERGED = 4
EXIT_INTERRUPTED = 130

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines --config, --workdir and --jax_distributed (once per process)."""
  if 'workdir' in FLAGS:
    return
  config_flags.DEFINE_config_file(
    'config', None, 'Config file, with variants after a colon: configs/mnist.py:norm=ln,batch_size=4.', lock_config=True
  )
  flags.DEFINE_string('workdir', None, 'Directory for logs and checkpoints; re-running the same command resumes.')
  flags.DEFINE_bool('jax_distributed', False, 'Call jax.distributed.initialize() first (multi-host runs).')
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
  except loop.Interrupted as e:
    print(f'\n{e}\n', file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
  except KeyboardInterrupt:  # A second Ctrl-C, or one before training started: nothing was saved just now.
    print('\nAborted; re-run the same command to resume from the last checkpoint.\n', file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
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
      import jax

      jax.distributed.initialize()
    code = run_experiment(train_and_evaluate, validate, FLAGS.config, FLAGS.workdir)
    if code:
      sys.exit(code)

  return main


def run(main: Callable[[Sequence[str]], None]) -> None:
  """Defines the flags and runs `main` under absl."""
  define_flags()
  app.run(main)
