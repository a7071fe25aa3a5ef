"""Checkpoints with Orbax, each with a SHA-256 digest of its arrays, checked on restore.

Orbax survives a SIGKILL mid-save (it writes to a temporary directory and renames it) but does not checksum array
data, so a checkpoint whose files were damaged later can restore silently wrong numbers. Each checkpoint therefore
holds two items: `state`, the arrays of the training state as one flat dict, and `meta`, JSON with the digest of those
arrays, their tree paths and whatever the loop adds (the data position, host-side metric sums). `restore_latest`
checks the digest and, if the latest checkpoint is corrupt, says so, moves it aside and uses the one before.

The state is saved flat (one entry per leaf, named by its tree path) rather than as its own pytree, so that any
pytree the loop holds (NNX states, optax's named tuples) saves and restores the same way, and so that a checkpoint
written by a different model is refused by name, not by an obscure shape error.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import logging as py_logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

CORRUPT_SUFFIX = '_corrupt'  # checkpoints/ -> checkpoints_corrupt/: where corrupt checkpoints are moved aside.
CORRUPT_DIR = 'checkpoints' + CORRUPT_SUFFIX


class _QuietOrbax(py_logging.Filter):
  """Drops Orbax's INFO records (a dozen lines per save) that would bury the progress line; keeps its warnings."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


_QUIET_ORBAX = _QuietOrbax()


