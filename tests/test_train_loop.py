"""The shared training loop: a golden-value step, exact resume (in-process, after SIGKILL, from a corrupt checkpoint),
the NaN guard, config validation, evaluation masking and the two-device run.

A tiny task (6 -> 8 -> BatchNorm -> ReLU -> 3, 64 training examples) keeps each run to a few seconds; BatchNorm
makes sure non-parameter state is carried, checkpointed and restored, and input noise drawn from the step's rng
makes sure the randomness is too.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from experiments import cli, loop
from experiments.loop import checkpoints, metric_writers
from layernorm import BatchNorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_IN, NUM_HIDDEN, NUM_CLASSES = 64, 6, 8, 3
BN_MOMENTUM = 0.9


class Counter(nnx.Variable):
  """Steps seen by the model: non-parameter state, like BatchNorm statistics."""


class TinyNet(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, nan_at_step: int = 0):
    # No bias before BatchNorm: its gradient is zero up to rounding, which Adam would amplify to full-size steps.
    self.fc1 = nnx.Linear(NUM_IN, NUM_HIDDEN, use_bias=False, rngs=rngs)
    self.bn = BatchNorm(NUM_HIDDEN, momentum=BN_MOMENTUM)
    self.fc2 = nnx.Linear(NUM_HIDDEN, NUM_CLASSES, rngs=rngs)
    self.count = Counter(jnp.zeros((), jnp.int32))
    # A variable, not an attribute: the NaN run then has the same structure, and compiled steps, as the others.
    self.nan_at_step = Counter(jnp.asarray(nan_at_step, jnp.int32))

  def __call__(self, x):
    return self.fc2(jax.nn.relu(self.bn(self.fc1(x))))


def _loss(model, batch, rng, noise):
  inputs = batch['x'] + noise * jax.random.normal(rng, batch['x'].shape)
  nll = optax.softmax_cross_entropy_with_integer_labels(model(inputs), batch['y'])
  model.count[...] += 1
  loss = jnp.mean(nll)
  # From step nan_at_step on (if > 0), poisons the loss and, through it, every gradient.
  poisoned = (model.nan_at_step[...] > 0) & (model.count[...] >= model.nan_at_step[...])
  loss = loss * jnp.where(poisoned, jnp.nan, 1.0)
  return loss, {'batch_max_nll': jnp.max(nll)}


# Module-level functions (not closures made per task) let repeated runs in this process share compiled steps.
LOSS_FNS = {0.0: lambda m, b, r: _loss(m, b, r, 0.0), 0.1: lambda m, b, r: _loss(m, b, r, 0.1)}


def eval_fn(model, batch, rng):
  logits = model(batch['x'])
  return {
    'nll': optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']),
    'error': (jnp.argmax(logits, -1) != batch['y']).astype(jnp.float32),
  }


def make_task(noise: float = 0.1, nan_at_step: int = 0) -> loop.Task:
  data_rng = np.random.default_rng(123)
  x = data_rng.normal(size=(NUM_TRAIN + 36, NUM_IN)).astype(np.float32)
  y = np.argmax(x @ data_rng.normal(size=(NUM_IN, NUM_CLASSES)), axis=1).astype(np.int32)
  return loop.Task(
    build_model=lambda rngs: TinyNet(rngs, nan_at_step),
    loss_fn=LOSS_FNS[noise],
    eval_fn=eval_fn,
    train_data={'x': x[:NUM_TRAIN], 'y': y[:NUM_TRAIN]},
    # valid: 20 examples, one full eval batch of 16 and one padded; test: one batch.
    eval_data={'valid': {'x': x[64:84], 'y': y[64:84]}, 'test': {'x': x[84:], 'y': y[84:]}},
  )


def make_config(**overrides):
  config = common.base_config()
  config.seed = 7
  config.batch_size = 8  # 8 steps per epoch.
  config.num_epochs = 3
  config.optimizer.learning_rate = 0.05
  # Stop points 4, 6, 8, 12, 16, 18, 20, 24: dispatches of 4 and 2 steps, checkpoints in the middle of epochs.
  config.log_every_steps = 4
  config.checkpoint_every_steps = 6
  config.steps_per_dispatch = 4
  config.eval_batch_size = 16  # valid: 20 examples = one full and one padded batch.
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def model_arrays(model: nnx.Module) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


def comparable_rows(workdir: str) -> list[dict]:
  """The logged rows without timings (which differ between runs)."""
  return [{k: v for k, v in r.items() if not k.startswith('perf/')} for r in loop.read_rows(workdir)]


def final_digest(workdir: str) -> str:
  """The digest of the whole training state (params, optimizer, BatchNorm statistics, step, rng) at the end."""
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  with open(os.path.join(workdir, 'checkpoints', str(steps[-1]), 'meta', 'metadata')) as f:
    return json.load(f)['digest']


class Interrupt(Exception):
  pass


def run_interrupted(workdir, monkeypatch, at_step: int, config=None, task=None):
  """Runs until the row of `at_step` is written, then dies (as from a crash): rows after the last checkpoint exist."""
  original = metric_writers.MetricWriter.write

  def write(self, step, scalars):
    original(self, step, scalars)
    if step == at_step:
      raise Interrupt

  with monkeypatch.context() as m:
    m.setattr(metric_writers.MetricWriter, 'write', write)
    with pytest.raises(Interrupt):
      loop.train(config or make_config(), workdir, task or make_task())


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
  """A run that crashed after logging step 16: checkpoints at 6 and 12, rows up to 16. Tests work on copies."""
  workdir = str(tmp_path_factory.mktemp('interrupted'))
  with pytest.MonkeyPatch.context() as monkeypatch:
    run_interrupted(workdir, monkeypatch, at_step=16)
  return workdir


def copy_of(workdir, tmp_path) -> str:
  target = str(tmp_path / 'run')
  shutil.copytree(workdir, target)
  return target


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """An uninterrupted run: (workdir, final metrics)."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  return workdir, loop.train(make_config(), workdir, make_task())


