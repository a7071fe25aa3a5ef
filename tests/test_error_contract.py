"""The error contract (experiments/cli_errors.py) at every entry point: wrong commands, run as a user runs them, each
end with one 'Error:' line naming the fix, the contract's exit status (2 argument, config or data file; 3 workdir;
130 Ctrl-C), no traceback, and every file that was there before byte-for-byte as it was (and no new one).

The scripts' cases run in one subprocess (`RUNNER` runs each module as `python -m` would, with runpy), so jax is
imported once; the experiments' absl command lines, which parse their flags once per process, get one each. Every
workdir here is a few files written by hand: no case trains anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import cli_runner
import numpy as np
import pytest
from test_data_images import write_idx, write_mnist_dir
from test_handwriting import write_iam
from test_order_embeddings import write_coco

from configs import attentive_reader as ar_config
from configs import draw as draw_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs each (module, args) as `python -m module args` would, in this one process; prints [{code, stderr}] as JSON.
RUNNER = """
import contextlib, io, json, runpy, sys, traceback, warnings
warnings.simplefilter('ignore')  # runpy warns when a module it runs was imported by an earlier case.
cases_path, results_path = sys.argv[1:3]
results = []
for module, args in json.load(open(cases_path)):
  err = io.StringIO()
  sys.argv = [module, *args]
  code = 0
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
      traceback.print_exc()
      code = 1
  results.append({'code': code, 'stderr': err.getvalue()})
json.dump(results, open(results_path, 'w'))
"""


def tree_digest(root) -> dict[str, str]:
  """Every path under `root` (directories too) with its content's hash: what a wrong command must leave as it was."""
  digests = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs:
      digests[os.path.relpath(os.path.join(directory, name), root) + '/'] = 'dir'
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return digests


def assert_clean(code: int, stderr: str, want_code: int, expect: str, what: str) -> None:
  assert code == want_code, f'{what}: exit {code}, not {want_code}\n{stderr}'
  assert 'Traceback' not in stderr, f'{what}\n{stderr}'
  assert stderr.count('Error:') == 1, f'{what}: not one Error: line\n{stderr}'
  assert expect.lower() in stderr.lower(), f'{what}: {expect!r} not in\n{stderr}'


def write_workdir(path, config, task: dict, rows: list[dict]) -> str:
  """A run's files as the loop leaves them (config.json, task.json, metrics.jsonl), without its checkpoints."""
  os.makedirs(path)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    f.write(config.to_json())
  with open(os.path.join(path, 'task.json'), 'w') as f:
    json.dump(task, f)
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """A DRAW and an attentive reader workdir, a file where a directory belongs, and a directory."""
  tmp = tmp_path_factory.mktemp('contract')
  draw = write_workdir(
    tmp / 'draw_run',
    draw_config.get_config('smoke'),
    {'image_shape': [28, 28]},
    [{'step': 1, 'epoch': 1.0, 'train/loss': 0.5}],
  )
  reader = write_workdir(
    tmp / 'ar_run',
    ar_config.get_config('smoke'),
    {'vocab_size': 4, 'max_steps': 5, 'vocab': ['<pad>', 'a', 'b', 'c']},
    [{'step': 1, 'epoch': 1.0, 'eval/valid/error': 0.5}],
  )
  (tmp / 'a_file').write_text('not a directory\n')
  return {'tmp': str(tmp), 'draw': draw, 'reader': reader, 'file': str(tmp / 'a_file')}


