"""The sweep's two resume promises, launched for real with a fake experiment that keeps its progress in its workdir
(as the real ones do; that they resume from it bit-identically is test_train_loop's SIGKILL test):
re-running a sweep continues every point in its own workdir, and a SLURM job that is signalled before its time
limit is requeued with the same command (submitit's local cluster runs the SLURM code path here)."""

import json
import os
import signal
import time

import pytest
from test_sweep import write_config

from scripts import sweep

# Stands in for `python -m experiments.<name>`: "trains" NUM_STEPS steps, one per call unless told to run on, and
# keeps its step in the workdir, so a re-run continues where the last one stopped. Each start is recorded.
FAKE_EXPERIMENT = """
import json, os, sys, time

NUM_STEPS = 3
args = sys.argv[1:]
workdir = args[args.index('--workdir') + 1]
os.makedirs(workdir, exist_ok=True)
state = os.path.join(workdir, 'step')
step = int(open(state).read()) if os.path.exists(state) else 0
with open(os.path.join(workdir, 'starts.jsonl'), 'a') as f:
  f.write(json.dumps({'argv': args, 'from_step': step}) + '\\n')
first_start = len(open(os.path.join(workdir, 'starts.jsonl')).readlines()) == 1
if os.environ.get('FAKE_WAIT_FOR_SIGNAL') and first_start:
  with open(os.path.join(workdir, 'job_pid'), 'w') as f:
    f.write(str(os.getppid()))  # The submitit job running this command: where SLURM sends its signal.
  time.sleep(60)  # Until the job is signalled; a job that is not requeued fails the test here.
  sys.exit(1)
step = min(step + (NUM_STEPS if os.environ.get('FAKE_RUN_ON') else 1), NUM_STEPS)
open(state, 'w').write(str(step))
"""


@pytest.fixture
def fake_experiment(tmp_path, monkeypatch):
  package_dir = tmp_path / 'pythonpath'
  package_dir.mkdir()
  (package_dir / 'fake_resuming_experiment.py').write_text(FAKE_EXPERIMENT)
  paths = [str(package_dir), os.getcwd(), os.environ.get('PYTHONPATH', '')]
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(p for p in paths if p))
  return 'fake_resuming_experiment'


def starts(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'starts.jsonl')) as f:
    return [json.loads(line) for line in f]


TWO_POINTS = 'def sweep(add):\n  add(norm="ln", batch_size=4)\n  add(norm="bn", batch_size=4)\n'


def test_a_rerun_sweep_continues_every_point_in_its_workdir(tmp_path, fake_experiment, capsys):
  config = write_config(tmp_path, TWO_POINTS, name='mnist.py')
  root = tmp_path / 'runs'
  argv = [config, '--variant', 'smoke', '--root', str(root), '--jobs', '2', '--module', fake_experiment]
  for _ in range(3):
    assert sweep.main(argv) == 0
  names = ('smoke,norm=ln,batch_size=4', 'smoke,norm=bn,batch_size=4')  # The variant leads the name.
  assert sorted(os.listdir(root)) == sorted([*names, 'logs'])  # The same workdirs, none added.
  for name in names:
    runs = starts(root / name)
    # Each re-run gave the point the same command and found the step the previous run reached.
    assert [r['from_step'] for r in runs] == [0, 1, 2]
    assert all(r['argv'] == runs[0]['argv'] for r in runs) and runs[0]['argv'][-1] == str(root / name)
    assert (root / name / 'step').read_text() == '3'
  capsys.readouterr()


def test_a_signalled_slurm_job_is_requeued_with_the_same_command(tmp_path, fake_experiment, monkeypatch):
  monkeypatch.setenv('FAKE_WAIT_FOR_SIGNAL', '1')
  monkeypatch.setenv('FAKE_RUN_ON', '1')
  config = write_config(tmp_path, 'def sweep(add):\n  add(norm="ln")\n', name='mnist.py')
  root = tmp_path / 'runs'
  points = sweep.build_points(config, 'smoke', str(root), fake_experiment)
  # A 1-minute limit: far from its end, so the job is not killed by the limit itself, and (as submitit counts it,
  # limit - 10 minutes < 0) any signal is a time-out, which submitit requeues only for a checkpointable function.
  (job,) = sweep.run_submitit(points, str(root), 'local', {'name': 'sweep_test', 'timeout_min': 1})
  workdir = root / points[0].name  # 'smoke,norm=ln'
  deadline = time.time() + 60
  while not (workdir / 'job_pid').exists() or not (workdir / 'job_pid').read_text():
    assert time.time() < deadline and job.state not in ('FAILED', 'FINISHED'), job.stderr()
    time.sleep(0.1)
  os.kill(int((workdir / 'job_pid').read_text()), signal.SIGUSR2)  # What SLURM sends before the time limit.
  job.result()  # Raises if the job ended without being requeued and finishing.
  runs = starts(workdir)
  assert [r['from_step'] for r in runs] == [0, 0]  # Killed before any progress, then started again ...
  assert runs[1]['argv'] == runs[0]['argv'] == points[0].argv[3:]  # ... with the same command and workdir.
  assert (workdir / 'step').read_text() == '3'
  assert 'Caught signal SIGUSR2' in job.stderr() and 'timed-out' in job.stderr()  # As submitit saw it.