def subprocess_env() -> dict:
  # Subprocesses share compiled programs with this process and each other through the session's JAX cache
  # (tests/conftest.py, named in os.environ): each one would otherwise compile anew.
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')


# ----------------------------------------------------------------------------------------------------------------------


def test_golden_two_steps(tmp_path):
  """Two steps of the loop against plain jnp + a hand-written Adam on the same init and the same batches."""
  config = make_config(num_train_steps=2, log_every_steps=1)
  task = make_task(noise=0.0)
  init = loop.init_model(config, task)
  p = {
    'w1': init.fc1.kernel[...],
    'g': init.bn.scale[...],
    'beta': init.bn.bias[...],
    'w2': init.fc2.kernel[...],
    'b2': init.fc2.bias[...],
  }
  stats = {'mean': np.zeros(NUM_HIDDEN), 'var': np.ones(NUM_HIDDEN)}

  def plain_loss(p, x, y):
    h = x @ p['w1']
    mean, var = h.mean(0), ((h - h.mean(0)) ** 2).mean(0)
    logits = jax.nn.relu((h - mean) / jnp.sqrt(var + 1e-5) * p['g'] + p['beta']) @ p['w2'] + p['b2']
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)), (mean, var)

  order = np.random.default_rng([config.seed, 0]).permutation(NUM_TRAIN)  # The documented data order.
  lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
  m = {k: 0.0 for k in p}
  v = {k: 0.0 for k in p}
  expected_rows = []
  for t in (1, 2):
    idx = order[(t - 1) * 8 : t * 8]
    (loss, (mean, var)), g = jax.value_and_grad(plain_loss, has_aux=True)(
      p, task.train_data['x'][idx], task.train_data['y'][idx]
    )
    stats = {
      'mean': BN_MOMENTUM * stats['mean'] + (1 - BN_MOMENTUM) * np.asarray(mean, np.float64),
      'var': BN_MOMENTUM * stats['var'] + (1 - BN_MOMENTUM) * np.asarray(var, np.float64),
    }
    new_p = {}
    for k in p:
      gk = np.asarray(g[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * gk
      v[k] = b2 * v[k] + (1 - b2) * gk**2
      new_p[k] = np.asarray(p[k], np.float64) - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
    grad_norm = np.sqrt(sum(np.sum(np.asarray(g[k], np.float64) ** 2) for k in p))
    expected_rows.append({'loss': float(loss), 'grad_norm': grad_norm})
    p = {k: jnp.asarray(val, jnp.float32) for k, val in new_p.items()}

  loop.train(config, str(tmp_path), task)
  rows = [r for r in loop.read_rows(str(tmp_path)) if 'train/loss' in r]
  assert [r['step'] for r in rows] == [1, 2]
  for row, expected in zip(rows, expected_rows, strict=True):
    np.testing.assert_allclose(row['train/loss'], expected['loss'], rtol=1e-6)
    np.testing.assert_allclose(row['train/grad_norm'], expected['grad_norm'], rtol=1e-5)
  model = loop.load_model(str(tmp_path), task)
  for got, want in [
    (model.fc1.kernel, p['w1']),
    (model.bn.scale, p['g']),
    (model.bn.bias, p['beta']),
    (model.fc2.kernel, p['w2']),
    (model.fc2.bias, p['b2']),
  ]:
    np.testing.assert_allclose(got[...], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.bn.mean[...], stats['mean'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.bn.var[...], stats['var'], rtol=1e-5, atol=1e-6)
  assert int(model.count[...]) == 2
  assert model.bn.use_running_average  # load_model gives the eval-mode model.


def test_run_logs_checkpoints_and_evaluates_exactly(straight):
  workdir, final = straight
  rows = loop.read_rows(workdir)
  assert [r['step'] for r in rows] == [4, 8, 12, 16, 20, 24]  # Log every 4, eval every 8; 6 and 18 only checkpoint.
  assert [r.get('epoch') for r in rows if 'epoch' in r] == [1, 2, 3]
  assert [r['step'] for r in rows if 'train/loss' in r] == [4, 8, 12, 16, 20, 24]
  assert loop.read_status(workdir)['status'] == 'done'
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()) == [12, 18, 24]
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['batch_size'] == 8
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))
  # The eval means cover every example once: padded examples of the last batch are masked out.
  task = make_task()
  model = loop.load_model(workdir, task)
  valid = task.eval_data['valid']
  logits = np.asarray(model(valid['x']), np.float64)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(final['eval/valid/nll'], -np.mean(logp[np.arange(20), valid['y']]), rtol=1e-5)
  np.testing.assert_allclose(final['eval/valid/error'], np.mean(logits.argmax(1) != valid['y']), atol=1e-7)
  # The epoch means average every step of the epoch; the logged windows average four steps each.
  by_step = {r['step']: r for r in rows}
  np.testing.assert_allclose(
    by_step[8]['train_epoch/loss'], (by_step[4]['train/loss'] + by_step[8]['train/loss']) / 2, rtol=1e-6
  )
  assert by_step[24]['train_epoch/loss'] < by_step[8]['train_epoch/loss']  # It trains.