# (module, args, exit status, a substring of the one message). {tmp}, {draw}, {reader}, {file} are filled in.
SCRIPT_CASES = [
  ('scripts.plot', ['{draw}', '--out', '{tmp}/missing/fig.png'], 2, 'does not exist'),
  ('scripts.plot', ['{draw}', '--out', '{tmp}'], 2, 'is a directory'),
  ('scripts.plot', ['{draw}', '--out', '{tmp}/fig'], 2, 'no file extension'),
  ('scripts.plot', ['{draw}', '--out', '{tmp}/fig.png', '--layout', 'fig9'], 2, 'invalid choice'),
  ('scripts.report', ['{draw}', '--metrics', 'train/loss', '--epochs', '-1', '0'], 2, 'must be a positive number'),
  ('scripts.report', ['{draw}', '--metrics', 'train/loss', '--epochs', 'nan'], 2, 'must be a positive number'),
  ('scripts.report', ['{draw}', '--metrics', 'train/loss', '--epochs', '99'], 2, 'the runs logged epochs 1.'),
  ('scripts.sweep', ['configs/mnist.py', '--root', '{file}'], 2, 'is a file'),
  (
    'scripts.sweep',
    ['configs/mnist.py', '--variant', 'smoke', '--root', '{tmp}/sweep', '--set', 'batch_size=-1'],
    2,
    'No point was launched',
  ),
  ('scripts.draw_pictures', ['{draw}', '--steps', '1000'], 2, 'at most 3 can be shown'),
  ('scripts.draw_pictures', ['{reader}'], 3, 'no workdir of experiments.draw'),
  ('scripts.draw_pictures', ['{tmp}/none'], 3, 'no workdir of experiments.draw'),
  ('scripts.attentive_reader_pictures', ['{draw}'], 3, 'no workdir of experiments.attentive_reader'),
  ('scripts.attentive_reader_pictures', ['{reader}', '--which', 'bestest'], 2, '--which bestest'),
  ('scripts.attentive_reader_pictures', ['{reader}', '--which', '999'], 3, 'No checkpoint at step 999'),
  ('scripts.attentive_reader_pictures', ['{reader}', '--out', '{file}'], 2, 'is a file'),
  (
    'experiments.handwriting.sample',
    ['--workdir', '{draw}', '--text', 'hi', '--out', '{tmp}/hw.png', '--bias', 'nan'],
    2,
    '--bias must be',
  ),
  (
    'experiments.handwriting.sample',
    ['--workdir', '{draw}', '--text', 'naïve!', '--out', '{tmp}/hw.png'],
    2,
    "cannot write: 'ï!'",
  ),
  (
    'experiments.handwriting.sample',
    ['--workdir', '{tmp}/none', '--text', 'hi', '--out', '{tmp}/hw.png'],
    3,
    'not found',
  ),
  ('experiments.handwriting.figure5', ['{tmp}/none', '--out', '{tmp}/fig5.png'], 2, 'no config.json'),
  ('experiments.skip_thoughts.evaluate', ['--workdir', '{tmp}/none'], 3, 'not found'),
  ('experiments.skip_thoughts.evaluate', ['--workdir', '{reader}', '--checkpoint', 'first'], 2, '--checkpoint'),
  ('scripts.invariance_table', ['--eps', 'nan'], 2, '--eps must be a number >= 0'),
  ('scripts.invariance_table', ['--layers', 'x'], 2, 'invalid int value'),
  ('scripts.reproduce', ['--scale', 'huge', '--root', '{tmp}/r'], 2, 'invalid choice'),
  ('scripts.reproduce', ['--scale', 'smoke', '--root', '{file}'], 2, 'is a file'),
  ('scripts.get_data', ['nonsense', '--dir', '{tmp}/data'], 2, 'unknown data set'),
  ('scripts.report', ['{draw}', '--metrics', 'train/loss', '--epochs', '1', '--reach', 'train/loss=nan'], 2, 'finite'),
  ('scripts.attentive_reader_pictures', ['{reader}', '--reach', 'nan'], 2, '--reach takes finite error rates'),
  ('experiments.skip_thoughts.pictures', ['{draw}', '--out', '{tmp}'], 2, 'is a directory'),
  ('experiments.skip_thoughts.pictures', ['{tmp}/none', '--out', '{tmp}/fig3.png'], 2, 'no metrics.jsonl in'),
  ('benchmarks.regression', ['--rows', 'nonsense'], 2, 'nonsense'),
  ('benchmarks.cells', ['--no_such_flag'], 2, 'unrecognized arguments: --no_such_flag'),
]


