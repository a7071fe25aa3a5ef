"""The project's error contract, shared by every command-line entry point, and the messages for experiment flags.

The contract: a known mistake ends the process with one 'Error: ...' line on stderr that names the file or field and
the fix, and an exit status that means the same everywhere: 2 for a bad argument, config or data file, 3 for an
unusable workdir, 4 for a diverged run, 130 for Ctrl-C (128 + SIGINT, the shell's convention). A workdir is unusable
(3) when a command trains in it or loads a model from it and cannot; the run directories that plot, report and the
figure scripts only read logs from are their input data (2), as a data file is to an experiment. `--traceback` (or
LAYERNORM_TRACEBACK=1) shows the full traceback instead. Scripts get it from `entry_point` (their `main`) and
`ArgumentParser`; the experiments' absl command line (`experiments.cli`) from `parse_flags` and `entry_point`.

absl and ml_collections report a typo in an override, a missing config file or a config file that raises as a
traceback (or a traceback inside a flag error); `parse_flags` turns each into one 'Error: ...' naming the file or
field and the fix. No jax here: this runs before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence

EXIT_CONFIG = 2
EXIT_WORKDIR = 3
EXIT_DIVERGED = 4
EXIT_INTERRUPTED = 130
TRACEBACK_ENV = 'LAYERNORM_TRACEBACK'
HELP = "Fix: see --help; `--config configs/<name>.py --list_config` lists a config's variants and fields."
_traceback_requested = False  # Set by `entry_point` when its argv (not necessarily sys.argv) holds --traceback.


def wants_traceback() -> bool:
  """--traceback or LAYERNORM_TRACEBACK=1: show the full traceback of known errors (for debugging the code)."""
  env = os.environ.get(TRACEBACK_ENV, '').lower() in ('1', 'true', 'yes')
  return env or _traceback_requested or '--traceback' in sys.argv


class CommandError(Exception):
  """A known mistake on a command line: the message names the argument, file or field and the fix.

  `code` is the exit status: EXIT_CONFIG (a bad argument, config or data file) unless it is the workdir's fault.
  """

  def __init__(self, message: str, code: int = EXIT_CONFIG):
    super().__init__(message)
    self.code = code


def command_name() -> str:
  """'python -m scripts.plot' for this process when it runs a module of the project, else the script's name."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ''
  relative = os.path.relpath(script, root) if script else '..'
  if not relative.endswith('.py') or relative.startswith('..'):
    return os.path.basename(script) or 'python'
  module = relative[: -len('.py')].replace(os.sep, '.').removesuffix('.__main__')
  return f'python -m {module}'


class ArgumentParser(argparse.ArgumentParser):
  """argparse under the contract: a bad argument is one 'Error:' line naming the fix and exit 2; --traceback listed.

  argparse's own report is the usage text and 'prog: error: ...' with exit 2; the usage is left to --help.
  """

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('prog', command_name())
    super().__init__(*args, **kwargs)
    self.add_argument(
      '--traceback', action='store_true', help='show the full traceback of a known error (also: LAYERNORM_TRACEBACK=1)'
    )

  def error(self, message: str):
    message = message.rstrip('.')
    sys.exit(fail(None, f'{message}. Fix: see `{self.prog} --help`.', EXIT_CONFIG))


