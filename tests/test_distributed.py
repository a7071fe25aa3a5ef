"""Two processes on localhost (`--jax_distributed`, CPU collectives over gloo) against one with the same devices.

Each process is the real CLI, `python -m experiments.mnist --config configs/mnist.py:smoke --jax_distributed`, given
its coordinator, count and id through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, and two host
devices each: 2 processes x 2 devices against 1 process x 4 devices. Both see the same shards, but the gradient's
all-reduce over 4 devices sums in a different order across processes (gloo) than within one, so the logs agree to
float32 rounding (measured: 1.2e-7 relative at most), not bit for bit; with 1 device per process against 2 devices,
a two-term sum, they are bit-identical. A `sitecustomize` probe on PYTHONPATH records, per process, the example
indices each training batch was built from and every file the process opens for writing in the workdir, and can
SIGKILL the process just before a checkpoint save (a deterministic "killed mid-run").
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from experiments import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TIMEOUT_S = 90  # Per launch; a run takes 5-15 s, a hung collective would otherwise wait minutes.
TRAIN_SIZE, BATCH = 1_297, 128  # The smoke variant: digits' training split, the default batch size.

PROBE = textwrap.dedent("""
  import builtins, json, os, signal
  from experiments.loop import checkpoints, data

  _open, _batch, _save = builtins.open, data.ArraySource.batch, checkpoints.Checkpointer.save
  _log = os.path.join(os.environ['PROBE_DIR'], 'probe_' + os.environ.get('JAX_PROCESS_ID', 'single') + '.jsonl')
  _workdir = os.path.realpath(os.environ['PROBE_WORKDIR'])

  def _record(**event):
    with _open(_log, 'a') as f:
      f.write(json.dumps(event) + '\\n')

  def open(file, mode='r', *args, **kwargs):
    path = os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else ''
    if path.startswith(_workdir + os.sep) and any(c in mode for c in 'wax+'):
      _record(kind='write', path=os.path.relpath(path, _workdir))
    return _open(file, mode, *args, **kwargs)

  def batch(self, indices):
    if len(self) == %(train_size)d:  # The training split (the evaluation splits have 250 examples).
      _record(kind='train_batch', indices=[int(i) for i in indices])
    return _batch(self, indices)

  def save(self, step, *args, **kwargs):
    if str(step) == os.environ.get('PROBE_KILL_BEFORE_SAVE'):
      os.kill(os.getpid(), signal.SIGKILL)
    return _save(self, step, *args, **kwargs)

  builtins.open, data.ArraySource.batch, checkpoints.Checkpointer.save = open, batch, save
""") % {'train_size': TRAIN_SIZE}


def subprocess_env() -> dict:
  # The processes share compiled programs through the session's JAX cache (tests/conftest.py), which os.environ names:
  # each would otherwise compile anew.
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(tmp_path, name: str, workdir: str, *, processes: int, devices: int, env: dict | None = None) -> list:
  """Runs the smoke config on `processes` processes of `devices` host devices each; returns their exit codes."""
  probe_dir = tmp_path / f'probe_{name}'
  probe_dir.mkdir()
  (probe_dir / 'sitecustomize.py').write_text(PROBE)
  base = subprocess_env()
  base.update(env or {}, PROBE_DIR=str(probe_dir), PROBE_WORKDIR=workdir)
  base['PYTHONPATH'] = f'{probe_dir}{os.pathsep}{ROOT}'
  base['XLA_FLAGS'] = f'{base.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'
  command = [sys.executable, '-m', 'experiments.mnist', '--config', 'configs/mnist.py:smoke', '--workdir', workdir]
  if processes > 1:
    command.append('--jax_distributed')
    base.update(JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}', JAX_NUM_PROCESSES=str(processes))
  procs = []
  for i in range(processes):
    log = open(probe_dir / f'stderr_{i}.txt', 'w')  # noqa: SIM115 -- closed below, once the process ends.
    penv = dict(base, JAX_PROCESS_ID=str(i)) if processes > 1 else base
    procs.append((subprocess.Popen(command, cwd=ROOT, env=penv, stdout=log, stderr=subprocess.STDOUT), log))
  codes = []
  try:
    for proc, _ in procs:
      codes.append(proc.wait(timeout=TIMEOUT_S))
  finally:
    for proc, log in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      log.close()
  return codes


def _probe(tmp_path, name: str, process: str) -> list[dict]:
  with open(tmp_path / f'probe_{name}' / f'probe_{process}.jsonl') as f:
    return [json.loads(line) for line in f]


def _output(tmp_path, name: str, process: int) -> str:
  return (tmp_path / f'probe_{name}' / f'stderr_{process}.txt').read_text()


def _final_metrics_line(tmp_path, name: str, process: int) -> str:
  lines = [line for line in _output(tmp_path, name, process).splitlines() if '] Done: ' in line]
  assert len(lines) == 1, _output(tmp_path, name, process)[-3000:]
  return lines[0].split('] Done: ', 1)[1]


def _rows(workdir: str) -> list[dict]:
  return [{k: v for k, v in row.items() if not k.startswith('perf/')} for row in wd.read_rows(workdir, strict=True)]


def _train_batches(tmp_path, name: str, process: str) -> list[list[int]]:
  return [e['indices'] for e in _probe(tmp_path, name, process) if e['kind'] == 'train_batch']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Two-process and one-process runs of the same smoke config: {name: workdir}, with `tmp` the launch directory."""
  tmp_path = tmp_path_factory.mktemp('distributed')
  workdirs = {name: str(tmp_path / name) for name in ('two', 'one')}
  codes = _launch(tmp_path, 'two', workdirs['two'], processes=2, devices=2)
  if codes != [0, 0] and 'gloo' in _output(tmp_path, 'two', 0).lower() + _output(tmp_path, 'two', 1).lower():
    pytest.skip(f'CPU collectives (gloo) failed in this jax build: {_output(tmp_path, "two", 0)[-1500:]}')
  assert codes == [0, 0], _output(tmp_path, 'two', 0)[-3000:] + _output(tmp_path, 'two', 1)[-3000:]
  assert _launch(tmp_path, 'one', workdirs['one'], processes=1, devices=4) == [0], _output(tmp_path, 'one', 0)[-3000:]
  return tmp_path, workdirs


