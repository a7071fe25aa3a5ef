"""The one training loop every experiment shares: `train(config, workdir, task)`.

An experiment supplies a `Task` (model, loss, evaluation, data); the loop does everything else the same way for all:

* Steps. One jitted function runs `steps_per_dispatch` training steps in a `lax.scan` over a stack of batches (at
  batch size 4 the per-call overhead would otherwise dominate) and donates the training state. A step's randomness is
  `fold_in(key, step)`; the batch a step sees is a function of (seed, step) (`experiments.loop.schedule`).
* Stops. Logging, evaluation, model selection and checkpointing happen at "stop points" (`step % every == 0` or the
  last step); a dispatch never crosses one. Between stop points the host only enqueues work: per-step metrics stay on
  the device until the next stop point fetches them, checks them for NaN/Inf and averages them.
* Devices and hosts. Data-parallel over all devices: a 1-D mesh, the batch sharded along it, the state replicated.
  With several processes each builds only its own rows of a batch, and only process 0 writes logs.
* Workdir (`experiments.loop.workdir`). Re-running the same command resumes from the last good checkpoint and ends
  bit-identical (on CPU) to an uninterrupted run.
* Model selection. With `config.best_metric`, the best checkpoint is kept in `checkpoints_best/`, its value and step
  in `best.json`, and the end of the run logs `best/*`: every evaluation on the best model.
"""

from __future__ import annotations

import datetime
import functools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import workdir as wd
from experiments.epochs import format_epoch
from experiments.loop import best as best_lib
from experiments.loop import checkpoints, evaluation, interrupts, metrics, progress, state_io, steps
from experiments.loop import data as data_lib
from experiments.loop import state as state_lib
from experiments.loop.config_checks import default_best_mode, validate_training_config
from experiments.loop.errors import ConfigError, DivergedError, Interrupted, WorkdirError
from experiments.loop.metric_writers import MetricWriter, check_finished_log
from experiments.loop.schedule import Schedule, chunk_size
from experiments.loop.task import Task


def train(config: ml_collections.ConfigDict, workdir: str, task: Task) -> dict[str, float]:
  """Trains `task` per `config` in `workdir` (resuming it if it holds this run), evaluating as the config says.

  Args:
    config: a ConfigDict with the fields of `configs.common.base_config()`.
    workdir: the run's directory (created if needed).
    task: the experiment's model, loss, evaluation and data.

  Returns:
    The final metrics: the values logged at the last step ('train/...', 'train_epoch/...', 'eval/<split>/...', and
    'best/...' for a run that selects a model).

  Raises:
    ConfigError: an invalid config value.
    WorkdirError: the workdir holds something else or is in use.
    DivergedError: a NaN or Inf loss or norm (status 'diverged'; the last good checkpoint and the logs stay).
    Interrupted: SIGINT or SIGTERM; the run stopped at a checkpoint of the step it had reached (status 'interrupted').
  """
  validate_training_config(config)
  run = _Run(config, workdir, task)
  status = state_io.open_workdir(config, workdir, run.schedule.total_steps)
  # Every process reads the workdir before process 0 claims it (lock, config.json): all then agree it is new.
  checkpoints.sync_processes('open_workdir')
  extends = status is not None and 'extends' in status
  if extends:
    changed = ', '.join(f'{k} {old!r} -> {new!r}' for k, old, new in status['extends'])
    logging.info(
      'Extending %s from %d to %d steps (%s).', workdir, status['total_steps'], run.schedule.total_steps, changed
    )
  elif status is not None and status['status'] == 'done':
    if run.is_writer:
      check_finished_log(workdir, status)  # A damaged log is said and repaired, never kept silently.
    logging.info('%s is already done (step %d): %s', workdir, status['step'], metrics.summary(status['metrics']))
    return status['metrics']
  if status is not None and status['status'] == 'diverged':
    raise DivergedError(
      f'The run in {workdir} diverged earlier: {status["message"]} Re-running would diverge again. '
      'Fix: start a new --workdir with a changed config (e.g. a lower --config.optimizer.learning_rate).'
    )
  # An extended run's config.json is rewritten under the lock: it is the config the workdir now holds.
  claim = state_io.claim(config, workdir, task, new=status is None or extends, is_writer=run.is_writer)
  with claim, interrupts.catch_signals() as stopper:
    return run.go(stopper)