def known_error(e: BaseException) -> tuple[str, int] | None:
  """(message, exit status) for an exception the contract covers, or None for one that is a bug (a traceback)."""
  from experiments.data import DataError
  from experiments.workdir import WorkdirError

  if isinstance(e, CommandError):
    return str(e), e.code
  if isinstance(e, DataError):
    return str(e), EXIT_CONFIG
  loop_errors = sys.modules.get('experiments.loop.errors')  # Only a process that imported the loop can raise these.
  if loop_errors is not None:
    if isinstance(e, loop_errors.ConfigError):
      return str(e), EXIT_CONFIG
    if isinstance(e, loop_errors.DivergedError):
      return str(e), EXIT_DIVERGED
  checkpoints = sys.modules.get('experiments.loop.checkpoints')
  if isinstance(e, WorkdirError) or (checkpoints is not None and isinstance(e, checkpoints.CheckpointMismatchError)):
    return str(e), EXIT_WORKDIR
  if isinstance(e, OSError) and (e.filename or e.strerror):
    return (
      f'{e.filename or "a file"}: {e.strerror or e}. Fix: check that the path exists and that its directory is '
      'readable (and writable, for an output).'
    ), EXIT_CONFIG
  return None


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
  """Runs a command's `main(argv, ...)` under the contract and returns its exit status (0 when it returns None).

  A known error (`known_error`) prints its one 'Error:' line; Ctrl-C prints one line saying what to re-run and
  returns 130; anything else is a bug and propagates as a traceback. --traceback in `argv` (or sys.argv when `argv` is
  None) re-raises known errors too.
  """

  @functools.wraps(main)
  def guarded(argv: Sequence[str] | None = None, *args, **kwargs) -> int:
    global _traceback_requested
    words = sys.argv[1:] if argv is None else list(argv)
    previous, _traceback_requested = _traceback_requested, _traceback_requested or '--traceback' in words
    try:
      code = main(argv, *args, **kwargs)
      return 0 if code is None else code
    except KeyboardInterrupt:
      if wants_traceback():
        raise
      message = f'Interrupted (Ctrl-C). Re-run `{command_name()}` with the same arguments to go on.'
      print(f'\n{message}\n', file=sys.stderr, flush=True)
      return EXIT_INTERRUPTED
    except Exception as e:
      interrupted = sys.modules.get('experiments.loop.errors')
      if interrupted is not None and isinstance(e, interrupted.Interrupted) and not wants_traceback():
        print(f'\n{e}\n', file=sys.stderr, flush=True)  # The loop's message says where it stopped and how to resume.
        return EXIT_INTERRUPTED
      known = known_error(e)
      if known is None:
        raise
      return fail(e, *known)
    finally:
      _traceback_requested = previous

  return guarded


def fail(exc: BaseException | None, message: str, code: int) -> int:
  """Prints `message` as the one error of the process and returns `code`; re-raises `exc` under --traceback."""
  if exc is not None and wants_traceback():
    raise exc
  print(f'\nError: {message.strip()}\n', file=sys.stderr, flush=True)
  return code


def experiment_name(train_and_evaluate) -> str | None:
  """'mnist' for experiments.mnist.task.train_and_evaluate: the package under experiments/."""
  parts = getattr(train_and_evaluate, '__module__', '').split('.')
  return parts[1] if len(parts) > 1 and parts[0] == 'experiments' else None


