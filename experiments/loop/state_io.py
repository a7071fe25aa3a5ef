"""The run's state on disk: claiming a workdir and loading a model back from a workdir (the best one: `best`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from experiments import workdir as wd
from experiments.loop import best as best_lib
from experiments.loop import checkpoints
from experiments.loop import state as state_lib
from experiments.loop.task import Task


def config_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json(indent=2, sort_keys=True)


# Fields whose change only makes the run longer: the steps already taken are the same, so they stay as they are.
EXTENDABLE_FIELDS = ('num_epochs', 'num_train_steps')


def open_workdir(config: ml_collections.ConfigDict, workdir: str, total_steps: int | None = None) -> dict | None:
  """Checks that `workdir` is new, empty, or holds this run (or a shorter one to extend); returns its status.

  Args:
    config: the config to run.
    workdir: the run's directory.
    total_steps: the steps `config` trains for; a saved run of fewer steps, whose config differs only in the length
      fields, is extended (None: refuse any difference).

  Returns:
    None for a new run; else the saved status, with 'extends' set to the differing fields for a run to extend.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise wd.WorkdirError(f'--workdir {workdir} is a file, not a directory. Fix: name a new or existing directory.')
  saved = wd.read_saved_config(workdir)
  if saved is not None:
    status = wd.read_status(workdir) or {'status': 'running', 'step': 0}
    diff = wd.config_differences(saved, json.loads(config_json(config)))
    if diff:
      _check_extension(workdir, diff, saved, status, total_steps)
      status = dict(status, extends=diff)
    return status
  if os.path.isdir(workdir) and set(os.listdir(workdir)) - {wd.LOCK_FILE}:
    raise wd.WorkdirError(
      f'{workdir} is not empty and holds no run ({wd.CONFIG_FILE} is missing). Fix: name a new or empty --workdir.'
    )
  return None


def _check_extension(workdir: str, diff: list, saved: dict, status: dict, total_steps: int | None) -> None:
  """Raises WorkdirError unless `diff` only lengthens the saved run's schedule, naming the fields and the reason."""
  shown = '; '.join(f'{k}: {old!r} in the workdir, {new!r} now' for k, old, new in diff)
  others = [k for k, _, _ in diff if k not in EXTENDABLE_FIELDS]
  fix = 'Fix: use a new --workdir for a new config, or the original config to resume.'
  if others:
    raise wd.WorkdirError(
      f'{workdir} holds a run with a different config ({shown}). Re-running resumes the same config, or extends it '
      f'with a larger num_epochs or num_train_steps; {", ".join(others)} cannot change. {fix}'
    )
  old_total = status.get('total_steps')
  if total_steps is None or old_total is None or total_steps < old_total:
    raise wd.WorkdirError(
      f'{workdir} holds a run of {old_total} steps; this config ({shown}) trains for {total_steps}. A run can be '
      f'extended, not shortened (its logs past the new end would stay). {fix}'
    )
  schedule = saved.get('optimizer', {}).get('schedule', 'constant')
  if schedule != 'constant':
    raise wd.WorkdirError(
      f'{workdir} holds a run with optimizer.schedule={schedule!r}, whose learning rate decays over the total steps: '
      f'a longer run ({shown}) would have used other rates from its first step, so it cannot be extended. {fix}'
    )


@contextlib.contextmanager
def claim(config: ml_collections.ConfigDict, workdir: str, task: Task, *, new: bool, is_writer: bool) -> Iterator[None]:
  """Holds the workdir's lock for the run; a new run's process 0 first writes config.json and task.json.

  Only process 0 takes the lock, and every process learns whether it got it: were process 0 to stop here alone,
  the others would wait in their first collective until jax's shutdown timeout (5 minutes) and then abort.
  """
  lock = error = None
  if is_writer:
    try:
      os.makedirs(workdir, exist_ok=True)
      lock = wd.lock(workdir)
    except (OSError, wd.WorkdirError) as e:
      error = e
  if not _process_0_says(error is None):
    if error is not None:
      raise error
    raise wd.WorkdirError(f'Process 0 could not claim {workdir}; its error message says why and what to do.')
  if not is_writer:
    yield
    return
  try:
    if task.metadata:
      wd.write_json(os.path.join(workdir, wd.TASK_FILE), dict(task.metadata))
    if new:
      wd.atomic_write(os.path.join(workdir, wd.CONFIG_FILE), config_json(config) + '\n')
    yield
  finally:
    lock.close()


def _process_0_says(value: bool) -> bool:
  """`value` as process 0 has it, on every process (`value` itself with one process)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils

  return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def merge_eval(parts: state_lib.Parts, state: dict) -> nnx.Module:
  """The model of `state` in eval mode."""
  return nnx.merge(parts.eval_def, state['params'], state['rest'])


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir."""
  saved = wd.read_saved_config(workdir)
  if saved is None:
    raise FileNotFoundError(f'{os.path.join(workdir, wd.CONFIG_FILE)} not found: is {workdir} a workdir of a run?')
  return ml_collections.ConfigDict(saved)


def _total_steps(config: ml_collections.ConfigDict) -> int:
  # The schedule's length changes only the learning rate's values, never the state's structure.
  return max(config.get('num_train_steps', -1), 1)


def init_model(config: ml_collections.ConfigDict, task_or_build_model: Task | Callable) -> nnx.Module:
  """The model, in train mode, exactly as a run of `config` starts from (for golden-value tests and scripts)."""
  build_model = task_or_build_model.build_model if isinstance(task_or_build_model, Task) else task_or_build_model
  parts = state_lib.build(config, build_model, _total_steps(config))
  state = state_lib.initial_state(parts, config.seed)
  return nnx.merge(parts.train_def, state['params'], state['rest'])


def load_model(
  workdir: str, task_or_build_model: Task | Callable[[nnx.Rngs], nnx.Module], which: str | int = 'latest'
) -> nnx.Module:
  """A model from `workdir`, in eval mode, on the first local device.

  Args:
    workdir: a run's workdir (finished or not); nothing in it is changed.
    task_or_build_model: the run's Task, or just its `build_model`.
    which: 'latest' (the newest good checkpoint), 'best' (the selected model of a run with `best_metric`), or a
      step whose checkpoint was kept.

  Returns:
    The model with the checkpoint's parameters and other variables (BatchNorm statistics).
  """
  config = read_config(workdir)
  build_model = task_or_build_model.build_model if isinstance(task_or_build_model, Task) else task_or_build_model
  parts = state_lib.build(config, build_model, _total_steps(config))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = state_lib.abstract_on(parts, device)
  if which == 'best':
    record = wd.read_best(workdir)
    if record is None:
      raise FileNotFoundError(f'{workdir} has no best model ({wd.BEST_FILE} is missing): did it set best_metric?')
    checkpointer, step = best_lib.best_checkpointer(workdir, read_only=True), int(record['step'])
  else:
    checkpointer = checkpoints.Checkpointer(os.path.join(workdir, wd.CHECKPOINT_DIR), read_only=True)
    step = which
  try:
    if step == 'latest':
      restored = checkpointer.restore_latest(abstract)
    elif isinstance(step, int) and step in checkpointer.steps():
      restored = checkpointer.restore(step, abstract)
    else:
      raise FileNotFoundError(f'No checkpoint at step {step!r} in {workdir}; kept steps: {checkpointer.steps()}.')
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f'No usable checkpoint in {os.path.join(workdir, wd.CHECKPOINT_DIR)}.')
  state: dict[str, Any] = restored[0]
  return merge_eval(parts, state)
