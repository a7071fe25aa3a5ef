"""The native CPU kernels of `layer_norm`, forward and backward, and of one LSTM or GRU step (`layernorm.fused_lstm`,
`layernorm.fused_gru`): built on first use, cached per machine, called through the XLA FFI.

XLA:CPU compiles layer norm into separate loops over the whole array, which read the input three times (and the
backward reads x and dy several times more); the kernels in `csrc/layer_norm_cpu.cc` read each row once and work on
it in L1 (benchmarks/README.md: the forward at the cost of `x * a + b`, forward+backward 2-4x faster than XLA's).
`layernorm.ops` uses them for float32 and float64 input normalized over trailing axes on CPU, and XLA everywhere else
(GPU, TPU, other dtypes); `layernorm.native_path` makes them differentiable. They are an optimization, never a
requirement.

The library is compiled with the host's C++ compiler for the host CPU (`-march=native`) the first time it is needed,
about 4 s, into `$XDG_CACHE_HOME/layernorm` (default `~/.cache/layernorm`), under a name that hashes the source, the
compiler and its flags, jaxlib's version and the CPU; the compile writes a temporary file and renames it, so processes
that build at once (pytest-xdist) never load half a library. Without a compiler, or if the build fails, `layer_norm`
warns once and keeps the XLA path. `LAYERNORM_NATIVE=0` turns the kernels off (`=1`, the default, leaves them on); it
is read when a call is traced, so set it before the first call (a function jitted earlier keeps its path).

Trade-off: a build step at first use and a C++ file to maintain, against a layer norm 2-4x faster on CPU.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib
import numpy as np

# One library from these files: the layer-norm kernels and the LSTM and GRU step kernels (`layernorm.fused_lstm`,
# `layernorm.fused_gru`), which include csrc/rnn_step_common.h.
_CSRC = Path(__file__).parent / 'csrc'
SOURCES = tuple(_CSRC / name for name in ('layer_norm_cpu.cc', 'lstm_step_cpu.cc', 'gru_step_cpu.cc'))
FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w')
ENV_SWITCH = 'LAYERNORM_NATIVE'
# FFI handlers, per dtype the kernel is compiled for: (forward target, its symbol), (backward target, its symbol).
TARGETS = {
  np.dtype(np.float32): (
    ('layernorm_forward_f32', 'LayerNormForwardF32'),
    ('layernorm_backward_f32', 'LayerNormBackwardF32'),
  ),
  np.dtype(np.float64): (
    ('layernorm_forward_f64', 'LayerNormForwardF64'),
    ('layernorm_backward_f64', 'LayerNormBackwardF64'),
  ),
}
# The LSTM step kernels (float32 only): forward and backward of one step after its matmul (csrc/lstm_step_cpu.cc).
LSTM_TARGETS = (
  ('layernorm_lstm_step_forward_f32', 'LstmStepForwardF32'),
  ('layernorm_lstm_step_backward_f32', 'LstmStepBackwardF32'),
)
# The GRU step kernels likewise (csrc/gru_step_cpu.cc).
GRU_TARGETS = (
  ('layernorm_gru_step_forward_f32', 'GruStepForwardF32'),
  ('layernorm_gru_step_backward_f32', 'GruStepBackwardF32'),
)
# The step kernels' normalizations, by the name the fused paths pass (`norm`), as their two attributes (ln, center):
# none (the plain cells), layer norm, and RMS norm (layer norm without centring, as `forward`'s center=False).
STEP_NORMS = {'none': (False, True), 'ln': (True, True), 'rms': (True, False)}


def _step_norm(norm: str) -> dict[str, bool]:
  if norm not in STEP_NORMS:
    raise ValueError(f'step kernel norm must be one of {tuple(STEP_NORMS)}; got {norm!r}.')
  ln, center = STEP_NORMS[norm]
  return {'ln': ln, 'center': center}


def enabled() -> bool:
  """Whether the environment allows the kernel (`LAYERNORM_NATIVE` unset or 1)."""
  value = os.environ.get(ENV_SWITCH, '1').strip()
  if value not in ('0', '1'):
    raise ValueError(
      f'{ENV_SWITCH} must be 0 (XLA path only) or 1 (native CPU kernel where it applies); got {value!r}.'
    )
  return value == '1'


def supports(dtype) -> bool:
  """Whether the kernel is compiled for input of `dtype`."""
  return np.dtype(dtype) in TARGETS


def cache_dir() -> Path:
  return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'layernorm'


def _compiler() -> str | None:
  return os.environ.get('CXX') or shutil.which('g++') or shutil.which('clang++') or shutil.which('c++')


def _cpu_fingerprint() -> str:
  """Identifies the CPU the library is compiled for: -march=native code must not run on another CPU."""
  try:
    text = Path('/proc/cpuinfo').read_text()
    lines = [line for line in text.splitlines() if line.startswith(('model name', 'flags'))][:2]
    return '\n'.join(lines)
  except OSError:
    return platform.processor() or platform.machine()


def library_path(
  compiler: str, sources: tuple[Path, ...] = SOURCES, stem: str = 'layer_norm_cpu', extra_flags: tuple[str, ...] = ()
) -> Path:
  # The headers beside the sources, which they may include (csrc/rnn_step_common.h), key the name too.
  headers = sorted({header for source in sources for header in source.parent.glob('*.h')})
  texts = [source.read_text() for source in (*sources, *headers)]
  key = '\n'.join([*texts, compiler, ' '.join(FLAGS + extra_flags), jaxlib.__version__, _cpu_fingerprint()])
  return cache_dir() / f'{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so'


def build(
  compiler: str, sources: tuple[Path, ...] = SOURCES, stem: str = 'layer_norm_cpu', extra_flags: tuple[str, ...] = ()
) -> Path:
  """Compiles `sources` into one library unless the cache has it; returns its path. Raises RuntimeError on failure.

  Other kernels of the project (the training loop's optimizer update) are built by the same rules under their own
  `stem`."""
  path = library_path(compiler, sources, stem, extra_flags)
  if path.exists():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix='.so', delete=False) as tmp:
    tmp_path = Path(tmp.name)
  command = [compiler, *FLAGS, *extra_flags, '-I', jax.ffi.include_dir(), *map(str, sources), '-o', str(tmp_path)]
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
      raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-2000:]}')
    os.replace(tmp_path, path)  # Atomic: a concurrent build of the same source leaves one whole file.
  finally:
    tmp_path.unlink(missing_ok=True)
  return path


def load_library(
  compiler: str, sources: tuple[Path, ...] = SOURCES, stem: str = 'layer_norm_cpu', extra_flags: tuple[str, ...] = ()
) -> ctypes.CDLL:
  """Builds the kernel library if needed and loads it. A cached file that does not load (damaged on disk, say) is
  removed and built again once, so one bad cache entry cannot leave every later process on the XLA path."""
  path = build(compiler, sources, stem, extra_flags)
  try:
    return ctypes.cdll.LoadLibrary(str(path))
  except OSError:
    path.unlink(missing_ok=True)
    return ctypes.cdll.LoadLibrary(str(build(compiler, sources, stem, extra_flags)))


def register_library(
  stem: str, sources: tuple[Path, ...], targets: tuple[tuple[str, str], ...], extra_flags: tuple[str, ...] = ()
) -> None:
  """Builds (or finds in the cache), loads and registers another library's FFI handlers, (target, symbol) pairs, for
  the CPU, compiled with FLAGS and `extra_flags`. Raises RuntimeError, OSError or AttributeError when that is
  impossible; the caller chooses its fallback."""
  compiler = _compiler()
  if compiler is None:
    raise RuntimeError('no C++ compiler found (set CXX, or install g++)')
  library = load_library(compiler, sources, stem, extra_flags)
  for target, symbol in targets:
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')


@functools.cache
def _load() -> bool:
  """Builds, loads and registers the kernel once a process; False (with one warning) where that is impossible."""
  compiler = _compiler()
  try:
    if compiler is None:
      raise RuntimeError('no C++ compiler found (set CXX, or install g++)')
    library = load_library(compiler)
    for target, symbol in [*(h for handlers in TARGETS.values() for h in handlers), *LSTM_TARGETS, *GRU_TARGETS]:
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as error:
    warnings.warn(
      f'layernorm: the native CPU layer-norm kernels are unavailable ({error}); using the XLA path, which is 1.5-4x '
      f'slower on CPU. Set {ENV_SWITCH}=0 to choose the XLA path and silence this warning.',
      RuntimeWarning,
      stacklevel=3,
    )
    return False
  return True


def available(dtype) -> bool:
  """Whether `forward` can run for input of `dtype` in this process: allowed, compiled for the dtype, and loaded."""
  return enabled() and supports(dtype) and _load()


def forward(
  x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, center: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Layer norm over the last axis of `x` by the kernel: returns (y, mean, rstd), the statistics of shape x.shape[:-1].

  With `center=False` it is RMS norm instead: the mean is taken as 0 (and returned as 0), rstd = 1 / sqrt(mean(x^2) +
  eps).

  `scale` and `bias` have shape (P, H) or (H,) (P = 1) and x's dtype; x's rows are P equal consecutive groups, group p
  normalized with parameter row p. rstd = 1 / sqrt(var + eps). Only for CPU (see `layernorm.ops`), after
  `available(x.dtype)`. Under `vmap` every operand gets the batch axis in front (`broadcast_all`), which is again
  consecutive groups of rows, one per parameter row, so batched parameters need no loop.
  """
  (target, _), _ = TARGETS[np.dtype(x.dtype)]
  stats = jax.ShapeDtypeStruct(x.shape[:-1], x.dtype)
  call = jax.ffi.ffi_call(target, (jax.ShapeDtypeStruct(x.shape, x.dtype), stats, stats), vmap_method='broadcast_all')
  return call(x, scale, bias, eps=np.float64(eps), center=bool(center))


def backward(x, mean, rstd, scale, dy, center: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The VJP of `forward`'s y at cotangent `dy`, from forward's statistics: returns (dx, dscale, dbias).

  `center` as in `forward`: False drops the mean(g) term of dx (RMS norm).

  Shapes as in `forward`: dscale and dbias have scale's shape, each summed over its group of rows.
  """
  _, (target, _) = TARGETS[np.dtype(x.dtype)]
  param = jax.ShapeDtypeStruct(scale.shape, x.dtype)
  call = jax.ffi.ffi_call(target, (jax.ShapeDtypeStruct(x.shape, x.dtype), param, param), vmap_method='broadcast_all')
  return call(x, mean, rstd, scale, dy, center=bool(center))


def lstm_step_forward(px, gh, c, h, lengths, t, params, eps: float, norm: str):
  """One LSTM step after its matmuls by the kernel (csrc/lstm_step_cpu.cc): returns the new (c, h) and the output y.

  px = W_x x and gh = W_h h, (B, 4H) float32; c, h (B, H); lengths (B,) and t () int32; params (22H,), the packed
  parameters of `layernorm.fused_lstm.pack`; norm one of `STEP_NORMS` ('none', 'ln', 'rms'). Rows with t >= lengths keep
  (c, h) and output 0. Only for CPU, after `available(np.float32)`. Under `vmap` the call runs once per batch element
  (`sequential`).
  """
  carry = jax.ShapeDtypeStruct(c.shape, np.float32)
  call = jax.ffi.ffi_call(LSTM_TARGETS[0][0], (carry, carry, carry), vmap_method='sequential')
  return call(px, gh, c, h, lengths, t, params, eps=np.float64(eps), **_step_norm(norm))


def lstm_step_backward(px, gh, c, dc, dh, dy, lengths, t, params, eps: float, norm: str):
  """The transpose of `lstm_step_forward` at cotangents (dc, dh) of its carry and dy of its output.

  Returns d px, d gh (B, 4H), d c_prev, the part of d h_prev that skips the step (B, H), and this step's sums over
  rows of the parameters' cotangents, packed as `params` (22H,).
  """
  gates = jax.ShapeDtypeStruct(px.shape, np.float32)
  carry = jax.ShapeDtypeStruct(c.shape, np.float32)
  shapes = (gates, gates, carry, carry, jax.ShapeDtypeStruct(params.shape, np.float32))
  call = jax.ffi.ffi_call(LSTM_TARGETS[1][0], shapes, vmap_method='sequential')
  return call(px, gh, c, dc, dh, dy, lengths, t, params, eps=np.float64(eps), **_step_norm(norm))


def gru_step_forward(px, gh, h, lengths, t, params, eps: float, norm: str):
  """One GRU step after its matmuls by the kernel (csrc/gru_step_cpu.cc): returns the new h and the output y.

  px = W_x x and gh = W_h h, (B, 3H) float32; h (B, H); lengths (B,) and t () int32; params (15H,), the packed
  parameters of `layernorm.fused_gru.PACKED`; norm as in `lstm_step_forward`. Rows with t >= lengths keep h and output
  0. Only for CPU, after `available(np.float32)`. Under `vmap` the call runs once per batch element (`sequential`).
  """
  carry = jax.ShapeDtypeStruct(h.shape, np.float32)
  call = jax.ffi.ffi_call(GRU_TARGETS[0][0], (carry, carry), vmap_method='sequential')
  return call(px, gh, h, lengths, t, params, eps=np.float64(eps), **_step_norm(norm))


def gru_step_backward(px, gh, h, dh, dy, lengths, t, params, eps: float, norm: str):
  """The transpose of `gru_step_forward` at cotangents dh of its carry and dy of its output.

  Returns d px, d gh (B, 3H), the part of d h_prev that skips the matmul (B, H), and this step's sums over rows of the
  parameters' cotangents, packed as `params` (15H,).
  """
  gates = jax.ShapeDtypeStruct(px.shape, np.float32)
  carry = jax.ShapeDtypeStruct(h.shape, np.float32)
  shapes = (gates, gates, carry, jax.ShapeDtypeStruct(params.shape, np.float32))
  call = jax.ffi.ffi_call(GRU_TARGETS[1][0], shapes, vmap_method='sequential')
  return call(px, gh, h, dh, dy, lengths, t, params, eps=np.float64(eps), **_step_norm(norm))
