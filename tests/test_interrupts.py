"""Stopping cleanly: SIGINT and SIGTERM through the real CLI, an interrupt between stop points, a corrupt checkpoint
reported in one line, the status file, the diverged message and the ETA estimator.

A resumed run must log exactly what an uninterrupted one logs (rows without perf/ keys), however odd the step at
which the signal made it checkpoint.
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import test_train_loop as tl

from configs import mnist as mnist_config
from experiments import cli, loop
from experiments import workdir as wd
from experiments.loop import progress
from experiments.mnist import task as mnist_task

# MNIST smoke at batch size 4, one step per dispatch: a few seconds, with many dispatch boundaries to stop at.
MNIST_ARGS = [
  '--config',
  os.path.join(tl.ROOT, 'configs', 'mnist.py') + ':smoke,batch_size=4',
  '--config.num_epochs=6',
  '--config.steps_per_dispatch=1',
]
FIRST_LOG_STEP = 162  # log_every_steps of this config.


def mnist_config_for_test():
  config = mnist_config.get_config('smoke,batch_size=4')
  with config.unlocked():
    config.num_epochs, config.steps_per_dispatch = 6, 1
  return config


@pytest.fixture(scope='module')
def mnist_straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mnist_straight'))
  mnist_task.train_and_evaluate(mnist_config_for_test(), workdir)
  return workdir


def run_cli(workdir, env, signum=None):
  """Runs the MNIST CLI; with `signum`, sends it after the first progress line. Returns (exit code, stderr)."""
  cmd = [sys.executable, '-m', 'experiments.mnist', *MNIST_ARGS, '--workdir', workdir]
  proc = subprocess.Popen(cmd, cwd=tl.ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if signum is not None and f'step {FIRST_LOG_STEP}/' in line:
      proc.send_signal(signum)
      signum = None
  return proc.wait(timeout=120), ''.join(lines)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_stops_with_one_message_and_the_rerun_equals_an_uninterrupted_run(tmp_path, signum, mnist_straight):
  workdir, env = str(tmp_path / 'run'), tl.subprocess_env()
  code, err = run_cli(workdir, env, signum)
  assert code == cli.EXIT_INTERRUPTED, err[-3000:]
  status = loop.read_status(workdir)
  step = status['step']
  name = signal.Signals(signum).name
  assert f'Interrupted ({name}) at step {step}; re-run the same command to resume.' in err
  assert 'Traceback' not in err and 'Exception ignored' not in err
  assert status['status'] == 'interrupted' and FIRST_LOG_STEP <= step < status['total_steps']
  assert status['metrics']['train/loss'] == loop.read_rows(workdir)[-1]['train/loss']  # The last row logged.
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  assert str(step) in os.listdir(checkpoint_dir)  # The step reached is saved: a preempted job loses no work.
  assert not [p for p in os.listdir(checkpoint_dir) if 'tmp' in p]

  code, err = run_cli(workdir, env)
  assert code == 0, err[-3000:]
  assert f'Resuming {workdir} from step {step}' in err
  assert tl.comparable_rows(workdir) == tl.comparable_rows(mnist_straight)
  assert loop.read_status(workdir)['status'] == 'done'


class SignallingSource(loop.ArraySource):
  """Training data that sends this process `signum` while the batch of step `at_step` is built."""

  def __init__(self, arrays, signum, at_step):
    super().__init__(arrays)
    self.signum, self.calls_left = signum, at_step

  def batch(self, indices):
    self.calls_left -= 1
    if self.calls_left == 0:
      os.kill(os.getpid(), self.signum)
    return super().batch(indices)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason='signals need the main thread')
def test_interrupt_between_stop_points_checkpoints_there_and_resumes_bit_identical(tmp_path):
  # Two steps per dispatch: stop points 4, 6, 8, 12, ...; the signal during step 9 stops at the boundary 10.
  config = tl.make_config(steps_per_dispatch=2)
  straight = str(tmp_path / 'straight')
  final = loop.train(config, straight, tl.make_task())
  task = tl.make_task()
  workdir = str(tmp_path / 'run')
  task = dataclasses.replace(task, train_data=SignallingSource(task.train_data, signal.SIGTERM, at_step=9))
  with pytest.raises(loop.Interrupted, match='at step 10;') as info:
    loop.train(config, workdir, task)
  assert info.value.step == 10
  assert '10' in os.listdir(os.path.join(workdir, 'checkpoints'))
  assert [r['step'] for r in loop.read_rows(workdir)] == [4, 8]  # The interrupt itself logs nothing.
  status = loop.read_status(workdir)
  assert (status['status'], status['step'], status['epoch']) == ('interrupted', 10, 1.25)
  assert status['metrics']['eval/valid/error'] == loop.read_rows(workdir)[-1]['eval/valid/error']
  assert loop.train(config, workdir, tl.make_task()) == final
  assert tl.comparable_rows(workdir) == tl.comparable_rows(straight)
  assert tl.final_digest(workdir) == tl.final_digest(straight)


def test_status_is_current_at_every_stop_point(tmp_path, monkeypatch):
  seen = []
  original = wd.write_status

  def record(workdir, status, step, total, message='', **fields):
    original(workdir, status, step, total, message, **fields)
    seen.append(wd.read_status(workdir))

  monkeypatch.setattr(wd, 'write_status', record)
  loop.train(tl.make_config(), str(tmp_path), tl.make_task())
  running = [s for s in seen if s['status'] == 'running']
  assert [s['step'] for s in running] == [0, 4, 6, 8, 12, 16, 18, 20, 24]
  at_6 = running[2]  # A checkpoint-only stop point still shows the newest logged values (of step 4) and an ETA.
  assert at_6['metrics']['train/loss'] == loop.read_rows(str(tmp_path))[0]['train/loss']
  assert at_6['epoch'] == 0.75 and at_6['eta_seconds'] >= 0
  assert seen[-1]['status'] == 'done' and seen[-1]['step'] == 24


@pytest.mark.parametrize(
  'nan_at_step,log_every,expected',
  [
    (3, 4, 'Nothing was checkpointed or logged yet in'),
    (3, 1, 'No checkpoint was written yet; the logs up to step 2 stay in'),
    (7, 4, 'The last good checkpoint (step 6) and the logs up to it stay in'),
  ],
)
def test_diverged_message_says_what_was_kept(tmp_path, nan_at_step, log_every, expected):
  config = tl.make_config(log_every_steps=log_every)
  with pytest.raises(loop.DivergedError) as info:
    loop.train(config, str(tmp_path), tl.make_task(nan_at_step=nan_at_step))
  assert expected in str(info.value)
  assert f'a NaN or Inf at step {nan_at_step}' in str(info.value)


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_eta_leaves_out_compilation_and_evaluation():
  clock = FakeClock()
  timer = progress.Throughput(clock)
  assert timer.eta_seconds(100) is None  # Nothing timed yet: no estimate rather than a wild one.
  timer.start()
  clock.now += 30.0  # The first dispatch compiles for 29 s, then 100 steps run in 1 s.
  timer.exclude(29.0)
  timer.stop(100)
  assert timer.eta_seconds(900) == pytest.approx(9.0)
  clock.now += 50.0  # An evaluation between stop points.
  timer.start()
  clock.now += 1.0
  timer.stop(100)
  assert timer.eta_seconds(800) == pytest.approx(8.0)  # No jump after the evaluation.
  assert timer.rate() == pytest.approx(100.0)  # The window's rate, for perf/steps_per_sec.
  timer.reset_window()
  assert timer.eta_seconds(800) == pytest.approx(8.0)  # The estimate is over the whole run, not the window.


def test_corrupt_latest_checkpoint_is_one_warning_line_through_the_cli(tmp_path, mnist_straight):
  workdir = str(tmp_path / 'run')
  shutil.copytree(mnist_straight, workdir)
  status = loop.read_status(workdir)
  wd.write_status(workdir, 'running', status['step'] - 1, status['total_steps'])  # As if killed before 'done'.
  last = max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  tl.corrupt_by_garbage(os.path.join(workdir, 'checkpoints', str(last)))
  code, err = run_cli(workdir, tl.subprocess_env())
  assert code == 0, err[-3000:]
  reports = [line for line in err.splitlines() if 'is corrupt' in line]
  assert len(reports) == 1 and f'checkpoint at step {last}' in reports[0] and 'DATA_LOSS' in reports[0]
  assert 'Traceback' not in err and 'tensorstore_spec' not in err and 'Event loop' not in err
  assert tl.comparable_rows(workdir) == tl.comparable_rows(mnist_straight)


def test_a_failed_reads_logged_tracebacks_are_dropped_from_the_replayed_output():
  from experiments.loop.checkpoints import _without_closed_loop_noise

  captured = (
    'E1201 14:30:21.1 1 base_events.py:1] Future exception was never retrieved\n'
    'Traceback (most recent call last):\n'
    '  File "x.py", line 1\n'
    "ValueError: DATA_LOSS: bad b-tree node [tensorstore_spec='{}']\n"
    'W1201 14:30:21.3 1 other.py:7] a warning the user should see\n'
    'raw output of another library\n'
  )
  kept = _without_closed_loop_noise(captured)
  assert kept == 'W1201 14:30:21.3 1 other.py:7] a warning the user should see\nraw output of another library\n'
  assert _without_closed_loop_noise('no log records here\n') == 'no log records here\n'


def _damage_line(workdir: str, index: int) -> bytes:
  """Cuts line `index` of metrics.jsonl in half, as a write stopped by a SIGKILL or a full disk leaves it."""
  path = os.path.join(workdir, wd.METRICS_FILE)
  with open(path) as f:
    lines = f.read().splitlines(keepends=True)
  lines[index] = lines[index][: len(lines[index]) // 2] + '\n'
  with open(path, 'w') as f:
    f.writelines(lines)
  with open(path, 'rb') as f:
    return f.read()


def _kept_copy(workdir: str) -> bytes:
  (name,) = [n for n in os.listdir(workdir) if n.startswith(wd.METRICS_FILE + '.corrupt-')]
  with open(os.path.join(workdir, name), 'rb') as f:
    return f.read()


def test_a_resume_over_a_corrupt_metrics_line_says_so_keeps_the_file_and_logs_the_steps_again(tmp_path, mnist_straight):
  workdir = str(tmp_path / 'run')
  shutil.copytree(mnist_straight, workdir)
  status = loop.read_status(workdir)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  shutil.rmtree(os.path.join(workdir, 'checkpoints', str(steps[-1])))  # Killed before its last checkpoint.
  wd.write_status(workdir, 'running', steps[-2], status['total_steps'])
  rows = wd.read_rows(workdir)
  damaged = _damage_line(workdir, next(i for i, r in enumerate(rows) if r['step'] > steps[-2]))
  code, err = run_cli(workdir, tl.subprocess_env())
  assert code == 0, err[-3000:]
  assert 'not a complete JSON row' in err and f'The steps after {steps[-2]} are logged again' in err, err[-3000:]
  assert _kept_copy(workdir) == damaged
  assert tl.comparable_rows(workdir) == tl.comparable_rows(mnist_straight)  # The damaged row, logged again.


def test_a_finished_run_whose_metrics_lost_the_final_row_is_not_done_silently(tmp_path, mnist_straight):
  workdir = str(tmp_path / 'run')
  shutil.copytree(mnist_straight, workdir)
  damaged = _damage_line(workdir, -1)
  code, err = run_cli(workdir, tl.subprocess_env())
  assert code == 0, err[-3000:]
  assert 'is done, but its metrics.jsonl was damaged: line' in err and 'was written again from status.json' in err
  assert _kept_copy(workdir) == damaged
  final = loop.read_status(workdir)
  assert wd.read_rows(workdir)[-1] == {'step': final['step'], **final['metrics']}
