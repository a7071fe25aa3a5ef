"""Console hygiene shared by the entry points: no log lines that every CPU run prints and nobody can act on."""

from __future__ import annotations

import logging

# jax tries every backend it knows and logs each that is missing ("Unable to initialize backend 'tpu'") at INFO, on
# every CPU run; a real failure of a backend the user asked for (JAX_PLATFORMS) is still an error.
_JAX_BACKEND_LOGGER = 'jax._src.xla_bridge'


def quiet() -> None:
  """Silences jax's backend probing; call before jax initializes its backends (first array or device query)."""
  logging.getLogger(_JAX_BACKEND_LOGGER).setLevel(logging.WARNING)