def run_scripts(cases, tmp_path, files) -> list[dict]:
  fill = lambda args: [a.format(**files) for a in args]
  cases_path, results_path = tmp_path / 'cases.json', tmp_path / 'results.json'
  cases_path.write_text(json.dumps([(module, fill(args)) for module, args, *_ in cases]))
  (tmp_path / 'runner.py').write_text(RUNNER)
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')])}
  subprocess.run(
    [sys.executable, str(tmp_path / 'runner.py'), str(cases_path), str(results_path)],
    cwd=ROOT,
    env=env,
    check=True,
    timeout=600,
  )
  return json.loads(results_path.read_text())


# --traceback: the same mistakes, with the traceback instead of the one line (exit 1, as Python's own).
TRACEBACK_CASES = [
  ('scripts.plot', ['{draw}', '--out', '{tmp}/missing/fig.png', '--traceback']),
  ('scripts.draw_pictures', ['{draw}', '--steps', '1000', '--traceback']),
]


def test_wrong_commands_of_the_scripts_end_clean_and_change_nothing(files, tmp_path):
  before = tree_digest(files['tmp'])
  results = run_scripts(SCRIPT_CASES + TRACEBACK_CASES, tmp_path, files)  # One process: jax is imported once.
  for (module, args, code, expect), result in zip(SCRIPT_CASES, results[: len(SCRIPT_CASES)], strict=True):
    assert_clean(result['code'], result['stderr'], code, expect, f'{module} {" ".join(args)}')
  for (module, _), result in zip(TRACEBACK_CASES, results[len(SCRIPT_CASES) :], strict=True):
    assert result['code'] == 1 and 'Traceback' in result['stderr'] and 'CommandError' in result['stderr'], module
  assert tree_digest(files['tmp']) == before


def test_the_shared_parser_reports_a_bad_argument_in_one_line(capsys):
  from experiments import cli_errors

  parser = cli_errors.ArgumentParser(prog='python -m scripts.x')
  parser.add_argument('--n', type=int)
  with pytest.raises(SystemExit) as exit_info:
    parser.parse_args(['--n', 'x'])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and err.count('Error:') == 1 and 'usage' not in err
  assert "argument --n: invalid int value: 'x'. Fix: see `python -m scripts.x --help`." in err


# ---------------------------------------------------------------------------------------------------------------------
# Data files the experiments read while loading (after validate): one process each.


def _labels_of_200(tmp):
  (tmp / 'data').mkdir()
  write_mnist_dir(tmp / 'data', 20, 10)
  write_idx(tmp / 'data' / 'train-labels-idx1-ubyte', np.full(20, 200, np.uint8))
  return ['experiments.mnist', '--config', 'configs/mnist.py:smoke', '--config.data.source=idx']


def _coco(bad_split=None, zero_row=False, binary_captions=False):
  def setup(tmp):
    write_coco(str(tmp / 'data'), bad_split=bad_split)
    if binary_captions:
      (tmp / 'data' / 'val.txt').write_bytes(bytes(range(256)) * 4)
    if zero_row:
      path = tmp / 'data' / 'images' / '10crop' / 'train.npy'
      features = np.load(path)
      features[2] = 0
      np.save(path, features)
    return ['experiments.order_embeddings', '--config', 'configs/order_embeddings.py:smoke,source=coco']

  return setup


def _iam(cut_xml=False, missing_form=False):
  def setup(tmp):
    write_iam(str(tmp / 'data'), (2, 1), bad_xml=cut_xml)
    if missing_form:
      with open(tmp / 'data' / 'trainset.txt', 'a') as f:
        f.write('a01-009u\n')
    return ['experiments.handwriting', '--config', 'configs/handwriting.py:smoke,source=iam']

  return setup