class _Run:
  """One run's fixed parts (data, schedule, mesh, compiled steps) and its loop, phase by phase."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, task: Task):
    self.config, self.workdir, self.task = config, workdir, task
    self.train_source = data_lib.as_source(task.train_data, 'train_data')
    self.eval_sources = {s: data_lib.as_source(d, f'eval_data[{s!r}]') for s, d in task.eval_data.items()}
    unknown = set(task.final_only) - set(self.eval_sources) - set(task.evaluators)
    if unknown:
      raise ValueError(f'Task.final_only names {sorted(unknown)}, which are neither eval splits nor evaluators.')
    self.schedule = Schedule.from_config(config, len(self.train_source))
    devices = jax.devices()
    if config.batch_size % len(devices):
      raise ConfigError(
        f'config.batch_size={config.batch_size} must be a multiple of the {len(devices)} devices the batch is split '
        f'over. Fix: --config.batch_size={len(devices) * max(1, config.batch_size // len(devices))}.'
      )
    self.num_devices = len(devices)
    self.mesh = jax.sharding.Mesh(np.array(devices), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.stacked = NamedSharding(self.mesh, P(None, 'data'))
    self.is_writer = jax.process_index() == 0
    self.best_metric = config.best_metric
    self.best_mode = config.best_mode or (default_best_mode(self.best_metric) if self.best_metric else '')
    self.order = functools.lru_cache(maxsize=2)(
      lambda epoch: data_lib.epoch_order(self.train_source, config.seed, epoch)
    )

  # -- Set-up ----------------------------------------------------------------------------------------------------------

  def go(self, stopper: interrupts.Stopper | None = None) -> dict[str, float]:
    config, schedule = self.config, self.schedule
    self.stopper = stopper or interrupts.Stopper()
    self.parts = state_lib.build(config, self.task.build_model, schedule.total_steps)
    self.checkpointer = checkpoints.Checkpointer(
      os.path.join(self.workdir, wd.CHECKPOINT_DIR),
      max_to_keep=config.checkpoints_to_keep,
      keep_period=schedule.keep_every or None,
    )
    self.writer = None
    self.best_store = None
    if self.best_metric:
      self.best_store = best_lib.BestStore(self.workdir, self.best_metric, self.best_mode, is_writer=self.is_writer)
    try:
      state, meta = self._restore_or_init()
      if self.best_store is not None:
        meta['best'] = self.best_store.roll_back(meta['best'], int(checkpoints.to_host(state['step'])))
      self.writer = MetricWriter(self.workdir, int(checkpoints.to_host(state['step'])), enabled=self.is_writer)
      opt_key = steps.optimizer_key(config.optimizer, schedule.total_steps)
      self.train_chunk, self.eval_batch = steps.jitted_steps(
        self.task.loss_fn, self.task.eval_fn, self.parts.train_def, self.parts.eval_def, opt_key, self.mesh
      )
      self.eval_key = jax.random.key_data(state_lib.eval_key(config.seed))
      state = self._loop(state, meta)
      return self._finish(state)
    finally:
      if self.writer is not None:
        self.writer.close()
      if self.best_store is not None:
        self.best_store.close()
      self.checkpointer.close()

  def _restore_or_init(self) -> tuple[dict[str, Any], dict]:
    schedule = self.schedule
    restored = self.checkpointer.restore_latest(state_lib.abstract_on(self.parts, self.replicated))
    if restored is None:
      state = state_lib.initial_state(self.parts, self.config.seed, self.replicated)
      logging.info(
        'Starting a new run in %s: %d steps of batch %d (%d per epoch), %d device(s).',
        self.workdir,
        schedule.total_steps,
        self.config.batch_size,
        schedule.steps_per_epoch,
        self.num_devices,
      )
      return state, {'window': {}, 'since_eval': {}, 'best': None}
    state, meta = restored
    if meta['data_position'] != list(divmod(meta['step'], schedule.steps_per_epoch)):
      raise WorkdirError(
        f'The checkpoint at step {meta["step"]} has data position {meta["data_position"]}, '
        'which this config does not reproduce. Fix: use a new --workdir.'
      )
    logging.info('Resuming %s from step %d of %d.', self.workdir, meta['step'], schedule.total_steps)
    return state, meta

  # -- Training --------------------------------------------------------------------------------------------------------

  def _loop(self, state: dict, meta: dict) -> dict:
    schedule = self.schedule
    step = int(checkpoints.to_host(state['step']))
    self.window = metrics.Means(**meta['window'])
    self.since_eval = metrics.Means(**meta['since_eval'])
    self.best = meta.get('best')  # {'value', 'step'} of the best evaluation so far, or None.
    self.best_of = {}  # Regular checkpoint's step -> the best step it records (None: none), read once each.
    self.timer = progress.Throughput()
    self.compiled_sizes = set()  # Chunk sizes this process has called the train step with (compiled).
    # The newest value of every metric logged so far, for status.json at every stop point.
    self.latest = {k: v for r in self.writer.rows for k, v in r.items() if k != 'step'}
    self._status('running', step, self.latest)
    while step < schedule.total_steps:
      stop = schedule.next_stop(step)
      pending = []  # (first step, per-step metrics still on the device)
      while step < stop:
        # Greedy sizes depend only on the steps left to the stop point: a run resumed from an interrupt's checkpoint
        # (a dispatch boundary) dispatches, and computes, exactly as the uninterrupted run.
        n = chunk_size(stop - step, self.config.steps_per_dispatch)
        state, step_metrics = self._dispatch(state, step, n)
        pending.append((step, step_metrics))
        step += n
        if step < stop and self._stop_requested(at_stop_point=False):
          break
      if step == stop:
        self._at_stop(state, step, pending)
        pending = []
      if self._stop_requested(at_stop_point=step == stop):
        self._interrupt(state, step, pending)
    return state

  def _dispatch(self, state: dict, step: int, n: int) -> tuple[dict, dict]:
    """Enqueues steps step + 1 ... step + n; the first call of a chunk size compiles, and is kept out of the ETA."""
    idx = self.schedule.indices(step, n, self.order)
    batches = data_lib.put_global(self.train_source, idx, self.stacked, 1, _build_stack)
    compiles = n not in self.compiled_sizes
    if compiles:
      jax.block_until_ready(state)  # So that the call's time is compilation, not waiting for earlier steps.
      t0 = time.perf_counter()
    state, step_metrics = self.train_chunk(state, batches)
    if compiles:
      self.compiled_sizes.add(n)
      self.timer.exclude(time.perf_counter() - t0)
    return state, step_metrics

  def _take(self, pending: list) -> None:
    """Fetches and checks the pending metrics (this waits for the device) and adds them to the running means."""
    fetched = [(first, jax.tree.map(checkpoints.to_host, m)) for first, m in pending]
    self.timer.stop(sum(len(m['loss']) for _, m in fetched))
    for first, m in fetched:
      bad = metrics.first_non_finite(first, m)
      if bad is not None:
        self._diverged(*bad)
      self.window.add(m)
      self.since_eval.add(m)

  def _at_stop(self, state: dict, step: int, pending: list) -> None:
    """Fetches and checks the metrics, then logs, evaluates, selects, checkpoints."""
    self._take(pending)
    row = {}
    if self.schedule.is_log(step):
      row.update(self._log_row(step))
    if self.schedule.is_eval(step):
      row.update(self._eval_row(state, step))
    if row:
      self.writer.write(step, row)
    if self.schedule.is_checkpoint(step):
      self._checkpoint(state, step)
    self.latest.update(row)
    self._status('running', step, self.latest)
    self.timer.start()

  def _checkpoint(self, state: dict, step: int) -> None:
    self.writer.sync()  # The logs must never lag behind a checkpoint: a resume truncates rows to the checkpoint.
    meta = {
      'data_position': list(divmod(step, self.schedule.steps_per_epoch)),  # [epoch, batches done in it]
      # The running means travel with the checkpoint, so that a checkpoint between log steps changes no logged row.
      'window': self.window.state(),
      'since_eval': self.since_eval.state(),
      'best': self.best,
    }
    self.checkpointer.save(step, state, meta)
    if self.best_store is not None:
      self.best_of[step] = self.best and self.best['step']
      self.best_store.prune(self._resumable_bests())

  def _resumable_bests(self) -> set[int]:
    """The best steps a resume may roll back to: the current one and those the newest regular checkpoints record."""
    keep = {self.best['step']} if self.best is not None else set()
    for step in self.checkpointer.steps()[-self.config.checkpoints_to_keep :]:
      if step not in self.best_of:
        try:
          self.best_of[step] = (self.checkpointer.meta(step).get('best') or {}).get('step')
        except Exception:  # An unreadable checkpoint is no resume point: it is set aside when a resume meets it.
          self.best_of[step] = None
      keep.add(self.best_of[step])
    keep.discard(None)
    return keep

  # -- Interrupts (experiments.loop.interrupts) ------------------------------------------------------------------------

  def _stop_requested(self, *, at_stop_point: bool) -> bool:
    if jax.process_count() == 1:
      return self.stopper.requested
    if not at_stop_point:
      return False  # Every process must stop at the same step, and agreeing takes a collective: stop points only.
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(self.stopper.requested))))

  def _interrupt(self, state: dict, step: int, pending: list) -> None:
    """Makes `step` a stop point that logs nothing new: checkpoints it (unless done), records it, raises Interrupted."""
    self._take(pending)
    if step not in self.checkpointer.steps():
      self._checkpoint(state, step)
    name = self.stopper.name or 'a signal'
    message = f'Interrupted ({name}) at step {step}; re-run the same command to resume.'
    self._status('interrupted', step, self.latest, message=message)
    logging.info('%s: checkpoint at step %d written.', name, step)
    raise Interrupted(message, step, name)

  def _diverged(self, step: int, values: str) -> None:
    saved = self.checkpointer.steps()
    logged = [r['step'] for r in self.writer.rows]
    if saved:
      kept = f'The last good checkpoint (step {saved[-1]}) and the logs up to it stay in {self.workdir}.'
    elif logged:
      kept = f'No checkpoint was written yet; the logs up to step {logged[-1]} stay in {self.workdir}.'
    else:
      kept = f'Nothing was checkpointed or logged yet in {self.workdir}.'
    message = f'Diverged: a NaN or Inf at step {step} ({values}). {kept}'
    self._status('diverged', step, self.latest, message=message)
    raise DivergedError(message)

  def _log_row(self, step: int) -> dict[str, float]:
    steps_per_sec = self.timer.rate()
    row = {
      **self.window.means('train'),
      'perf/steps_per_sec': steps_per_sec,
      'perf/examples_per_sec': steps_per_sec * self.config.batch_size,
    }
    logging.info(
      'step %d/%d  epoch %s  loss %.5g  %.1f steps/s  %.0f examples/s  ETA %s',
      step,
      self.schedule.total_steps,
      format_epoch(step / self.schedule.steps_per_epoch),
      row['train/loss'],
      steps_per_sec,
      steps_per_sec * self.config.batch_size,
      self._eta(step),
    )
    self.window = metrics.Means()
    self.timer.reset_window()
    return row

  def _eta(self, step: int) -> datetime.timedelta | str:
    seconds = self.timer.eta_seconds(self.schedule.total_steps - step)
    return '?' if seconds is None else datetime.timedelta(seconds=round(seconds))

  # -- Evaluation and model selection ----------------------------------------------------------------------------------

  def _evaluate(self, state: dict, step: int, names: set[str], *, final: bool) -> dict[str, float]:
    results = {}
    if self.task.eval_fn is not None:
      splits = [s for s in self.eval_sources if s in names]
      results.update(
        evaluation.evaluate_splits(
          state, step, self.eval_sources, splits, self.eval_batch, self.eval_key, self.config.eval_batch_size, self.mesh
        )
      )
    if any(name in names for name in self.task.evaluators):
      model = state_io.merge_eval(self.parts, state)
      context = evaluation.EvalContext(step, self.workdir, None, final, self.is_writer)
      key = state_lib.eval_key(self.config.seed)
      results.update(evaluation.run_evaluators(model, self.task.evaluators, names, context, key))
    return results

  def _periodic_names(self) -> set[str]:
    return (set(self.eval_sources) | set(self.task.evaluators)) - set(self.task.final_only)

  def _eval_row(self, state: dict, step: int) -> dict[str, float]:
    row = {'epoch': self.schedule.epoch(step), **self.since_eval.means('train_epoch')}
    row.update(self._evaluate(state, step, self._periodic_names(), final=False))
    self.since_eval = metrics.Means()
    if self.best_metric:
      self._select(state, step, row)
    logging.info(
      'epoch %s: %s', format_epoch(row['epoch']), metrics.summary({k: v for k, v in row.items() if k != 'epoch'})
    )
    return row

  def _select(self, state: dict, step: int, row: dict[str, float]) -> None:
    """Keeps `state` as the best model if `row[best_metric]` improves on the best so far (ties keep the earlier)."""
    if self.best_metric not in row:
      raise ConfigError(
        f'config.best_metric={self.best_metric!r} is not among the evaluation metrics '
        f'({", ".join(k for k in row if k.startswith("eval/"))}). Fix: --config.best_metric=<one of them>.'
      )
    value = row[self.best_metric]
    if not np.isfinite(value):
      return
    best = None if self.best is None else self.best['value']
    if best is None or (value < best if self.best_mode == 'min' else value > best):
      self.best = {'value': value, 'step': step}
      self.best_store.save(state, self.best, self._resumable_bests())

  # -- The end ---------------------------------------------------------------------------------------------------------

  def _finish(self, state: dict) -> dict[str, float]:
    step = self.schedule.total_steps
    final = metrics.final_metrics(self.writer.rows, step) if self.is_writer else {}
    row = self._final_row(state, step)
    if row and not all(k in final for k in row):
      self.writer.write(step, row)
      final.update(row)
    self._status('done', step, final, message='Finished.')
    if jax.process_count() > 1:
      # Only process 0 holds the logged rows; the others read them once it has written the last one, so that every
      # process returns the same final metrics.
      self.writer.sync()
      checkpoints.sync_processes('final_metrics')
      if not self.is_writer:
        final = metrics.final_metrics(wd.read_rows(self.workdir), step)
    logging.info('Done: %s', metrics.summary(final))
    return final

  def _final_row(self, state: dict, step: int) -> dict[str, float]:
    """The end-of-run evaluation: `final_only` evaluations on the last model, or everything on the best model."""
    if not self.best_metric:
      names = set(self.task.final_only)
      return self._evaluate(state, step, names, final=True) if names else {}
    if self.best is None:
      logging.warning('No evaluation of %s was finite: no best model to report.', self.best_metric)
      return {}
    best_state = self.best_store.restore(self.best['step'], state_lib.abstract_on(self.parts, self.replicated))
    names = set(self.eval_sources) | set(self.task.evaluators)
    results = self._evaluate(best_state, self.best['step'], names, final=True)
    return {'best/step': self.best['step'], **{f'best/{k}': v for k, v in results.items()}}

  def _status(self, status: str, step: int, row: dict | None = None, message: str = '') -> None:
    if not self.is_writer:
      return
    fields = {'epoch': self.schedule.epoch(step), 'metrics': row or {}}
    eta = self.timer.eta_seconds(self.schedule.total_steps - step) if status == 'running' else None
    if eta is not None:
      fields['eta_seconds'] = round(eta)
    if self.best is not None:
      fields['best'] = {'metric': self.best_metric, **self.best}
    wd.write_status(self.workdir, status, step, self.schedule.total_steps, message, **fields)


def _build_stack(source: data_lib.Source, indices_SxB: np.ndarray) -> dict[str, np.ndarray]:
  return data_lib.stack_padded([source.batch(row) for row in indices_SxB])
