"""Keep freed memory in the process, so that XLA's per-call buffers are reused instead of page-faulted afresh.

XLA:CPU allocates a compiled program's scratch memory (tens of MB for a training step) with malloc on every call.
glibc serves a request above its mmap threshold (which adapts up to at most 32 MB) with fresh pages from mmap and
returns them to the OS on free, so every step touches thousands of new pages: about 11,000 page faults and 7-8 ms of
the attentive reader's 37 ms training step on the 2-core CPU (benchmarks/README.md). `keep_freed_memory()` sets, at
run time, what `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...` would at start-up: no mmap
(every block comes from the heap) and no trimming of the heap's top below 1 GiB, so freed blocks are reused.

Every experiment's command line (`experiments.cli.run`) and the benchmarks that time training steps call it;
`LAYERNORM_KEEP_MEMORY=0` leaves malloc as it is. It does nothing under another allocator (tcmalloc or jemalloc
through LD_PRELOAD, which keep freed memory anyway) or a C library other than glibc.

Trade-off: memory freed by the process stays with it until it exits, so its resident size stays at its peak. For a
training process, whose peak recurs at every step, that costs nothing; a program that allocates a large peak once
and then wants it back should leave this off.
"""

from __future__ import annotations

import ctypes
import functools
import os

ENV_SWITCH = 'LAYERNORM_KEEP_MEMORY'
# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def other_allocator() -> str | None:
  """The allocator LD_PRELOAD puts in front of glibc's (tcmalloc, jemalloc), or None."""
  for lib in os.environ.get('LD_PRELOAD', '').replace(':', ' ').split():
    name = os.path.basename(lib)
    if 'tcmalloc' in name or 'jemalloc' in name:
      return name
  return None


def _glibc() -> ctypes.CDLL | None:
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # noqa: B018 (an AttributeError says this is not glibc)
    return libc
  except (OSError, AttributeError):
    return None


@functools.cache
def keep_freed_memory() -> bool:
  """Turns glibc malloc's mmap and trimming off for this process (once); True if it did."""
  value = os.environ.get(ENV_SWITCH, '1').strip()
  if value not in ('0', '1'):
    raise ValueError(f'{ENV_SWITCH} must be 0 (leave malloc as it is) or 1 (keep freed memory); got {value!r}.')
  if value == '0' or other_allocator() is not None:
    return False
  libc = _glibc()
  if libc is None:
    return False
  return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def describe() -> str:
  """The process's allocator in words, for benchmark headers."""
  other = other_allocator()
  if other is not None:
    return f'{other} (LD_PRELOAD)'
  if keep_freed_memory.cache_info().currsize and keep_freed_memory():
    return f'glibc malloc, mmap and trimming off (experiments.allocator; {ENV_SWITCH}=0 for the default)'
  return 'glibc malloc (default; fresh buffers of 16 MB or more page-fault on every call)'
