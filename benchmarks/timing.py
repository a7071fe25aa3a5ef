"""Side-by-side timing of callables in one process: ratios, not absolute times, are what survive a shared machine.

Every candidate is warmed up (compiled and run) first, then sampled round-robin: one sample of each candidate in
turn, so that a burst of load from another process slows all candidates alike instead of whichever happened to be
running. Each sample times `number` back-to-back calls, each waited on with `block_until_ready`, with the garbage
collector off, and reports the time per call.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

import jax


@dataclasses.dataclass(frozen=True)
class Samples:
  """Seconds per call, one entry per sample."""

  seconds: tuple[float, ...]

  @property
  def min(self) -> float:
    return min(self.seconds)

  @property
  def median(self) -> float:
    return statistics.median(self.seconds)

  @property
  def max(self) -> float:
    return max(self.seconds)


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
  """Turns the garbage collector off for the block (a collection inside a sample is noise, not cost)."""
  was_enabled = gc.isenabled()
  gc.collect()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


def _call_blocked(fn: Callable[[], object], number: int) -> float:
  start = time.perf_counter()
  for _ in range(number):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / number


def calls_per_sample(fn: Callable[[], object], min_sample_seconds: float) -> int:
  """How many back-to-back calls make one sample last at least `min_sample_seconds` (timer resolution)."""
  per_call = min(_call_blocked(fn, 1) for _ in range(3))
  return max(1, int(min_sample_seconds / max(per_call, 1e-9)) + 1)


def compare(
  fns: Mapping[str, Callable[[], object]],
  *,
  repeats: int = 30,
  warmup: int = 3,
  min_sample_seconds: float = 2e-3,
) -> dict[str, Samples]:
  """Times zero-argument callables side by side.

  Args:
    fns: name -> a callable that runs the computation once (e.g. a jitted function closed over its inputs). Its
      result is waited on with `jax.block_until_ready`, so it may return JAX arrays, PyTorch tensors or None.
    repeats: samples per candidate.
    warmup: untimed calls per candidate before sampling (the first one compiles).
    min_sample_seconds: each sample runs enough calls to last at least this long.

  Returns:
    name -> Samples (seconds per call).
  """
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  number = {name: calls_per_sample(fn, min_sample_seconds) for name, fn in fns.items()}
  seconds: dict[str, list[float]] = {name: [] for name in fns}
  with gc_disabled():
    for _ in range(repeats):
      for name, fn in fns.items():
        seconds[name].append(_call_blocked(fn, number[name]))
  return {name: Samples(tuple(s)) for name, s in seconds.items()}


def allocator() -> str:
  """Which malloc the process runs on, and how (experiments.allocator)."""
  from experiments import allocator as experiments_allocator

  return experiments_allocator.describe()


def text_table(
  header: Sequence[str], lines: Sequence[Sequence[str]], text_columns: Collection[int], group_by: int = 0
) -> str:
  """A plain-text table: `text_columns` left-aligned, the numbers right-aligned, columns two spaces apart.

  A blank line separates groups of lines whose first `group_by` cells differ (0: no blank lines), so that each
  configuration's candidates read as one block.
  """
  widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

  def fmt(cells):
    pairs = enumerate(zip(cells, widths, strict=True))
    return '  '.join(c.ljust(w) if i in text_columns else c.rjust(w) for i, (c, w) in pairs)

  out = [fmt(header), fmt(['-' * w for w in widths])]
  for previous, line in zip([None, *lines[:-1]], lines, strict=True):
    if group_by and previous is not None and tuple(line[:group_by]) != tuple(previous[:group_by]):
      out.append('')
    out.append(fmt(line))
  return '\n'.join(out)


def positive_int(text: str) -> int:
  """An argparse type: an integer of at least 1."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f'expected an integer of at least 1; got {text!r}')
  return value


def add_sampling_arguments(parser: argparse.ArgumentParser, *, repeats: int, warmup: int) -> None:
  """The flags every benchmark takes: --repeats, --warmup (both at least 1) and --json."""
  parser.add_argument(
    '--repeats', type=positive_int, default=repeats, help='samples per candidate (min/median/max over these)'
  )
  parser.add_argument('--warmup', type=positive_int, default=warmup, help='untimed calls per candidate before sampling')
  parser.add_argument('--json', metavar='OUT', help='also write every sample and the environment to this file')


def print_results(env: dict, table: str, *legend: str) -> None:
  """The table, the lines that say how to read it, and the load average at the end (recorded in `env`)."""
  env['loadavg_end'] = os.getloadavg()
  print()
  print(table)
  print()
  for line in legend:
    print(line)
  print(f'load average at the end: {env["loadavg_end"]}')


def print_header(title: str, env: dict, software: str, sampling: str) -> None:
  """The lines every benchmark starts with: what ran, on what, with which allocator, and the load when it started.

  Records the load average in `env['loadavg_start']`: on a shared machine it is what says how far to trust a run.
  """
  env['loadavg_start'] = os.getloadavg()
  print(f'# {title}, {env["date"]}')
  print(f'# {env["cpu"]}, {env["cpus_usable"]} usable CPUs; allocator: {env["allocator"]}')
  print(f'# jax {env["jax"]} ({env["jax_device"]}), flax {env["flax"]}{software}')
  print(f'# {sampling}, round-robin; load average {env["loadavg_start"]}')
  sys.stdout.flush()


def write_json(path: str | None, payload: dict) -> None:
  """Writes every sample and the environment to `path` (nothing if None), for figures to be re-read later."""
  if path:
    with open(path, 'w') as f:
      json.dump(payload, f, indent=1)
    print(f'\nwrote {path}')
