"""`experiments.allocator`: with it, a freed large buffer is reused instead of page-faulted afresh on every call."""

import subprocess
import sys

import pytest

from experiments import allocator

# Allocates, touches and frees a 48 MB buffer 20 times (as XLA does with a program's scratch memory on every call) and
# prints the minor page faults of the last 19 rounds.
PROBE = """
import ctypes, resource, sys
from experiments import allocator
if sys.argv[1] == '1':
  assert allocator.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
libc.free.argtypes = (ctypes.c_void_p,)
size = 48 << 20
def round_trip():
  p = libc.malloc(size)
  libc.memset(p, 1, size)
  libc.free(p)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
  round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(keep: bool) -> int:
  env = {'PATH': '/usr/bin:/bin', 'PYTHONPATH': '.'}
  out = subprocess.run([sys.executable, '-c', PROBE, '1' if keep else '0'], capture_output=True, text=True, env=env)
  assert out.returncode == 0, out.stderr
  return int(out.stdout.strip())


@pytest.mark.skipif(allocator._glibc() is None or allocator.other_allocator() is not None, reason='glibc malloc only')
def test_a_freed_large_buffer_is_reused_without_page_faults():
  default, kept = page_faults(keep=False), page_faults(keep=True)
  assert default > 19 * 10_000  # glibc's default: every 48 MB round trip faults in its ~12,000 pages again.
  assert kept < 1_000


def test_the_switch_and_other_allocators_leave_malloc_alone(monkeypatch):
  monkeypatch.setattr(allocator, 'keep_freed_memory', allocator.keep_freed_memory.__wrapped__)
  monkeypatch.setenv(allocator.ENV_SWITCH, '0')
  assert allocator.keep_freed_memory() is False
  monkeypatch.setenv(allocator.ENV_SWITCH, '1')
  monkeypatch.setenv('LD_PRELOAD', '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4')
  assert allocator.other_allocator() == 'libtcmalloc_minimal.so.4'
  assert allocator.keep_freed_memory() is False
  assert allocator.describe().startswith('libtcmalloc_minimal.so.4')
  monkeypatch.setenv(allocator.ENV_SWITCH, 'yes')
  with pytest.raises(ValueError, match=r'LAYERNORM_KEEP_MEMORY must be 0 .* or 1 .*; got .yes.'):
    allocator.keep_freed_memory()
