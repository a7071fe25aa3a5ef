"""Stopping on SIGINT (Ctrl-C) and SIGTERM (what SLURM sends before preemption) without losing work.

A signal handler only sets a flag: raising inside the handler would unwind through whatever runs at that moment (an
Orbax save, a compilation) and leave half-written files behind. The loop reads the flag at each dispatch boundary,
makes that step a stop point, checkpoints it, records status 'interrupted' and raises `Interrupted`, which
`experiments.cli` turns into one message and exit code 130. A second Ctrl-C aborts at once (KeyboardInterrupt), for
a user who does not want to wait for the checkpoint; Orbax removes the temporary directory it may leave at the next
start.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopper:
  """The signal that asked the run to stop (None until one arrives)."""

  def __init__(self):
    self.signal: int | None = None

  @property
  def requested(self) -> bool:
    return self.signal is not None

  def handle(self, signum: int, frame) -> None:
    del frame
    if self.signal == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt  # The second Ctrl-C: the user does not want to wait.
    if self.signal is None:
      self.signal = signum

  @property
  def name(self) -> str:
    return signal.Signals(self.signal).name if self.signal is not None else ''


@contextlib.contextmanager
def catch_signals() -> Iterator[Stopper]:
  """Installs the flag-setting handlers for the block (main thread only: Python allows no other) and restores them."""
  stopper = Stopper()
  if threading.current_thread() is not threading.main_thread():
    yield stopper  # E.g. a run inside a thread pool: signals stay with whoever owns the main thread.
    return
  previous = {s: signal.signal(s, stopper.handle) for s in SIGNALS}
  try:
    yield stopper
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