class _SilentOrbax(py_logging.Filter):
  """Drops all of Orbax's records: while a checkpoint is being tried, its errors repeat what the loop reports once."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return f'{os.sep}orbax{os.sep}' not in record.pathname


# A failed read leaves TensorStore callbacks that fire on Orbax's closed event loop, each printing a traceback; several
# threads print at once, so their lines interleave and are dropped line by line.
_CLOSED_LOOP_LINES = (
  'Traceback (most recent call last):',
  'asyncio/base_events.py',
  'self._check_closed()',
  "raise RuntimeError('Event loop is closed')",
  'Event loop is closed',
)


# The first line of an absl log record (I/W/E/F, MMDD): a record runs from one to the next.
_LOG_RECORD_START = re.compile(r'^[IWEF]\d{4} ', re.MULTILINE)


def _without_closed_loop_noise(text: str) -> str:
  """The captured output without the failed read's noise: whole log records carrying a traceback or TensorStore's
  spec (a future's unretrieved exception, logged by asyncio or concurrent.futures when it is collected), and the
  closed-event-loop tracebacks TensorStore's threads print line by line."""
  starts = [m.start() for m in _LOG_RECORD_START.finditer(text)]
  if starts:
    bounds = [0, *starts, len(text)] if starts[0] else [*starts, len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    noisy = lambda piece: _LOG_RECORD_START.match(piece) and ('Traceback' in piece or 'tensorstore_spec' in piece)
    text = ''.join(piece for piece in pieces if not noisy(piece))
  if 'Event loop is closed' not in text:
    return text
  return ''.join(line for line in text.splitlines(True) if not any(s in line for s in _CLOSED_LOOP_LINES))


@contextlib.contextmanager
def _quiet_restores() -> Iterator[None]:
  """Silences Orbax's logging and the closed-event-loop tracebacks while checkpoints are tried; keeps other output.

  The tracebacks are printed to file descriptor 2 by TensorStore's threads, past Python's logging, so the descriptor
  is captured and replayed afterwards without them (a failing restore of a large model prints hundreds of lines).
  """
  loggers = [logging.get_absl_logger(), py_logging.getLogger()]
  silent = _SilentOrbax()
  for logger in loggers:
    logger.addFilter(silent)
  # A failed read of several arrays at once leaves futures whose exceptions nobody retrieves; when they are collected,
  # asyncio or concurrent.futures logs each at ERROR with its traceback (and TensorStore's JSON spec). The loop reports
  # the failure once, so those loggers are off while checkpoints are tried, the futures are collected before they are
  # on again, and any such record that still reaches the captured output is dropped from it.
  noisy_loggers = [py_logging.getLogger(name) for name in ('asyncio', 'concurrent.futures')]
  were_disabled = [logger.disabled for logger in noisy_loggers]
  for logger in noisy_loggers:
    logger.disabled = True
  sys.stderr.flush()
  saved_fd = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      gc.collect()
      for logger, was_disabled in zip(noisy_loggers, were_disabled, strict=True):
        logger.disabled = was_disabled
      sys.stderr.flush()
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
      for logger in loggers:
        logger.removeFilter(silent)
      capture.seek(0)
      kept = _without_closed_loop_noise(capture.read().decode(errors='replace'))
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


def _short_reason(error: Exception) -> str:
  """The first line of an error, without TensorStore's JSON specs (kilobytes per array), at most ~200 characters."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ''
  text = f'{type(error).__name__}: {text.split(" [tensorstore_spec")[0]}'
  return text if len(text) <= 200 else text[:197] + '...'


class CheckpointMismatchError(RuntimeError):
  """A checkpoint holds a different set of arrays than the state being restored (the model or optimizer changed)."""


def flat_names(tree: Any) -> list[str]:
  """One readable, unique name per leaf of `tree`, in its flattening order (e.g. '0003_params_fc1_kernel_value')."""
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  return [f'{i:04d}_' + re.sub(r'[^A-Za-z0-9]+', '_', p).strip('_') for i, p in enumerate(paths)]


def to_host(x: jax.Array | np.ndarray) -> np.ndarray:
  """A NumPy copy of a (possibly replicated, possibly multi-host) array; the training state is fully replicated."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


def sync_processes(name: str) -> None:
  """Waits until every process of a multi-process run reaches the barrier `name` (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def digest(arrays: list[np.ndarray], names: list[str]) -> str:
  """SHA-256 over each array's name, dtype, shape and bytes, in order."""
  h = hashlib.sha256()
  for name, a in zip(names, arrays, strict=True):
    a = np.ascontiguousarray(a)
    h.update(f'{name}|{a.dtype.str}|{a.shape}|'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


class Checkpointer:
  """Saves and restores one training-state pytree (plus JSON metadata) in `directory`, keeping the newest few.

  Args:
    directory: where the checkpoints go (`<workdir>/checkpoints`).
    max_to_keep: how many of the newest checkpoints to keep; 2 or more lets a corrupt one fall back (None: all, for
      a caller that deletes them itself).
    keep_period: checkpoints at steps that are multiples of this are never deleted (None: none are kept for good).
    read_only: never create, move or delete anything (for `load_model` on a finished or running run).
  """

  def __init__(
    self, directory: str, max_to_keep: int | None = 3, *, keep_period: int | None = None, read_only: bool = False
  ):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    absl_logger = logging.get_absl_logger()
    if _QUIET_ORBAX not in absl_logger.filters:
      absl_logger.addFilter(_QUIET_ORBAX)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      keep_period=keep_period or None,  # Orbax keeps these besides the newest `max_to_keep`.
      # Synchronous: the digest is taken from the same host copy, and a finished `save` is a durable checkpoint.
      enable_async_checkpointing=False,
      create=not read_only,
      read_only=read_only,
      cleanup_tmp_directories=not read_only,  # Left by a process killed mid-save; never a usable checkpoint.
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'meta'))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, tree: Any, meta: dict) -> None:
    """Saves `tree` (arrays) at `step` with `meta` (JSON-able) and the digest of the arrays."""
    leaves = jax.tree.leaves(tree)
    names = flat_names(tree)
    host = [to_host(x) for x in leaves]
    meta = dict(meta, step=int(step), names=names, digest=digest(host, names))
    flat = dict(zip(names, leaves, strict=True))
    self._manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)), force=True
    )
    self._manager.wait_until_finished()

  def meta(self, step: int) -> dict:
    """The JSON metadata saved with the checkpoint at `step` (without reading its arrays)."""
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def delete(self, step: int) -> None:
    """Deletes the checkpoint at `step` (every process calls it: Orbax deletes on one and waits for all)."""
    self._manager.delete(step)

  def restore(self, step: int, abstract_tree: Any) -> tuple[Any, dict]:
    names = flat_names(abstract_tree)
    leaves, treedef = jax.tree.flatten(abstract_tree)
    meta = self.meta(step)
    if meta.get('names') != names:
      saved, wanted = set(meta.get('names') or ()), set(names)
      raise CheckpointMismatchError(
        f'The checkpoint at step {step} in {self.directory} holds different arrays than this model and optimizer '
        f'(only in the checkpoint: {sorted(saved - wanted)[:5]}; only in the model: {sorted(wanted - saved)[:5]}). '
        'Was the code or config changed? Use a new workdir for a different model.'
      )
    abstract_flat = dict(zip(names, leaves, strict=True))
    restored = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_flat), meta=ocp.args.JsonRestore())
    )
    flat = restored['state']
    arrays = [flat[n] for n in names]
    actual = digest([to_host(a) for a in arrays], names)
    if actual != meta['digest']:
      raise ValueError(
        f'digest mismatch: the arrays hash to {actual[:12]}..., the checkpoint recorded {meta["digest"][:12]}...'
      )
    return jax.tree.unflatten(treedef, arrays), meta

  def restore_latest(self, abstract_tree: Any) -> tuple[Any, dict] | None:
    """Restores the newest checkpoint whose arrays match their digest, or returns None if there is none.

    Args:
      abstract_tree: the state's structure, with `jax.ShapeDtypeStruct` leaves carrying the wanted shardings.

    Returns:
      (state tree, meta dict) or None.

    Raises:
      CheckpointMismatchError: the checkpoint is intact but belongs to a different model or optimizer.
    """
    reports = []  # Logged once the output is no longer captured.
    try:
      with _quiet_restores():
        return self._restore_newest_good(abstract_tree, reports)
    finally:
      for report in reports:
        logging.warning(report)

  def _restore_newest_good(self, abstract_tree: Any, reports: list[str]) -> tuple[Any, dict] | None:
    for step in reversed(self.steps()):
      try:
        return self.restore(step, abstract_tree)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # Any failure to read a checkpoint back means it is unusable.
        reason = _short_reason(e)
      moved = self._set_aside(step)
      where = f'moved it to {moved}' if moved else 'left it in place (read-only)'
      reports.append(
        f'The checkpoint at step {step} in {self.directory} is corrupt ({reason}); {where}; trying the one before.'
      )
      gc.collect()  # Lets the failed read's pending TensorStore callbacks fire (and print) while output is captured.
    return None

  def _set_aside(self, step: int) -> str | None:
    """Moves a corrupt checkpoint out of Orbax's sight (kept for inspection), so that its step can be saved again.

    Returns:
      Where it went, or None for a read-only checkpointer (which leaves it).
    """
    if self.read_only:
      return None
    target = os.path.join(self.directory + CORRUPT_SUFFIX, str(step))
    if jax.process_index() == 0:
      if os.path.exists(target):
        shutil.rmtree(target)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    sync_processes(f'checkpoint_set_aside_{step}')
    self._manager.reload()
    return target

  def close(self) -> None:
    self._manager.close()
