"""Three things make `make test` fit in minutes on 2 cores:

- One JAX compilation cache for the whole session, shared by both xdist workers and every subprocess they start (an
  experiment's command line run by a test): a smoke config compiled once is loaded, not compiled again, by the next
  test that runs it (a DRAW smoke run: 13.6 s of CPU cold, 5.5 s with its programs cached). The cache is a fresh
  temporary directory per session, removed at the end, so a run never depends on an earlier one; a cache directory
  set by the caller (JAX_COMPILATION_CACHE_DIR) is used as it is and kept.
- XLA's CPU backend optimizes at LLVM level 1, not its default 3, in the tests and the runs they start: most programs
  here are compiled for a few steps, so compile time is most of their cost (a DRAW smoke run: 18.7 -> 12.6 s of CPU,
  the smoke report 344 -> 263 s). The level changes how fast the machine code is, not what it computes (no fast-math
  either way), so every numerical assertion holds as at level 3; the speed the project promises is measured by
  benchmarks/, at XLA's defaults, never by the tests. A caller's own XLA_FLAGS level is kept.
- The tests marked `slow` run first: with `pytest -n 2` a long test started last would run alone at the end, while
  started first it overlaps the many short ones on the other worker (longest-first scheduling).
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
# Every program is worth caching here: the default thresholds skip those compiled in under a second, and a test
# session compiles hundreds of those.
_CACHE_SETTINGS = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0', 'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
_created: list[str] = []


def _share_compilation_cache() -> None:
  """Sets the cache for this process and its children, before anything imports jax (conftest is imported first).

  An xdist worker inherits the variables its controller set here, so both workers and their subprocesses share one
  directory."""
  if not os.environ.get(_CACHE_ENV):
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix='layernorm-tests-jax-cache-')
    _created.append(os.environ[_CACHE_ENV])
  for name, value in _CACHE_SETTINGS.items():
    os.environ.setdefault(name, value)


def _compile_quickly() -> None:
  """LLVM level 1 for this process and its children (read when jax starts its backend), unless the caller chose one."""
  flags = os.environ.get('XLA_FLAGS', '')
  if '--xla_backend_optimization_level' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} --xla_backend_optimization_level=1'.strip()


_share_compilation_cache()
_compile_quickly()


def pytest_unconfigure(config):
  del config
  for path in _created:
    shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)  # Stable: the order is otherwise kept.
