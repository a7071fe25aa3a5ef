"""Training throughput for the progress line and the ETA, with evaluation and compilation left out.

The ETA is estimated from the rate over the whole run so far (in this process), counting only the time spent in
training dispatches and not the first, compiling call of each chunk size: a window's rate would make the first
estimate include compilation (minutes for a job of seconds) and jump after each evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Throughput:
  """Seconds and steps of training: in the current logging window (for perf/ metrics) and over the whole run.

  Args:
    clock: seconds as a float (tests pass a fake one).
  """

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._t0 = clock()
    self.window_seconds, self.window_steps = 0.0, 0
    self.run_seconds, self.run_steps = 0.0, 0

  def start(self) -> None:
    """Training (dispatching and waiting for steps) starts or resumes after a stop point's work."""
    self._t0 = self._clock()

  def exclude(self, seconds: float) -> None:
    """Takes `seconds` (a compilation, measured inside the current stretch) out of the training time."""
    self.window_seconds -= seconds
    self.run_seconds -= seconds

  def stop(self, num_steps: int) -> None:
    """Training pauses at a stop point after `num_steps` more steps, all finished on the device."""
    elapsed = self._clock() - self._t0
    self.window_seconds += elapsed
    self.run_seconds += elapsed
    self.window_steps += num_steps
    self.run_steps += num_steps

  def rate(self) -> float:
    """Steps per second in the current window."""
    return self.window_steps / max(self.window_seconds, 1e-9)

  def reset_window(self) -> None:
    self.window_seconds, self.window_steps = 0.0, 0

  def eta_seconds(self, remaining_steps: int) -> float | None:
    """Seconds of training left at the run's steady rate, or None before any steady-state step was timed."""
    if self.run_steps == 0 or self.run_seconds <= 0:
      return None
    return remaining_steps * self.run_seconds / self.run_steps