def _config_arg(argv: Sequence[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(('--config=', '-config=')):
      return arg.split('=', 1)[1]
    if arg in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _describe(e: BaseException) -> str:
  """The text of an exception without its class name in 'XError:' form (one 'Error:' per message)."""
  text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
  if isinstance(e, SyntaxError) and e.filename:
    return f'SyntaxError ({e.msg}) at {e.filename}, line {e.lineno}'
  return text if isinstance(e, ValueError) else f'{type(e).__name__} ({text})'


def _innermost_text(e: BaseException) -> str:
  """ml_collections wraps KeyError('x\\nDid you mean ...') in AttributeError(KeyError): the innermost string."""
  while len(e.args) == 1 and isinstance(e.args[0], BaseException):
    e = e.args[0]
  return e.args[0] if e.args and isinstance(e.args[0], str) else str(e)  # Not str(KeyError): that is a repr.


def _override_message(e: BaseException, argv: Sequence[str], config_arg: str | None) -> str | None:
  """The message for an --config.<field> override naming a field the config lacks, or None if none does."""
  text = _innermost_text(e)
  key = text.split('\n', 1)[0].strip('\'"')
  for arg in argv:
    match = re.match(r'^--?(?:no)?config\.([\w.]+)', arg)
    if match and key in match.group(1).split('.'):
      hint = text.split('\n', 1)[1].strip() + ' ' if '\n' in text else ''
      listing = f'--config {config_arg.split(":", 1)[0]} --list_config' if config_arg else '--list_config'
      return (
        f'{arg}: the config has no field {match.group(1)!r}. {hint}'
        f'Fix: correct the field name; `{listing}` lists every field.'
      )
  return None


def _last_error_line(text: str) -> str | None:
  """'Unknown config variant ...' from a flag error that carries the config file's traceback as text."""
  found = re.findall(r'^(\w+(?:Error|Exception)): (.*)$', text, flags=re.MULTILINE)
  return found[-1][1] if found else None


def flag_error_message(e: BaseException, argv: Sequence[str]) -> str:
  """One message for an exception raised while absl parsed the command line (and ran the config file)."""
  from absl import flags

  config_arg = _config_arg(argv)
  where = f'--config {config_arg}'
  if isinstance(e, flags.Error):
    text = str(e)
    if 'Error whilst parsing config file' in text:  # A ValueError/TypeError from get_config, e.g. a variant typo.
      listing = f'`--config {(config_arg or "").split(":", 1)[0]} --list_config` lists them'
      return f'{where}: {_last_error_line(text) or text} Fix: correct the variants after the colon ({listing}).'
    return f'{text.strip()}. {HELP}' if not text.rstrip().endswith(('.', '?')) else f'{text.strip()} {HELP}'
  if isinstance(e, AttributeError | KeyError):
    message = _override_message(e, argv, config_arg)
    if message:
      return message
  return (
    f'{where}: the config file failed with {_describe(e)}. Fix: correct the config file or its variants '
    f'(`--config {(config_arg or "").split(":", 1)[0]} --list_config` lists the variants; --traceback shows where).'
  )


def _wrong_experiment(config_file: str, experiment: str | None) -> str | None:
  """The message for another experiment's config (configs/mnist.py given to experiments.draw), or None."""
  stem = os.path.splitext(os.path.basename(config_file))[0]
  experiments_dir = os.path.dirname(os.path.abspath(__file__))
  if not experiment or stem == experiment or not os.path.isfile(os.path.join(experiments_dir, stem, '__main__.py')):
    return None
  mine = os.path.join(os.path.dirname(config_file), f'{experiment}.py')
  return (
    f'--config {config_file} is the config of experiments.{stem}, not of experiments.{experiment}. '
    f'Fix: python -m experiments.{experiment} --config {mine}[:variants], or python -m experiments.{stem} '
    f'--config {config_file}.'
  )


def _config_files(directory: str) -> list[str]:
  """The config files (modules defining get_config) in `directory`, for the message about a missing one."""
  if not os.path.isdir(directory or '.'):
    return []
  found = []
  for name in sorted(os.listdir(directory or '.')):
    path = os.path.join(directory, name)
    if name.endswith('.py') and os.path.isfile(path):
      with open(path, errors='replace') as f:
        if 'def get_config' in f.read():
          found.append(path)
  return found


def parse_flags(flag_values, argv: Sequence[str], experiment: str | None) -> list[str]:
  """absl's flag parsing, with one message and exit status 2 for every way the flags or the config can fail."""
  from ml_collections.config_flags import config_flags

  try:
    args = flag_values(argv)
  except Exception as e:  # The config file is user code: any exception is the user's to fix.
    sys.exit(fail(e, flag_error_message(e, argv), EXIT_CONFIG))
  config = flag_values['config'].value
  config_arg = _config_arg(argv) or ''
  config_file = config_arg.split(':', 1)[0]
  if isinstance(config, config_flags._ErrorConfig):  # What ml_collections keeps when the file does not exist.
    near = ', '.join(_config_files(os.path.dirname(config_file))) or 'configs/<experiment>.py'
    sys.exit(fail(None, f'--config {config_file}: no such file. Fix: name a config file, e.g. one of {near}.', 2))
  message = config is not None and _wrong_experiment(config_file, experiment)
  if message:
    sys.exit(fail(None, message, EXIT_CONFIG))
  return args


def missing_field_message(e: BaseException, train_and_evaluate) -> str:
  """A field the experiment's validate reads is absent: the config was built for another experiment."""
  experiment = experiment_name(train_and_evaluate) or 'this experiment'
  key = _innermost_text(e).split('\n', 1)[0].strip('\'"')
  return (
    f'the config has no field {key!r}, which experiments.{experiment} reads: it was not built by '
    f'configs/{experiment}.py. Fix: --config configs/{experiment}.py[:variants].'
  )


def os_error_message(e: OSError, workdir: str) -> tuple[str, int]:
  """(message, exit code) for a file the OS refused: 3 when it is the workdir (or in it), 2 for data files."""
  path = e.filename or ''
  real, real_workdir = os.path.realpath(path), os.path.realpath(workdir)
  reason = e.strerror or str(e)
  if path and (real == real_workdir or real.startswith(real_workdir + os.sep) or real_workdir.startswith(real)):
    return (
      f'--workdir {workdir}: cannot use {path} ({reason}). Fix: choose a --workdir in a writable directory '
      '(e.g. runs/NAME), or make this one writable.'
    ), EXIT_WORKDIR
  return f'{path or "a file"}: {reason}. Fix: check that the data files exist and are readable.', EXIT_CONFIG


def describe_config(config_file: str, config) -> str:
  """The config file's docstring (its variants and commands) and the resolved config, for --list_config."""
  import importlib.util

  spec = importlib.util.spec_from_file_location('_listed_config', config_file.split(':', 1)[0])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  doc = (module.__doc__ or '').strip()
  fields = str(config).rstrip()
  return f'{config_file}\n\n{doc}\n\nResolved config (override any field with --config.<field>=<value>):\n{fields}'
