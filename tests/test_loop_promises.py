"""The README's promises about the loop that the loop's own tests leave open: a step's randomness, the progress line,
the TensorBoard files' contents, a finished run that says so, and a batch split (not copied) over two devices.

The tiny task of `test_train_loop` is reused; its loss here also logs one uniform draw from the step's key, so the
logs show which randomness each step saw.
"""

import dataclasses
import json
import logging
import os
import re
import struct
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
import test_train_loop as t
from tensorboardX.crc32c import crc32c
from tensorboardX.proto import event_pb2

from experiments import cli, loop
from experiments.epochs import format_epoch
from experiments.loop import state as state_lib
from experiments.loop import steps as steps_lib

NUM_STEPS = 12


def drawing_loss(model, batch, rng):
  loss, extra = t._loss(model, batch, rng, 0.1)
  return loss, {**extra, 'draw': jax.random.uniform(rng)}


def drawing_task() -> loop.Task:
  return dataclasses.replace(t.make_task(), loss_fn=drawing_loss)


def config(**overrides):
  # One row per step, so each row holds one step's draw; checkpoints at 4 and 8 (12 is the end).
  base = dict(num_train_steps=NUM_STEPS, log_every_steps=1, checkpoint_every_steps=4, steps_per_dispatch=4)
  return t.make_config(**{**base, **overrides})


class Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(straight workdir, its log messages, resumed workdir): the second crashed after logging step 6, then re-ran."""
  absl_logger = logging.getLogger('absl')
  records, old_level = Records(), absl_logger.level
  absl_logger.addHandler(records)
  absl_logger.setLevel(logging.INFO)
  try:
    straight = str(tmp_path_factory.mktemp('straight'))
    loop.train(config(), straight, drawing_task())
    messages = list(records.messages)
  finally:
    absl_logger.removeHandler(records)
    absl_logger.setLevel(old_level)
  resumed = str(tmp_path_factory.mktemp('resumed'))
  with pytest.MonkeyPatch.context() as monkeypatch:
    t.run_interrupted(resumed, monkeypatch, at_step=6, config=config(), task=drawing_task())
  loop.train(config(), resumed, drawing_task())
  return straight, messages, resumed


def test_each_step_draws_from_fold_in_key_step_and_a_resume_draws_the_same(runs):
  straight, _, resumed = runs
  draws = {r['step']: r['train/draw'] for r in loop.read_rows(straight) if 'train/draw' in r}
  assert sorted(draws) == list(range(1, NUM_STEPS + 1))
  assert len(set(draws.values())) == NUM_STEPS  # A new draw at every step.
  # The row of step s holds the draw of the step that starts at state step s - 1: fold_in(training key, s - 1).
  key = state_lib.train_key(t.make_config().seed)
  expected = {s: float(jax.random.uniform(jax.random.fold_in(key, s - 1))) for s in draws}
  np.testing.assert_allclose([draws[s] for s in sorted(draws)], [expected[s] for s in sorted(draws)], rtol=1e-6)
  # Resumed from the checkpoint at step 4 after a crash at 6: steps 5.. draw exactly what they drew in one go.
  resumed_draws = {r['step']: r['train/draw'] for r in loop.read_rows(resumed) if 'train/draw' in r}
  assert resumed_draws == draws


PROGRESS = re.compile(
  r'step (\d+)/(\d+)  epoch (\S+)  loss (\S+)  (\d+\.\d) steps/s  (\d+) examples/s  ETA (\d+):(\d\d):(\d\d)$'
)


def test_progress_line_shows_step_epoch_loss_speed_and_eta(runs):
  straight, messages, _ = runs
  lines = [m for m in messages if m.startswith('step ')]
  rows = {r['step']: r for r in loop.read_rows(straight) if 'train/loss' in r}
  assert len(lines) == NUM_STEPS, messages  # One per logged step.
  for line in lines:
    match = PROGRESS.match(line)
    assert match, line
    step, total, epoch, loss, rate, examples, h, m, s = match.groups()
    step, row = int(step), rows[int(step)]
    assert int(total) == NUM_STEPS and float(epoch) == pytest.approx(step / 8, abs=0.0051)  # 8 steps per epoch.
    assert epoch == format_epoch(step / 8)  # Rounded: step 1 prints 'epoch 0.12', not 0.125.
    assert float(loss) == pytest.approx(row['train/loss'], rel=1e-4)
    assert float(rate) == pytest.approx(row['perf/steps_per_sec'], abs=0.051)
    assert int(examples) == pytest.approx(8 * row['perf/steps_per_sec'], abs=0.51)
    eta = 3600 * int(h) + 60 * int(m) + int(s)
    assert eta == pytest.approx((NUM_STEPS - step) / row['perf/steps_per_sec'], abs=1.0)


def test_evaluation_and_done_lines_print_the_epoch_rounded_and_metrics_jsonl_keeps_it_whole(runs):
  straight, messages, _ = runs
  evaluated = [r for r in loop.read_rows(straight) if any(k.startswith('eval/') for k in r)]
  assert [r['epoch'] for r in evaluated] == [r['step'] / 8 for r in evaluated] and evaluated  # Full precision.
  lines = [m for m in messages if m.startswith('epoch ')]
  assert [line.split(':')[0] for line in lines] == [f'epoch {format_epoch(r["epoch"])}' for r in evaluated]
  (done,) = [m for m in messages if m.startswith('Done: ')]
  assert f'  epoch {format_epoch(NUM_STEPS / 8)}  ' in f'{done}  '


def read_events(workdir: str) -> list[event_pb2.Event]:
  """Every event of the workdir's TensorBoard files, in file order, with each record's length and data CRCs checked."""
  masked = lambda data: ((((c := crc32c(data)) >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
  events = []
  for name in sorted(n for n in os.listdir(workdir) if n.startswith('events.out.tfevents')):
    with open(os.path.join(workdir, name), 'rb') as f:
      raw = f.read()
    offset = 0
    while offset < len(raw):
      header = raw[offset : offset + 8]
      (length,) = struct.unpack('<Q', header)
      (length_crc,) = struct.unpack('<I', raw[offset + 8 : offset + 12])
      data = raw[offset + 12 : offset + 12 + length]
      (data_crc,) = struct.unpack('<I', raw[offset + 12 + length : offset + 16 + length])
      assert length_crc == masked(header) and data_crc == masked(data), f'{name}: bad CRC at byte {offset}'
      events.append(event_pb2.Event.FromString(data))
      offset += 16 + length
  return events


def tensorboard_scalars(workdir: str) -> dict[int, dict[str, float]]:
  """{step: {tag: value}} as TensorBoard shows them: a START session log at step p hides earlier events at >= p."""
  shown = []
  for event in read_events(workdir):
    if event.HasField('session_log') and event.session_log.status == event_pb2.SessionLog.START:
      shown = [(step, tag, value) for step, tag, value in shown if step < event.step]
    for v in event.summary.value:
      if v.HasField('simple_value'):  # Scalars only: the config is logged as text at step 0.
        shown.append((event.step, v.tag, v.simple_value))
  scalars = {}
  for step, tag, value in shown:
    assert tag not in scalars.get(step, {}), f'{tag} logged twice at step {step}'
    scalars.setdefault(step, {})[tag] = value
  return scalars


@pytest.mark.parametrize('which', ['straight', 'resumed'])
def test_tensorboard_files_hold_the_jsonl_rows(runs, which):
  workdir = runs[0] if which == 'straight' else runs[2]
  expected = {r['step']: {k: v for k, v in r.items() if k != 'step' and v is not None} for r in loop.read_rows(workdir)}
  got = tensorboard_scalars(workdir)
  assert got.keys() == expected.keys()
  for step, row in expected.items():
    assert got[step].keys() == row.keys(), step
    np.testing.assert_allclose([got[step][k] for k in row], list(row.values()), rtol=1e-6, err_msg=str(step))
  # The resumed run's files show one value per step and tag although steps 5 and 6 were written twice.
  assert sum(len(r) for r in got.values()) == sum(len(r) for r in expected.values())


def test_a_finished_run_says_it_is_done_and_trains_nothing(runs, monkeypatch, caplog):
  straight, _, _ = runs
  before = {name: os.path.getmtime(os.path.join(straight, name)) for name in os.listdir(straight)}
  rows = loop.read_rows(straight)

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run compiled its training step')

  monkeypatch.setattr(steps_lib, 'jitted_steps', no_training)
  caplog.set_level(logging.INFO)
  final = {}

  def train(c, w):
    final.update(loop.train(c, w, drawing_task()))
    return final

  assert cli.run_experiment(train, loop.validate_training_config, config(), straight) == 0
  assert f'{straight} is already done (step {NUM_STEPS})' in caplog.text
  assert final == loop.read_status(straight)['metrics'] and final['train/loss'] == rows[-1]['train/loss']
  assert loop.read_rows(straight) == rows
  after = {name: os.path.getmtime(os.path.join(straight, name)) for name in os.listdir(straight)}
  assert after == before  # Nothing written: not the logs, the status, nor a checkpoint.


SHARDING_CHECK = """
import sys, json, jax
sys.path.insert(0, {tests!r})
import test_train_loop as t
from experiments import loop
from experiments.loop import run, steps

