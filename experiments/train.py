"""The one training loop every experiment shares.

An experiment supplies a `Task` (its model, loss, per-example evaluation metrics and in-memory data); the loop does
everything else the same way for all of them:

* Steps. One jitted function runs `steps_per_dispatch` training steps in a `lax.scan` over a stack of batches (at
  batch size 4 the per-call overhead would otherwise dominate) and donates the training state. A step's randomness is
  `fold_in(key, step)`; the data order of epoch `e` is `default_rng([seed, e]).permutation(n)` with the last partial
  batch dropped, so the batch a step sees is a function of the step alone and a resumed run sees the same batches.
* Stops. Logging, evaluation and checkpointing happen at "stop points" (`step % every == 0` or the last step); a
  dispatch never crosses one. Between stop points the host only enqueues work: per-step metrics stay on the device
  until the next stop point fetches them, checks them for NaN/Inf and averages them.
* Devices. Data-parallel over all devices: a 1-D mesh, the batch sharded along it, the state replicated.
* Workdir. `config.json`, `metrics.jsonl` (the source of truth; one row per logged step), TensorBoard files,
  `checkpoints/` (Orbax, with a digest checked on restore) and `status.json` (running, done or diverged). Re-running
  the same command resumes from the last good checkpoint and ends bit-identical (on CPU) to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import checkpointing, metric_writers

CONFIG_FILE = 'config.json'
STATUS_FILE = 'status.json'
CHECKPOINT_DIR = 'checkpoints'
LOCK_FILE = '.lock'
OPTIMIZERS = ('adam',)
# Metrics the loop adds to the task's; a NaN or Inf in any of these stops the run.
GUARDED_METRICS = ('loss', 'grad_norm', 'param_norm', 'update_norm')

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """What an experiment gives the loop.

  Attributes:
    build_model: makes the model from `nnx.Rngs`; its `nnx.Param`s are trained, every other variable (BatchNorm
      statistics) is carried along and checkpointed.
    loss_fn: (model in train mode, batch, rng) -> (scalar training loss, {name: scalar} extra metrics). It may update
      the model's non-parameter variables (BatchNorm statistics).
    eval_fn: (model in eval mode, batch, rng) -> {name: per-example values [B]}; the loop averages each over the
      whole split (padded examples of the last batch masked out).
    train_data: arrays with a common leading (example) dimension.
    eval_data: {split name: arrays like train_data}, evaluated in this order.
  """

  build_model: Callable[[nnx.Rngs], nnx.Module]
  loss_fn: Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
  eval_fn: Callable[[nnx.Module, Batch, jax.Array], dict[str, jax.Array]]
  train_data: dict[str, np.ndarray]
  eval_data: Mapping[str, dict[str, np.ndarray]]


class ConfigError(ValueError):
  """An invalid config value; the message names the field and the fix."""


class WorkdirError(RuntimeError):
  """The workdir cannot be used for this run; the message says why and what to do."""


class DivergedError(RuntimeError):
  """The loss or a norm became NaN or Inf; the run stopped with status 'diverged'."""


# ----------------------------------------------------------------------------------------------------------------------
# Config checks.


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Problems with the fields the loop reads (see `configs/common.py`), each naming the field and the fix."""
  problems = []

  def get(key):
    node = config
    for part in key.split('.'):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        problems.append(f'config.{key} is missing: start the config from configs.common.base_config().')
        return None
      node = node[part]
    return node

  def check(key, ok, requirement, example):
    value = get(key)
    if value is not None and not ok(value):
      problems.append(f'config.{key} must be {requirement}; got {value!r}. Fix: e.g. --config.{key}={example}')

  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  is_real = lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
  positive_int = lambda v: is_int(v) and v > 0
  check('seed', is_int, 'an int', 0)
  check('batch_size', positive_int, 'a positive int', 128)
  check('num_epochs', positive_int, 'a positive int', 10)
  check('num_train_steps', lambda v: is_int(v) and (v > 0 or v == -1), 'a positive int, or -1 (use num_epochs)', -1)
  check('optimizer.name', lambda v: v in OPTIMIZERS, f'one of {", ".join(OPTIMIZERS)}', 'adam')
  check('optimizer.learning_rate', lambda v: is_real(v) and v > 0, 'a positive number', 1e-3)
  check('optimizer.b1', lambda v: is_real(v) and 0 <= v < 1, 'in [0, 1)', 0.9)
  check('optimizer.b2', lambda v: is_real(v) and 0 <= v < 1, 'in [0, 1)', 0.999)
  check('optimizer.eps', lambda v: is_real(v) and v > 0, 'a positive number', 1e-8)
  check('optimizer.grad_clip_norm', lambda v: is_real(v) and v >= 0, '>= 0 (0: no clipping)', 0)
  check('log_every_steps', positive_int, 'a positive int', 100)
  check('eval_every_epochs', positive_int, 'a positive int', 1)
  check('eval_batch_size', positive_int, 'a positive int', 1000)
  check('checkpoint_every_steps', positive_int, 'a positive int', 1000)
  check('checkpoints_to_keep', lambda v: is_int(v) and v >= 2, 'an int >= 2 (a corrupt latest one falls back)', 3)
  check('steps_per_dispatch', positive_int, 'a positive int', 16)
  return problems


