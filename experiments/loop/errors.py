"""The loop's known failures, each message naming the fix; `experiments.cli` maps them to exit codes."""

from experiments.workdir import WorkdirError


class ConfigError(ValueError):
  """An invalid config value; the message names the field and the fix."""


class DivergedError(RuntimeError):
  """The loss or a norm became NaN or Inf; the run stopped with status 'diverged'."""


class Interrupted(RuntimeError):
  """SIGINT or SIGTERM stopped the run at a checkpoint (status 'interrupted'); re-running the command resumes it."""

  def __init__(self, message: str, step: int, signal_name: str):
    super().__init__(message)
    self.step, self.signal_name = step, signal_name


__all__ = ['ConfigError', 'DivergedError', 'Interrupted', 'WorkdirError']