assert jax.device_count() == 2, jax.devices()
batches, compiled = [], []
put_global = run.data_lib.put_global
def recording_put_global(source, indices, sharding, axis, build):
  out = put_global(source, indices, sharding, axis, build)
  size = indices.shape[axis]
  rows = lambda s: list(s.index[axis].indices(size)[:2])  # (start, stop) along the batch axis.
  shards = {{k: [(rows(s), s.data.shape[axis]) for s in a.addressable_shards] for k, a in out.items()}}
  batches.append({{'axis': axis, 'size': size, 'shards': shards}})
  return out
run.data_lib.put_global = recording_put_global
jitted_steps = steps.jitted_steps
def recording_jitted_steps(*args):
  train_chunk, eval_batch = jitted_steps(*args)
  def chunk(state, batch):
    if not compiled:  # What the compiled step takes, whatever the caller placed.
      shardings = train_chunk.lower(state, batch).compile().input_shardings[0][1]
      compiled.append({{k: str(s.spec) for k, s in shardings.items()}})
    return train_chunk(state, batch)
  return chunk, eval_batch
steps.jitted_steps = recording_jitted_steps
final = loop.train(t.make_config(num_train_steps=4, log_every_steps=4), {workdir!r}, t.make_task())
print(json.dumps({{'batches': batches, 'compiled': compiled}}))
"""


def test_two_devices_each_hold_half_of_every_batch(tmp_path):
  """Complements test_two_devices_match_one (equal results), which a batch copied to both devices also passes."""
  code = SHARDING_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__)), workdir=str(tmp_path / 'run'))
  env = t.subprocess_env()
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  axes = [b['axis'] for b in report['batches']]
  assert 1 in axes and 0 in axes, axes  # Training stacks [steps, batch] (axis 1); evaluation batches are [batch].
  for batch in report['batches']:
    half = batch['size'] // 2
    for name, shards in batch['shards'].items():
      # Each device holds its own half of the rows: split, not replicated.
      assert sorted(rows for rows, _ in shards) == [[0, half], [half, 2 * half]], (name, batch)
      assert [n for _, n in shards] == [half, half], (name, batch)
  assert report['compiled'] and all("'data'" in spec for spec in report['compiled'][0].values()), report['compiled']


def test_a_checkpoint_of_another_optimizer_layout_is_a_clean_workdir_error(tmp_path, monkeypatch, capsys):
  """A run checkpointed with another optimizer state layout (here a two-part chain, as before clipping got its own
  slot) does not resume with today's (clipping, Adam, rate): exit 3 with one message, and the checkpoint is left as
  it was."""
  from experiments.loop import optim

  workdir = str(tmp_path / 'run')
  flat_make_optimizer = optim.make_optimizer

  def unflattened(opt, total_steps):  # Another layout: no clipping slot in the chain.
    return optax.chain(optax.scale_by_adam(b1=opt['b1'], b2=opt['b2'], eps=opt['eps']), optax.scale(-1e-3))

  with monkeypatch.context() as patch:
    patch.setattr(optim, 'make_optimizer', unflattened)
    steps_lib.jitted_steps.cache_clear()
    t.run_interrupted(workdir, patch, at_step=6, config=config(), task=drawing_task())
  steps_lib.jitted_steps.cache_clear()
  assert optim.make_optimizer is flat_make_optimizer
  checkpoints = os.path.join(workdir, 'checkpoints')
  before = sorted(os.listdir(checkpoints))
  capsys.readouterr()
  code = cli.run_experiment(
    lambda c, w: loop.train(c, w, drawing_task()), loop.validate_training_config, config(), workdir
  )
  err = capsys.readouterr().err
  assert code == cli.EXIT_WORKDIR
  assert 'holds different arrays than this model and optimizer' in err and 'Use a new workdir' in err
  assert 'Traceback' not in err
  assert sorted(os.listdir(checkpoints)) == before