def raise_config_problems(problems: list[str]) -> None:
  """Raises one ConfigError listing every problem, if there are any."""
  if problems:
    raise ConfigError('Invalid config:\n  - ' + '\n  - '.join(problems))


def validate_training_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, listing every problem and its fix, if a field the loop reads is invalid."""
  raise_config_problems(config_problems(config))


def model_rngs(seed: int | jax.Array) -> nnx.Rngs:
  """The `nnx.Rngs` the loop builds the model with (exposed so tests and scripts can rebuild the same init)."""
  return nnx.Rngs(jax.random.fold_in(jax.random.key(seed), 0))


def _train_key(seed: int | jax.Array) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), 1)


def _eval_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), 2)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optax transformation for `config.optimizer` (Adam, optionally after global-norm clipping)."""
  return _make_tx(config.optimizer)


def _make_tx(opt: Mapping) -> optax.GradientTransformation:
  opt = ml_collections.ConfigDict(opt)
  adam = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  if opt.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), adam)
  return adam


# ----------------------------------------------------------------------------------------------------------------------
# The schedule: which batch each step sees, and where the stop points are.


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step arithmetic: steps are counted from 0 (before training) to `total_steps` (after the last update)."""

  seed: int
  num_examples: int
  batch_size: int
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int  # In steps: eval_every_epochs * steps_per_epoch.
  checkpoint_every: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_examples: int) -> Schedule:
    steps_per_epoch = num_examples // config.batch_size
    if steps_per_epoch == 0:
      raise ConfigError(
        f'config.batch_size={config.batch_size} is larger than the training set ({num_examples} examples). '
        'Fix: a smaller --config.batch_size.'
      )
    total = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    return cls(
      seed=config.seed,
      num_examples=num_examples,
      batch_size=config.batch_size,
      steps_per_epoch=steps_per_epoch,
      total_steps=total,
      log_every=config.log_every_steps,
      eval_every=config.eval_every_epochs * steps_per_epoch,
      checkpoint_every=config.checkpoint_every_steps,
    )

  def _due(self, step: int, every: int) -> bool:
    return step % every == 0 or step == self.total_steps

  def is_log(self, step: int) -> bool:
    return self._due(step, self.log_every)

  def is_eval(self, step: int) -> bool:
    return self._due(step, self.eval_every)

  def is_checkpoint(self, step: int) -> bool:
    return self._due(step, self.checkpoint_every)

  def next_stop(self, step: int) -> int:
    nxt = lambda every: (step // every + 1) * every
    return min(nxt(self.log_every), nxt(self.eval_every), nxt(self.checkpoint_every), self.total_steps)

  def epoch(self, step: int) -> int | float:
    """The epoch count after `step` steps: an int at epoch ends, else a float."""
    epoch = step / self.steps_per_epoch
    return step // self.steps_per_epoch if step % self.steps_per_epoch == 0 else epoch

  def indices(self, first_step: int, num_steps: int) -> np.ndarray:
    """Example indices [num_steps, batch_size] of the batches of steps first_step + 1 ... first_step + num_steps."""
    rows = []
    for s in range(first_step, first_step + num_steps):
      epoch, i = divmod(s, self.steps_per_epoch)
      order = _epoch_order(self.seed, epoch, self.num_examples)
      rows.append(order[i * self.batch_size : (i + 1) * self.batch_size])
    return np.stack(rows)


def _chunk_size(remaining: int, steps_per_dispatch: int) -> int:
  """Steps for the next dispatch: the full stack, else the largest power of two that fits before the stop point.

  Powers of two bound the number of compiled variants (log2 of steps_per_dispatch of them), where any remainder
  would compile anew; the decomposition depends only on the stop points, so a resumed run dispatches the same way.
  """
  if remaining >= steps_per_dispatch:
    return steps_per_dispatch
  return 1 << (remaining.bit_length() - 1)


# ----------------------------------------------------------------------------------------------------------------------
# Host-side metric means.


class _Means:
  """Sums (exact, `math.fsum`) and counts of per-step metrics; saved in checkpoints so a resume keeps its windows."""

  def __init__(self, sums: dict[str, float] | None = None, count: int = 0):
    self.sums = dict(sums or {})
    self.count = count

  def add(self, metrics: dict[str, np.ndarray]) -> None:
    for k, v in metrics.items():
      self.sums[k] = math.fsum([self.sums.get(k, 0.0), *np.asarray(v, np.float64).tolist()])
    self.count += len(next(iter(metrics.values())))

  def means(self, prefix: str) -> dict[str, float]:
    return {f'{prefix}/{k}': v / self.count for k, v in self.sums.items()} if self.count else {}

  def state(self) -> dict:
    return {'sums': self.sums, 'count': self.count}


# ----------------------------------------------------------------------------------------------------------------------
# The model and its state.


@dataclasses.dataclass(frozen=True)
class _Parts:
  train_def: nnx.GraphDef  # The model's structure in train mode (BatchNorm on batch statistics) ...
  eval_def: nnx.GraphDef  # ... and in eval mode (on running averages).
  tx: optax.GradientTransformation
  init: Callable[[int], dict[str, Any]]  # Pure: seed -> the initial state {params, rest, opt_state, step, rng}.
  abstract_state: dict[str, Any]  # Its shapes and dtypes.


def _build(config: ml_collections.ConfigDict, build_model: Callable[[nnx.Rngs], nnx.Module]) -> _Parts:
  tx = make_optimizer(config)
  defs = {}

  def init(seed):
    # Traced (under jit or eval_shape): one compile for the whole initialisation instead of one per eager op, and
    # no compile at all when only the shapes are needed (resuming, `load_model`). The seed is an argument: with
    # every input a constant, XLA would constant-fold the whole random initialisation at compile time, slowly.
    model = build_model(model_rngs(seed))
    model.eval()
    defs['eval'] = nnx.split(model, nnx.Param, ...)[0]
    model.train()
    defs['train'], params, rest = nnx.split(model, nnx.Param, ...)
    return {
      'params': params,
      'rest': rest,  # Every non-parameter variable: BatchNorm statistics.
      'opt_state': tx.init(params),
      'step': jnp.zeros((), jnp.int32),
      'rng': jax.random.key_data(_train_key(seed)),
    }

  abstract = jax.eval_shape(init, config.seed)
  return _Parts(defs['train'], defs['eval'], tx, init, abstract)


def _initial_state(parts: _Parts, seed: int, sharding: NamedSharding | None = None) -> dict[str, Any]:
  # Compiled without LLVM optimisation: it runs once, and its unrolled random-number hashing otherwise takes seconds
  # to compile (0.5 s against 4 s for the smoke MLP on a busy 2-core machine).
  init = jax.jit(parts.init, out_shardings=sharding).lower(seed)
  return init.compile(compiler_options={'xla_backend_optimization_level': 0})(seed)


def init_model(config: ml_collections.ConfigDict, task_or_build_model: Task | Callable) -> nnx.Module:
  """The model, in train mode, exactly as a run of `config` starts from (for golden-value tests and scripts)."""
  build_model = task_or_build_model.build_model if isinstance(task_or_build_model, Task) else task_or_build_model
  parts = _build(config, build_model)
  state = _initial_state(parts, config.seed)
  return nnx.merge(parts.train_def, state['params'], state['rest'])


def _put(x: np.ndarray | jax.Array, sharding: NamedSharding) -> jax.Array:
  """Places a host array that every process holds in full; each process supplies its own shards."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


