"""Console hygiene shared by the entry points: no log lines that every CPU run prints and nobody can act on."""

from __future__ import annotations

import logging

# jax tries every backend it knows and logs each that is missing ("Unable to initialize backend 'tpu'") at INFO, on
# every CPU run; a real failure of a backend the user asked for (JAX_PLATFORMS) is still an error.
_JAX_BACKEND_LOGGER = 'jax._src.xla_bridge'
# Orbax warns that a manager opened read_only is read only (and so saves nothing): what `load_model` asks for.
_ORBAX_READ_ONLY = ('Given directory is read only', 'CheckpointManagerOptions.read_only=True')


class _DropReadOnlyNotices(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_ORBAX_READ_ONLY)


def quiet() -> None:
  """Silences jax's backend probing and Orbax's read-only notices; call before jax initializes its backends."""
  logging.getLogger(_JAX_BACKEND_LOGGER).setLevel(logging.WARNING)
  absl_logger = logging.getLogger('absl')  # Orbax logs through absl.logging.
  if not any(isinstance(f, _DropReadOnlyNotices) for f in absl_logger.filters):
    absl_logger.addFilter(_DropReadOnlyNotices())