def test_resume_is_bit_identical_and_logs_each_step_once(tmp_path, interrupted, straight):
  straight_dir, straight_final = straight
  workdir = copy_of(interrupted, tmp_path)  # Checkpoint at 12 (mid-epoch); rows up to 16 written.
  assert loop.read_status(workdir)['status'] == 'running'
  assert max(r['step'] for r in loop.read_rows(workdir)) == 16
  final = loop.train(make_config(), workdir, make_task())
  assert final == straight_final
  assert comparable_rows(workdir) == comparable_rows(straight_dir)
  assert final_digest(workdir) == final_digest(straight_dir)
  for a, b in zip(
    model_arrays(loop.load_model(workdir, make_task())),
    model_arrays(loop.load_model(straight_dir, make_task())),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)
  # A finished run, re-run, says so and returns its final metrics without training.
  assert loop.train(make_config(), workdir, make_task()) == straight_final


def corrupt_by_garbage(checkpoint_dir):
  """Overwrites every array data file with noise (as a failing disk would)."""
  for root, _, files in os.walk(os.path.join(checkpoint_dir, 'state')):
    for name in files:
      if os.sep + 'd' in root:
        path = os.path.join(root, name)
        with open(path, 'r+b') as f:
          size = os.path.getsize(path)
          f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def corrupt_by_swapping_arrays(checkpoint_dir):
  """Replaces the arrays with another checkpoint's, which read back fine: only the digest can tell."""
  state = os.path.join(checkpoint_dir, 'state')
  shutil.rmtree(state)
  shutil.copytree(os.path.join(os.path.dirname(checkpoint_dir), '6', 'state'), state)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # Orbax's reader, after it fails.