@functools.lru_cache(maxsize=16)
def _jitted_steps(
  loss_fn: Callable, eval_fn: Callable, train_def: nnx.GraphDef, eval_def: nnx.GraphDef, optimizer: tuple, mesh
) -> tuple[Callable, Callable]:
  """The jitted training chunk and eval batch, shared by every run in this process with the same key.

  Everything the traced functions depend on is in the key (or passed as arguments), so a second run of the same
  task (a resume in a notebook, a sweep in one process, the tests) reuses the compiled programs.
  """
  tx = _make_tx(dict(optimizer))

  def one_step(state, batch):
    step = state['step']
    rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), step)

    def loss_of(params, rest):
      # NNX lets a trace mutate only the variables created in it, and `grad` passes `rest` (not differentiated) in
      # as is: rebuilding it here gives BatchNorm fresh variables it may update.
      model = nnx.merge(train_def, params, jax.tree.map(lambda x: x, rest))
      loss, extra = loss_fn(model, batch, rng)
      return loss, (extra, nnx.split(model, nnx.Param, ...)[2])

    (loss, (extra, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(state['params'], state['rest'])
    if jnp.shape(loss) != ():
      raise ValueError(f'Task.loss_fn must return a scalar loss; got shape {jnp.shape(loss)}.')
    for name, value in extra.items():
      if jnp.shape(value) != () or name in GUARDED_METRICS:
        raise ValueError(f'Task.loss_fn extra metric {name!r} must be a scalar not named {GUARDED_METRICS}.')
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {
      'loss': loss,
      **extra,
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(params),
      'update_norm': optax.tree.norm(updates),
    }
    new_state = {'params': params, 'rest': rest, 'opt_state': opt_state, 'step': step + 1, 'rng': state['rng']}
    return new_state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

  def train_chunk(state, batches):
    return jax.lax.scan(one_step, state, batches)

  def eval_batch(params, rest, batch, mask, eval_key, split_index, step, batch_index):
    rng = jax.random.wrap_key_data(eval_key)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, split_index), step), batch_index)
    values = eval_fn(nnx.merge(eval_def, params, rest), batch, rng)
    sums = {}
    for name, v in values.items():
      if jnp.shape(v) != mask.shape:
        raise ValueError(f'Task.eval_fn must return per-example values [{mask.shape[0]}]; {name!r} has {v.shape}.')
      sums[name] = jnp.sum(jnp.where(mask, v.astype(jnp.float32), 0.0))
    return sums

  replicated = NamedSharding(mesh, P())
  train_chunk = jax.jit(
    train_chunk,
    in_shardings=(replicated, NamedSharding(mesh, P(None, 'data'))),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )
  return train_chunk, jax.jit(eval_batch, out_shardings=replicated)


