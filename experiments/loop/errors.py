"""The loop's known failures, each message naming the fix; `experiments.cli` maps them to exit codes."""

from experiments.workdir import WorkdirError


class ConfigError(ValueError):
  """An invalid config value; the message names the field and the fix."""


class DivergedError(RuntimeError):
  """The loss or a norm became NaN or Inf; the run stopped with status 'diverged'."""


__all__ = ['ConfigError', 'DivergedError', 'WorkdirError']