def test_two_processes_log_the_same_numbers_as_one_with_the_same_devices(runs):
  tmp_path, workdirs = runs
  two, one = _rows(workdirs['two']), _rows(workdirs['one'])
  assert [r['step'] for r in two] == [5, 10, 15, 20]  # Each logged step once: process 1 logged nothing.
  assert [r.keys() for r in two] == [r.keys() for r in one]
  for row_two, row_one in zip(two, one, strict=True):
    assert row_two == pytest.approx(row_one, rel=1e-6, abs=1e-9), row_two['step']
  assert wd.read_status(workdirs['two'])['status'] == 'done'
  # Every process returns the run's final metrics, not only the one that holds the logs.
  assert _final_metrics_line(tmp_path, 'two', 0) == _final_metrics_line(tmp_path, 'two', 1)
  assert f'eval/test/error {two[-1]["eval/test/error"]:.4g} ' in _final_metrics_line(tmp_path, 'two', 1)


def test_each_process_builds_only_its_half_of_each_global_batch(runs):
  tmp_path, _ = runs
  full = _train_batches(tmp_path, 'one', 'single')
  halves = [_train_batches(tmp_path, 'two', p) for p in '01']
  assert len(full) == 20 and all(len(b) == BATCH for b in full)
  # Process 0 holds the first 64 rows of each step's global batch (devices 0, 1), process 1 the last 64.
  assert halves[0] == [b[: BATCH // 2] for b in full]
  assert halves[1] == [b[BATCH // 2 :] for b in full]


def test_only_process_0_writes_logs_all_processes_write_checkpoints(runs):
  tmp_path, workdirs = runs
  written = {p: {e['path'] for e in _probe(tmp_path, 'two', p) if e['kind'] == 'write'} for p in '01'}
  logs = {p: {path for path in written[p] if not path.startswith(wd.CHECKPOINT_DIR + os.sep)} for p in '01'}
  assert logs['1'] == set(), logs['1']
  assert {wd.METRICS_FILE, wd.STATUS_FILE + '.tmp', wd.CONFIG_FILE + '.tmp', wd.LOCK_FILE} <= logs['0']
  assert sum(path.startswith('events.out.tfevents') for path in logs['0']) == 1
  assert sum(f.startswith('events.out.tfevents') for f in os.listdir(workdirs['two'])) == 1
  # Orbax's multi-process save: each process writes its own part of the state into the one shared directory.
  state_dir = os.path.join(workdirs['two'], wd.CHECKPOINT_DIR, '20', 'state')
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= set(os.listdir(state_dir))


def test_both_killed_before_a_checkpoint_then_rerun_ends_identical(runs):
  """SIGKILL both processes at step 20, after its logs but before its checkpoint; a rerun resumes from step 10."""
  tmp_path, workdirs = runs
  workdir = str(tmp_path / 'killed')
  codes = _launch(tmp_path, 'killed', workdir, processes=2, devices=2, env={'PROBE_KILL_BEFORE_SAVE': '20'})
  assert codes == [-signal.SIGKILL] * 2, _output(tmp_path, 'killed', 0)[-3000:]
  assert wd.read_status(workdir)['status'] == 'running'
  assert [r['step'] for r in _rows(workdir)] == [5, 10, 15, 20]  # Rows past the checkpoint at 10, to be cut.
  # While something else holds the workdir's lock, both processes stop with exit code 3 and a message (before the
  # claim was shared, process 1 hung in its first collective until jax's 5-minute shutdown timeout).
  with open(os.path.join(workdir, wd.LOCK_FILE), 'a+') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    assert _launch(tmp_path, 'locked', workdir, processes=2, devices=2) == [3, 3]
  assert 'Another process is training in' in _output(tmp_path, 'locked', 0)
  assert 'Process 0 could not claim' in _output(tmp_path, 'locked', 1)
  assert _launch(tmp_path, 'resumed', workdir, processes=2, devices=2) == [0, 0], _output(tmp_path, 'resumed', 0)
  assert 'Resuming' in _output(tmp_path, 'resumed', 1) and 'from step 10' in _output(tmp_path, 'resumed', 1)
  assert _rows(workdir) == _rows(workdirs['two'])
  assert wd.read_status(workdir)['status'] == 'done'