def _check_data(name: str, arrays: Mapping[str, np.ndarray]) -> int:
  sizes = {k: len(v) for k, v in arrays.items()}
  if not sizes or len(set(sizes.values())) != 1:
    raise ValueError(f'Task {name} must be a non-empty dict of arrays with a common leading dimension; got {sizes}.')
  return next(iter(sizes.values()))


# ----------------------------------------------------------------------------------------------------------------------
# The workdir.


def _flatten(d: Mapping, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _config_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json(indent=2, sort_keys=True)


def read_status(workdir: str) -> dict | None:
  """The workdir's `status.json` ({'status': 'running' | 'done' | 'diverged', 'step', 'message', ...}) or None."""
  path = os.path.join(workdir, STATUS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_status(workdir: str, status: str, step: int, total: int, message: str = '', metrics=None) -> None:
  if jax.process_index() != 0:
    return
  payload = {
    'status': status,
    'step': step,
    'total_steps': total,
    'message': message,
    'metrics': metrics or {},
    'updated': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
  }
  metric_writers._atomic_write(os.path.join(workdir, STATUS_FILE), json.dumps(payload, indent=2) + '\n')


def _open_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Checks that `workdir` is new, empty, or holds this same run; returns its status (None for a new run)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir {workdir} is a file, not a directory. Fix: name a new or existing directory.')
  config_path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(config_path):
    with open(config_path) as f:
      saved = _flatten(json.load(f))
    wanted = _flatten(json.loads(_config_json(config)))
    diff = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k, '<missing>') != wanted.get(k, '<missing>'))
    if diff:
      shown = '; '.join(
        f'{k}: {saved.get(k, "<missing>")!r} in the workdir, {wanted.get(k, "<missing>")!r} now' for k in diff[:6]
      )
      raise WorkdirError(
        f'{workdir} holds a run with a different config ({shown}). Re-running resumes only the same config. '
        'Fix: use a new --workdir for a new config, or the original config to resume.'
      )
    return read_status(workdir) or {'status': 'running', 'step': 0}
  if os.path.isdir(workdir) and set(os.listdir(workdir)) - {LOCK_FILE}:
    raise WorkdirError(
      f'{workdir} is not empty and holds no run ({CONFIG_FILE} is missing). Fix: name a new or empty --workdir.'
    )
  return None