@pytest.mark.parametrize(
  'setup,expect',
  [
    (_labels_of_200, 'labels lie outside the 10 classes 0..9, the first 200 at index 0'),
    (_coco(bad_split='train'), 'has 19 captions for the 4 images'),
    (_coco(zero_row=True), '1 of 4 image feature rows are constant (e.g. all zeros) or not finite, the first row 2'),
    (_coco(binary_captions=True), 'val.txt: not UTF-8 text (byte 128'),
    (_iam(cut_xml=True), 'malformed XML'),
    (_iam(missing_form=True), 'a01-009u.txt is missing (listed in a split file)'),
  ],
  ids=[
    'mnist-labels-200',
    'coco-caption-short',
    'coco-zero-row',
    'coco-binary-captions',
    'iam-cut-xml',
    'iam-missing-form',
  ],
)
def test_bad_data_files_end_clean_before_a_workdir_is_made(tmp_path, setup, expect):
  command = setup(tmp_path)
  before = tree_digest(tmp_path)
  args = [*command, f'--config.data.dir={tmp_path / "data"}', '--workdir', str(tmp_path / 'run')]
  result = cli_runner.run([sys.executable, '-m', *args], cwd=ROOT, timeout=300)
  assert_clean(result.returncode, result.stderr, 2, expect, ' '.join(args))
  assert tree_digest(tmp_path) == before  # No workdir either.


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C during a sweep.

# Stands in for an experiment: says it started, then works until SIGTERM or SIGINT stop it (exit 130, as the loop).
SLOW_EXPERIMENT = """
import os, signal, sys, time

workdir = sys.argv[sys.argv.index('--workdir') + 1]
os.makedirs(workdir, exist_ok=True)
def stop(signum, frame):
  open(os.path.join(workdir, 'stopped'), 'w').write(signal.Signals(signum).name)
  sys.exit(130)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print('started', flush=True)
time.sleep(60)
"""

SWEEP_CONFIG = """
import ml_collections

def get_config(arg=None):
  return ml_collections.ConfigDict({'norm': 'none'})

def sweep(add):
  for norm in ('a', 'b', 'c'):
    add(norm=norm)
"""


# The preexec_fn only resets a signal disposition before exec: none of the fork-with-threads hazards jax warns of.
@pytest.mark.filterwarnings('ignore:os.fork:RuntimeWarning')
def test_ctrl_c_stops_a_sweep_starts_no_new_point_and_says_what_to_rerun(tmp_path):
  (tmp_path / 'slow_experiment.py').write_text(textwrap.dedent(SLOW_EXPERIMENT))
  (tmp_path / 'toy.py').write_text(textwrap.dedent(SWEEP_CONFIG))
  root = tmp_path / 'runs'
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ROOT])}
  command = [sys.executable, '-m', 'scripts.sweep', str(tmp_path / 'toy.py'), '--root', str(root)]
  command += ['--module', 'slow_experiment']
  # SIGINT at its default, as at a terminal: a test run started in the background (`make test &`, some CI runners)
  # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so the Ctrl-C would be lost.
  reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
  proc = subprocess.Popen(
    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=reset
  )
  for line in proc.stdout:
    if 'running norm=a' in line:
      break
  log = root / 'logs' / 'norm=a.log'
  deadline = time.monotonic() + 60
  while 'started' not in (log.read_text() if log.exists() else '') and time.monotonic() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert 'Traceback' not in err and err.strip().count('\n') == 0, err
  assert 'no further point was started' in err and f're-run: python -m scripts.sweep {tmp_path / "toy.py"}' in err
  assert (root / 'norm=a' / 'stopped').read_text() == 'SIGTERM'  # Asked to stop, so it could checkpoint.
  assert not (root / 'norm=b').exists() and not (root / 'logs' / 'norm=b.log').exists()