@pytest.mark.parametrize(
  'corrupt,reason', [(corrupt_by_garbage, 'DATA_LOSS'), (corrupt_by_swapping_arrays, 'digest mismatch')]
)
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
  tmp_path, interrupted, straight, corrupt, reason, caplog
):
  straight_dir, straight_final = straight
  workdir = copy_of(interrupted, tmp_path)  # Checkpoints at 6 and 12.
  corrupt(os.path.join(workdir, 'checkpoints', '12'))
  # load_model reads the good one and changes nothing.
  model = loop.load_model(workdir, make_task())
  assert int(model.count[...]) == 6
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '12'))
  final = loop.train(make_config(), workdir, make_task())
  assert 'step 12' in caplog.text and 'corrupt' in caplog.text and reason in caplog.text
  assert os.path.isdir(os.path.join(workdir, checkpoints.CORRUPT_DIR, '12'))
  assert final == straight_final
  assert comparable_rows(workdir) == comparable_rows(straight_dir)
  assert final_digest(workdir) == final_digest(straight_dir)


def test_nan_stops_the_run_as_diverged_and_keeps_the_good_checkpoint(tmp_path, capsys):
  workdir = str(tmp_path)
  task = make_task(nan_at_step=7)
  run = lambda: cli.run_experiment(
    lambda c, w: loop.train(c, w, task), loop.validate_training_config, make_config(), workdir
  )
  assert run() == cli.EXIT_DIVERGED
  err = capsys.readouterr().err
  assert 'NaN or Inf at step 7' in err and 'loss=nan' in err
  status = loop.read_status(workdir)
  assert status['status'] == 'diverged' and status['step'] == 7
  rows = loop.read_rows(workdir)
  assert [r['step'] for r in rows] == [4]  # Logs up to the last stop point before the NaN stay.
  assert all(np.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
  model = loop.load_model(workdir, task)  # The last good checkpoint.
  assert int(model.count[...]) == 6
  assert all(np.all(np.isfinite(a)) for a in model_arrays(model))
  # Re-running does not try again: it would diverge the same way.
  assert run() == cli.EXIT_DIVERGED
  assert 'diverged earlier' in capsys.readouterr().err


BAD_VALUES = [
  ('batch_size', 0),
  ('batch_size', -4),
  ('num_epochs', 0),
  ('num_train_steps', 0),
  ('optimizer.name', 'sgd'),
  ('optimizer.learning_rate', 0.0),
  ('optimizer.learning_rate', -1e-3),
  ('optimizer.learning_rate', float('nan')),
  ('optimizer.b1', 1.0),
  ('optimizer.b2', -0.1),
  ('optimizer.eps', 0.0),
  ('optimizer.grad_clip_norm', -1.0),
  ('log_every_steps', 0),
  ('eval_every_epochs', 0),
  ('eval_batch_size', 0),
  ('checkpoint_every_steps', -1),
  ('checkpoints_to_keep', 1),
  ('steps_per_dispatch', 0),
]


@pytest.mark.parametrize('key,value', BAD_VALUES)
def test_validate_rejects_each_bad_value_naming_field_and_fix(key, value):
  config = make_config()
  loop.validate_training_config(config)  # The good config passes.
  config = make_config(**{key: value})
  with pytest.raises(loop.ConfigError) as e:
    loop.validate_training_config(config)
  message = str(e.value)
  assert f'config.{key} must be' in message and f'--config.{key}=' in message
  assert message.count('\n  - ') == 1  # Exactly this one problem.


def test_workdir_guards(tmp_path, straight):
  straight_dir, _ = straight
  # A different config on an existing run is refused, naming the difference, before anything is written.
  with pytest.raises(loop.WorkdirError, match=r'batch_size: 8 in the workdir, 16 now'):
    loop.train(make_config(batch_size=16), straight_dir, make_task())
  # A directory with unrelated files is refused.
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(loop.WorkdirError, match='not empty'):
    loop.train(make_config(), str(tmp_path), make_task())
  assert os.listdir(tmp_path) == ['notes.txt']
  # A batch larger than the data is a config error.
  with pytest.raises(loop.ConfigError, match='larger than the training set'):
    loop.train(make_config(batch_size=128), str(tmp_path / 'new'), make_task())


def test_schedule_data_order_is_a_function_of_seed_and_epoch():
  schedule = loop.Schedule.from_config(make_config(), NUM_TRAIN)
  first = schedule.indices(0, 24)
  # Each epoch is a permutation (no example twice), seeded by (seed, epoch), and epochs differ.
  for e in range(3):
    epoch = first[e * 8 : (e + 1) * 8].ravel()
    np.testing.assert_array_equal(epoch, np.random.default_rng([7, e]).permutation(NUM_TRAIN))
  assert not np.array_equal(first[:8], first[8:16])
  # Any window of steps sees the same batches as the full sequence (what makes a resume see the same data).
  np.testing.assert_array_equal(schedule.indices(13, 5), first[13:18])
  assert [loop.schedule.chunk_size(r, 16) for r in (40, 16, 15, 8, 7, 1)] == [16, 16, 8, 8, 4, 1]


def test_two_devices_match_one(tmp_path, straight):
  """Data-parallel over two (forced) CPU devices: the batch is split, BatchNorm still sees the global batch."""
  straight_dir, straight_final = straight
  workdir = str(tmp_path / 'two')
  code = f"""
import sys, json, jax
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
import test_train_loop as t
from experiments import loop
assert jax.device_count() == 2, jax.devices()
final = loop.train(t.make_config(), {workdir!r}, t.make_task())
print(json.dumps(final))
"""
  env = subprocess_env()
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads(result.stdout.strip().splitlines()[-1])
  assert final.keys() == straight_final.keys()
  for k in final:
    np.testing.assert_allclose(final[k], straight_final[k], rtol=2e-4, atol=1e-5, err_msg=k)
  for a, b in zip(
    model_arrays(loop.load_model(workdir, make_task())),
    model_arrays(loop.load_model(straight_dir, make_task())),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sigkill_mid_training_then_resume_ends_identical(tmp_path):
  """The real entry point, killed with SIGKILL after its first checkpoint, then re-run with the same command."""
  from configs import mnist as mnist_config
  from experiments import mnist

  overrides = {'checkpoint_every_steps': 40, 'log_every_steps': 20}
  config = mnist_config.get_config('smoke,batch_size=4')  # 648 steps of a 64-64-64-10 network.
  for k, v in overrides.items():
    config[k] = v
  straight_dir = str(tmp_path / 'straight')
  straight_final = mnist.train_and_evaluate(config, straight_dir)

  workdir = str(tmp_path / 'killed')
  command = [
    sys.executable,
    '-m',
    'experiments.mnist',
    '--config',
    'configs/mnist.py:smoke,batch_size=4',
    '--workdir',
    workdir,
  ] + [f'--config.{k}={v}' for k, v in overrides.items()]
  env = subprocess_env()
  proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  checkpoints = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoints) and any(s.isdigit() for s in os.listdir(checkpoints)):
      break
    time.sleep(0.02)
  assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  proc.stderr.close()
  status = loop.read_status(workdir)
  assert status['status'] == 'running' and status['step'] < 648, status

  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming' in result.stderr
  assert loop.read_status(workdir)['metrics'] == straight_final
  assert comparable_rows(workdir) == comparable_rows(straight_dir)
  assert final_digest(workdir) == final_digest(straight_dir)