def _lock(workdir: str):
  """An exclusive lock on the workdir for this process (released by the OS even on SIGKILL)."""
  f = open(os.path.join(workdir, LOCK_FILE), 'a+')  # noqa: SIM115 -- held for the whole run.
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise WorkdirError(
      f'Another process is training in {workdir}. Fix: wait for it to finish, or stop it, then re-run.'
    ) from None
  return f


def _final_metrics(rows: list[dict], step: int) -> dict[str, float]:
  """The values logged at `step` (the last one), without timings, which differ between runs."""
  final = {}
  for row in rows:
    if row['step'] == step:
      final.update({k: v for k, v in row.items() if k != 'step' and not k.startswith('perf/')})
  return final


# ----------------------------------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task) -> dict[str, float]:
  """Trains `task` per `config` in `workdir` (resuming it if it holds this run), evaluating every epoch and at the end.

  Args:
    config: a ConfigDict with the fields of `configs.common.base_config()`.
    workdir: the run's directory (created if needed).
    task: the experiment's model, loss, evaluation and data.

  Returns:
    The final metrics: the values logged at the last step ('train/...', 'train_epoch/...', 'eval/<split>/...').

  Raises:
    ConfigError: an invalid config value.
    WorkdirError: the workdir holds something else or is in use.
    DivergedError: a NaN or Inf loss or norm (status 'diverged'; the last good checkpoint and the logs stay).
  """
  validate_training_config(config)
  num_examples = _check_data('train_data', task.train_data)
  eval_sizes = {split: _check_data(f'eval_data[{split!r}]', arrays) for split, arrays in task.eval_data.items()}
  schedule = Schedule.from_config(config, num_examples)
  devices = jax.devices()
  if config.batch_size % len(devices):
    raise ConfigError(
      f'config.batch_size={config.batch_size} must be a multiple of the {len(devices)} devices the batch is split '
      f'over. Fix: --config.batch_size={len(devices) * max(1, config.batch_size // len(devices))}.'
    )

  status = _open_workdir(config, workdir)
  if status is not None and status['status'] == 'done':
    logging.info('%s is already done (step %d); its final metrics: %s', workdir, status['step'], status['metrics'])
    return status['metrics']
  if status is not None and status['status'] == 'diverged':
    raise DivergedError(
      f'The run in {workdir} diverged earlier: {status["message"]} Re-running would diverge again. '
      'Fix: start a new --workdir with a changed config (e.g. a lower --config.optimizer.learning_rate).'
    )
  is_writer = jax.process_index() == 0
  if is_writer:
    os.makedirs(workdir, exist_ok=True)
    lock = _lock(workdir)
    if status is None:
      metric_writers._atomic_write(os.path.join(workdir, CONFIG_FILE), _config_json(config) + '\n')

  mesh = jax.sharding.Mesh(np.array(devices), ('data',))
  replicated = NamedSharding(mesh, P())
  stacked_batch = NamedSharding(mesh, P(None, 'data'))
  eval_batch_sharding = NamedSharding(mesh, P('data'))

  parts = _build(config, task.build_model)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), parts.abstract_state)
  checkpointer = checkpointing.Checkpointer(
    os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=config.checkpoints_to_keep
  )
  writer = None
  try:
    restored = checkpointer.restore_latest(abstract)
    if restored is None:
      state = _initial_state(parts, config.seed, replicated)
      window, since_eval = _Means(), _Means()
      logging.info(
        'Starting a new run in %s: %d steps of batch %d (%d per epoch), %d device(s).',
        workdir,
        schedule.total_steps,
        config.batch_size,
        schedule.steps_per_epoch,
        len(devices),
      )
    else:
      state, meta = restored
      window, since_eval = _Means(**meta['window']), _Means(**meta['since_eval'])
      if meta['data_position'] != list(divmod(meta['step'], schedule.steps_per_epoch)):
        raise WorkdirError(
          f'The checkpoint at step {meta["step"]} has data position {meta["data_position"]}, '
          'which this config does not reproduce. Fix: use a new --workdir.'
        )
      logging.info('Resuming %s from step %d of %d.', workdir, meta['step'], schedule.total_steps)
    step = int(checkpointing.to_host(state['step']))
    writer = metric_writers.MetricWriter(workdir, step, enabled=is_writer)
    _write_status(workdir, 'running', step, schedule.total_steps)

    optimizer_key = tuple(sorted(config.optimizer.to_dict().items()))
    train_chunk, eval_batch = _jitted_steps(
      task.loss_fn, task.eval_fn, parts.train_def, parts.eval_def, optimizer_key, mesh
    )
    eval_key = jax.random.key_data(_eval_key(config.seed))

    def evaluate(state, step) -> dict[str, float]:
      results = {}
      for split_index, (split, arrays) in enumerate(task.eval_data.items()):
        n = eval_sizes[split]
        size = -(-min(config.eval_batch_size, n) // len(devices)) * len(devices)
        sums = []
        for batch_index, start in enumerate(range(0, n, size)):
          idx = np.arange(start, start + size)
          mask = idx < n
          idx = np.where(mask, idx, 0)  # Padding repeats a real example (masked out), never NaN-prone zeros.
          batch = {k: _put(v[idx], eval_batch_sharding) for k, v in arrays.items()}
          sums.append(
            eval_batch(
              state['params'],
              state['rest'],
              batch,
              _put(mask, eval_batch_sharding),
              eval_key,
              split_index,
              step,
              batch_index,
            )
          )
        # Summed on the host, in float64, once the device is done: no extra dispatch or compile per batch.
        sums = [jax.tree.map(checkpointing.to_host, s) for s in sums]
        for name in sums[0]:
          results[f'eval/{split}/{name}'] = math.fsum(float(s[name]) for s in sums) / n
      return results

    pending: list[tuple[int, dict[str, jax.Array]]] = []  # (first step, per-step metrics still on the device)
    train_seconds, window_steps, t0 = 0.0, 0, time.perf_counter()
    while step < schedule.total_steps:
      stop = schedule.next_stop(step)
      while step < stop:
        n = _chunk_size(stop - step, config.steps_per_dispatch)
        idx = schedule.indices(step, n)
        batches = {k: _put(v[idx], stacked_batch) for k, v in task.train_data.items()}
        state, metrics = train_chunk(state, batches)
        pending.append((step, metrics))
        step += n

      # A stop point: fetch and check the metrics (this waits for the device), then log, evaluate, checkpoint.
      fetched = [(first, jax.tree.map(checkpointing.to_host, m)) for first, m in pending]
      pending.clear()
      elapsed = time.perf_counter() - t0
      train_seconds += elapsed
      for first, m in fetched:
        bad = ~np.all([np.isfinite(m[k]) for k in GUARDED_METRICS], axis=0)
        if bad.any():
          i = int(np.argmax(bad))
          values = ', '.join(f'{k}={m[k][i]:.6g}' for k in GUARDED_METRICS)
          message = (
            f'Diverged: a NaN or Inf at step {first + i + 1} ({values}). The last good checkpoint and '
            f'the logs up to it stay in {workdir}.'
          )
          _write_status(workdir, 'diverged', first + i + 1, schedule.total_steps, message)
          raise DivergedError(message)
        window.add(m)
        since_eval.add(m)
      window_steps += sum(len(m['loss']) for _, m in fetched)

      row = {}
      if schedule.is_log(step):
        steps_per_sec = window_steps / max(train_seconds, 1e-9)
        row.update(window.means('train'))
        row['perf/steps_per_sec'] = steps_per_sec
        row['perf/examples_per_sec'] = steps_per_sec * config.batch_size
        eta = datetime.timedelta(seconds=round((schedule.total_steps - step) / max(steps_per_sec, 1e-9)))
        logging.info(
          'step %d/%d  epoch %.2f  loss %.5g  %.1f steps/s  %.0f examples/s  ETA %s',
          step,
          schedule.total_steps,
          step / schedule.steps_per_epoch,
          row['train/loss'],
          steps_per_sec,
          steps_per_sec * config.batch_size,
          eta,
        )
        window, train_seconds, window_steps = _Means(), 0.0, 0
      if schedule.is_eval(step):
        row['epoch'] = schedule.epoch(step)
        row.update(since_eval.means('train_epoch'))
        row.update(evaluate(state, step))
        since_eval = _Means()
        logging.info(
          'epoch %s: %s',
          row['epoch'],
          '  '.join(f'{k} {v:.5g}' for k, v in row.items() if k.startswith(('eval/', 'train_epoch/'))),
        )
      if row:
        writer.write(step, row)
      if schedule.is_checkpoint(step):
        writer.sync()  # The logs must never lag behind a checkpoint: a resume truncates rows to the checkpoint.
        meta = {
          'data_position': list(divmod(step, schedule.steps_per_epoch)),  # [epoch, batches done in it]
          'window': window.state(),
          'since_eval': since_eval.state(),
        }
        checkpointer.save(step, state, meta)
      t0 = time.perf_counter()

    final = _final_metrics(writer.rows, step) if is_writer else {}
    _write_status(workdir, 'done', step, schedule.total_steps, 'Finished.', final)
    logging.info('Done: %s', final)
    return final
  finally:
    if writer is not None:
      writer.close()
    checkpointer.close()
    if is_writer:
      lock.close()


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: is {workdir} a workdir of a run?')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_model(workdir: str, task_or_build_model: Task | Callable[[nnx.Rngs], nnx.Module]) -> nnx.Module:
  """The model of the latest good checkpoint in `workdir`, in eval mode, on the first local device.

  Args:
    workdir: a run's workdir (finished or not); nothing in it is changed.
    task_or_build_model: the run's Task, or just its `build_model`.

  Returns:
    The model with the checkpoint's parameters and other variables (BatchNorm statistics).
  """
  config = read_config(workdir)
  build_model = task_or_build_model.build_model if isinstance(task_or_build_model, Task) else task_or_build_model
  parts = _build(config, build_model)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), parts.abstract_state)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), read_only=True)
  try:
    restored = checkpointer.restore_latest(abstract)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f'No usable checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}.')
  state, _ = restored
  return nnx.merge(parts.eval_def, state['params'], state['rest'])
