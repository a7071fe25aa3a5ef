"""Wrong commands, run through the real command line: each gets one 'Error:' naming the fix, the right exit status,
no traceback, and leaves an existing workdir byte-for-byte as it was.

CASES is a table: a new experiment adds its own rows (its config typos, its data files, its workdir mistakes).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import cli_runner
import numpy as np
import pytest
from test_data_images import write_idx, write_mnist_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_SMOKE = 'configs/mnist.py:smoke'
DRAW_SMOKE = 'configs/draw.py:smoke'
AR_SMOKE = 'configs/attentive_reader.py:smoke'


@dataclasses.dataclass(frozen=True)
class Case:
  """One wrong command: `args` after `python -m experiments.<experiment>`, with {workdir}, {data} and {tmp} filled.

  workdir: 'new' (a path that must not be created), 'trained' (a copy of a finished smoke run, which must stay
    byte-for-byte the same), or 'empty' (an existing empty directory, which must stay empty but for a lock file).
  setup: (tmp, workdir) -> None, writes the files the case needs (bad data, a corrupt status.json, ...).
  """

  name: str
  experiment: str
  args: tuple[str, ...]
  code: int
  expect: str  # A substring of the one message: the file or field, and the fix.
  workdir: str = 'new'
  setup: Callable | None = None


def _bad_config(text: str) -> Callable:
  def setup(tmp, workdir):
    (tmp / 'bad.py').write_text(text)

  return setup


def _mnist_data(corrupt: Callable[[str], None]) -> Callable:
  def setup(tmp, workdir):
    (tmp / 'data').mkdir()
    write_mnist_dir(tmp / 'data', 20, 10)
    corrupt(str(tmp / 'data' / 'train-images-idx3-ubyte'))

  return setup


def _truncate(path: str) -> None:
  with open(path, 'r+b') as f:
    f.truncate(100)


def _garbage(path: str) -> None:
  with open(path, 'wb') as f:
    f.write(b'<html>not found</html>')


def _amat(lines: str) -> Callable:
  def setup(tmp, workdir):
    (tmp / 'data').mkdir()
    for split in ('train', 'valid', 'test'):
      (tmp / 'data' / f'binarized_mnist_{split}.amat').write_text(lines)

  return setup


def _draw_idx(tmp, workdir):
  (tmp / 'data').mkdir()
  write_mnist_dir(tmp / 'data', 20, 10)
  write_idx(tmp / 'data' / 't10k-images-idx3-ubyte', np.zeros((10, 28, 28), np.uint8))
  _truncate(str(tmp / 'data' / 't10k-images-idx3-ubyte'))


def _write(name: str, text: str) -> Callable:
  def setup(tmp, workdir):
    with open(os.path.join(workdir, name), 'w') as f:
      f.write(text)

  return setup


def _write_tmp(name: str, text: str) -> Callable:
  def setup(tmp, workdir):
    (tmp / name).write_text(text)

  return setup


def _a_file(tmp, workdir):
  (tmp / 'afile').write_text('x')


def _read_only(tmp, workdir):
  if os.geteuid() == 0:
    pytest.skip('root writes into read-only directories')
  (tmp / 'ro').mkdir()
  os.chmod(tmp / 'ro', 0o555)


M, D, S, A = 'mnist', 'draw', 'skip_thoughts', 'attentive_reader'
ST_SMOKE = 'configs/skip_thoughts.py:smoke'


def _questions(text: str) -> Callable:
  def setup(tmp, workdir):
    for folder in ('training', 'validation'):
      os.makedirs(tmp / 'data' / 'questions' / folder)
      (tmp / 'data' / 'questions' / folder / 'q1.question').write_text(text)

  return setup


CASES = [
  # The config file and its variants.
  Case('config-missing', M, ('--config', 'configs/mnsit.py'), 2, 'configs/mnsit.py: no such file. Fix: name a config'),
  Case(
    'config-import',
    M,
    ('--config', '{tmp}/bad.py'),
    2,
    "ModuleNotFoundError (No module named 'nope')",
    setup=_bad_config('import nope\n'),
  ),
  Case(
    'config-syntax', M, ('--config', '{tmp}/bad.py'), 2, 'SyntaxError (invalid syntax) at', setup=_bad_config('def (')
  ),
  Case('config-raises', D, ('--config', '{tmp}/bad.py'), 2, 'ZeroDivisionError', setup=_bad_config('x = 1 / 0\n')),
  Case('variant-typo', M, ('--config', 'configs/mnist.py:nrom=ln'), 2, "Unknown config variant 'nrom'"),
  Case('variant-typo-draw', D, ('--config', 'configs/draw.py:sorce=idx'), 2, "Unknown config variant 'sorce'"),
  Case('variant-type', M, ('--config', 'configs/mnist.py:batch_size=four'), 2, "batch_size='four': expected int"),
  Case('variant-batch-0', M, ('--config', 'configs/mnist.py:smoke,batch_size=0'), 2, 'Fix: e.g. --config.batch_size='),
  Case('wrong-experiment', D, ('--config', MNIST_SMOKE), 2, 'Fix: python -m experiments.draw --config configs/draw.py'),
  Case('wrong-experiment-mnist', M, ('--config', DRAW_SMOKE), 2, 'not of experiments.mnist'),
  # Overrides.
  Case('override-typo', M, ('--config', MNIST_SMOKE, '--config.batchsize=3'), 2, 'Did you mean "batch_size"'),
  Case(
    'override-nested-typo',
    M,
    ('--config', MNIST_SMOKE, '--config.optimizer.learning_rat=1e-3'),
    2,
    'Did you mean "learning_rate"',
  ),
  Case('override-typo-draw', D, ('--config', DRAW_SMOKE, '--config.model.hiden=3'), 2, 'Did you mean "hidden"'),
  Case('override-type', M, ('--config', MNIST_SMOKE, '--config.batch_size=abc'), 2, '--config.batch_size=abc'),
  Case('override-seed', M, ('--config', MNIST_SMOKE, '--config.seed=-1'), 2, 'config.seed must be an int >= 0'),
  Case(
    'override-data-seed',
    'order_embeddings',
    ('--config', 'configs/order_embeddings.py:smoke', '--config.data.seed=-3'),
    2,
    'config.data.seed must be an int >= 0; got -3',
  ),
  Case('override-value', M, ('--config', MNIST_SMOKE, '--config.model.norm=lnn'), 2, 'Fix: e.g. --config.model.norm='),
  Case('override-value-draw', D, ('--config', DRAW_SMOKE, '--config.model.glimpses=0'), 2, '--config.model.glimpses='),
  Case('flag-typo', M, ('--config', MNIST_SMOKE, '--workdri=x'), 2, 'Did you mean: workdir'),
  Case('positional', D, ('--config', DRAW_SMOKE, 'extra'), 2, 'unexpected arguments: extra'),
  Case('no-config', D, (), 2, '--config is required'),
  # Data.
  Case(
    'idx-truncated',
    M,
    ('--config', MNIST_SMOKE + ',source=idx', '--config.data.dir={tmp}/data'),
    2,
    'train-images-idx3-ubyte: IDX file truncated',
    setup=_mnist_data(_truncate),
  ),
  Case(
    'idx-garbage',
    M,
    ('--config', MNIST_SMOKE + ',source=idx', '--config.data.dir={tmp}/data'),
    2,
    'not an IDX file',
    setup=_mnist_data(_garbage),
  ),
  Case(
    'idx-no-dir',
    M,
    ('--config', MNIST_SMOKE + ',source=idx', '--config.data.dir={tmp}/nowhere'),
    2,
    'is not a directory',
  ),
  Case(
    'idx-truncated-draw',
    D,
    ('--config', DRAW_SMOKE + ',source=idx', '--config.data.dir={tmp}/data'),
    2,
    't10k-images-idx3-ubyte: IDX file truncated',
    setup=_draw_idx,
  ),
  Case(
    'amat-garbage',
    D,
    ('--config', DRAW_SMOKE + ',source=amat', '--config.data.dir={tmp}/data'),
    2,
    'binarized_mnist_train.amat, line 1: expected 784',
    setup=_amat('0 1 0\n'),
  ),
  Case('amat-missing', D, ('--config', DRAW_SMOKE + ',source=amat', '--config.data.dir={tmp}'), 2, 'lacks 3 file(s)'),
  Case('ar-variant-typo', A, ('--config', 'configs/attentive_reader.py:nrom=ln'), 2, "Unknown config variant 'nrom'"),
  Case('ar-norm', A, ('--config', AR_SMOKE, '--config.model.norm=gn'), 2, 'Fix: e.g. --config.model.norm=ln'),
  Case('ar-source', A, ('--config', AR_SMOKE + ',source=cnn'), 2, 'choose one of procedural, questions, top4'),
  Case('ar-no-dir', A, ('--config', AR_SMOKE + ',source=questions'), 2, 'set --config.data.dir'),
  Case('ar-top4-missing', A, ('--config', AR_SMOKE + ',source=top4', '--config.data.dir={tmp}'), 2, 'lacks dict.pkl'),
  Case(
    'ar-question-truncated',
    A,
    ('--config', AR_SMOKE + ',source=questions', '--config.data.dir={tmp}/data'),
    2,
    'q1.question: expected blocks separated by blank lines',
    setup=_questions('http://x\n\n@entity0 met @entity1 .\n'),
  ),
  # The workdir.
  Case('workdir-missing', M, ('--config', MNIST_SMOKE), 2, '--workdir is required'),
  Case(
    'workdir-under-file', M, ('--config', MNIST_SMOKE, '--workdir={tmp}/afile/run'), 3, 'Not a directory', setup=_a_file
  ),
  Case('workdir-under-file-draw', D, ('--config', DRAW_SMOKE, '--workdir={tmp}/afile'), 3, 'is a file', setup=_a_file),
  Case('workdir-sys', M, ('--config', MNIST_SMOKE, '--workdir=/sys/layernorm_test'), 3, 'Fix: choose a --workdir'),
  Case(
    'workdir-read-only', D, ('--config', DRAW_SMOKE, '--workdir={tmp}/ro/run'), 3, 'Permission denied', setup=_read_only
  ),
  Case(
    'workdir-other-config',
    M,
    ('--config', MNIST_SMOKE, '--config.seed=1'),
    3,
    'seed: 0 in the workdir, 1 now',
    workdir='trained',
  ),
  Case(
    'workdir-other-experiment', D, ('--config', DRAW_SMOKE), 3, 'holds a run with a different config', workdir='trained'
  ),
  Case(
    'workdir-corrupt-config',
    M,
    ('--config', MNIST_SMOKE),
    3,
    'config.json is corrupt',
    workdir='trained',
    setup=_write('config.json', '{"batch_size": 12'),
  ),
  Case(
    'workdir-corrupt-status',
    M,
    ('--config', MNIST_SMOKE),
    3,
    'status.json is corrupt',
    workdir='trained',
    setup=_write('status.json', '\x00\x00'),
  ),
  Case(
    'workdir-not-a-run',
    D,
    ('--config', DRAW_SMOKE),
    3,
    'holds no run',
    workdir='empty',
    setup=_write('notes.txt', 'mine'),
  ),
  Case('workdir-locked', M, ('--config', MNIST_SMOKE), 3, 'Another process is training', workdir='empty'),
  # Skip-thoughts: its variants, its corpus directory, its downstream settings.
  Case('variant-typo-st', S, ('--config', 'configs/skip_thoughts.py:nrom=ln'), 2, "Unknown config variant 'nrom'"),
  Case('norm-st', S, ('--config', ST_SMOKE, '--config.model.norm=bn'), 2, 'Fix: e.g. --config.model.norm=ln'),
  Case('text-no-dir', S, ('--config', ST_SMOKE + ',source=text'), 2, 'Fix: --config.data.dir=DIR'),
  Case('text-empty-dir', S, ('--config', ST_SMOKE + ',source=text', '--config.data.dir={tmp}'), 2, 'no *.txt files'),
  Case(
    'text-too-short',
    S,
    ('--config', ST_SMOKE + ',source=text', '--config.data.dir={tmp}'),
    2,
    'holds 2 sentences; a triple needs 3',
    setup=_write_tmp('corpus.txt', 'one sentence .\nanother one .\n'),
  ),
  Case('eval-every-st', S, ('--config', ST_SMOKE, '--config.eval.every_steps=3'), 2, 'set only --config.eval.every'),
  Case('eval-dir-st', S, ('--config', ST_SMOKE, '--config.eval.dir={tmp}/none'), 2, 'config.eval.dir='),
  Case('workdir-other-experiment-st', S, ('--config', ST_SMOKE), 3, 'different config', workdir='trained'),
  # Training.
  Case(
    'diverged',
    M,
    ('--config', MNIST_SMOKE, '--config.optimizer.learning_rate=1e30'),
    4,
    'Diverged: a NaN or Inf',
    workdir='diverges',
  ),
]


def _digest(path: str) -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, 'rb') as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _run(experiment: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
  env = {**os.environ, 'LAYERNORM_TRACEBACK': ''}
  cmd = [sys.executable, '-m', f'experiments.{experiment}', *args]
  return cli_runner.run(cmd, cwd=ROOT, env=env, timeout=120, **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> str:
  """One finished MNIST smoke run, copied by every case that needs an existing workdir."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  result = _run('mnist', ['--config', MNIST_SMOKE, '--workdir', workdir])
  assert result.returncode == 0, result.stderr
  # The console of a CPU run: no backend probing, the final metrics once as a rounded summary.
  assert "Unable to initialize backend 'tpu'" not in result.stderr
  assert 'Final metrics' not in result.stderr and result.stderr.count('Done: eval/test/error') == 1
  return workdir


def _workdir_for(case: Case, tmp, request) -> str:
  if case.workdir == 'trained':
    workdir = str(tmp / 'run')
    shutil.copytree(request.getfixturevalue('trained'), workdir)
    return workdir
  workdir = str(tmp / 'run')
  if case.workdir == 'empty':
    os.mkdir(workdir)
  return workdir


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_wrong_command(case, tmp_path, request):
  workdir = _workdir_for(case, tmp_path, request)
  if case.setup:
    case.setup(tmp_path, workdir)
  fill = lambda a: a.format(workdir=workdir, tmp=tmp_path, data=tmp_path / 'data')
  args = [fill(a) for a in case.args]
  if not any(a.startswith('--workdir') for a in args) and case.name != 'workdir-missing':
    args += ['--workdir', workdir]
  before = _digest(workdir) if os.path.isdir(workdir) else None
  lock = None
  if case.name == 'workdir-locked':  # Another training process holds the workdir.
    lock = open(os.path.join(workdir, '.lock'), 'a+')  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    before = _digest(workdir)
  try:
    result = _run(case.experiment, args)
  finally:
    if lock:
      lock.close()
  assert result.returncode == case.code, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.count('Error:') == 1, result.stderr[-3000:]
  message = result.stderr.split('Error:', 1)[1]
  assert case.expect in message, message
  if case.workdir == 'diverges':
    assert os.path.isfile(os.path.join(workdir, 'status.json'))  # It stopped and said so.
  elif before is None:
    assert not os.path.exists(workdir) or os.path.isfile(workdir), 'a failed command created the workdir'
  else:
    assert _digest(workdir) == before


def test_console_drops_orbax_read_only_notices(caplog):
  import logging

  from experiments import console

  console.quiet()
  with caplog.at_level(logging.WARNING):
    logging.getLogger('absl').warning('Given directory is read only=%s', '/x/checkpoints')
    logging.getLogger('absl').warning('Something else')
  assert [r.getMessage() for r in caplog.records] == ['Something else']


def test_traceback_on_request(tmp_path):
  """LAYERNORM_TRACEBACK=1 shows where a known error came from, for debugging."""
  env = {**os.environ, 'LAYERNORM_TRACEBACK': '1'}
  cmd = [sys.executable, '-m', 'experiments.mnist', '--config', MNIST_SMOKE, '--config.batchsize=3', '--workdir', 'x']
  result = cli_runner.run(cmd, cwd=ROOT, env=env, timeout=120)
  assert result.returncode != 0
  assert 'Traceback' in result.stderr and 'batchsize' in result.stderr


def test_list_config_and_help():
  listed = _run('mnist', ['--config', MNIST_SMOKE, '--list_config'])
  assert listed.returncode == 0, listed.stderr
  assert 'Variants' in listed.stdout and 'hidden_sizes:' in listed.stdout and 'learning_rate: 0.001' in listed.stdout
  shown = _run('draw', ['--help'])  # absl exits 1 after --help.
  for flag in ('--config', '--workdir', '--list_config'):
    assert flag in shown.stdout, shown.stdout


def test_read_only_run_lock_is_a_workdir_error():
  # Root (as here) can open a read-only run's lock; a user gets this PermissionError, which must exit 3, not 2.
  from experiments import cli_errors

  message, code = cli_errors.os_error_message(PermissionError(13, 'Permission denied', '/w/run/.lock'), '/w/run')
  assert code == cli_errors.EXIT_WORKDIR and '--workdir /w/run' in message and 'Permission denied' in message
  message, code = cli_errors.os_error_message(PermissionError(13, 'Permission denied', '/data/x.amat'), '/w/run')
  assert code == cli_errors.EXIT_CONFIG and message.startswith('/data/x.amat: Permission denied')


def test_tilde_and_variables_expand_in_data_dirs_and_workdirs(tmp_path):
  (tmp_path / 'data').mkdir()
  write_mnist_dir(tmp_path / 'data', 20, 10)
  env = {**os.environ, 'HOME': str(tmp_path), 'RUNS': str(tmp_path / 'runs')}
  args = ['--config', MNIST_SMOKE + ',source=idx', '--config.data.dir=~/data', '--workdir', '$RUNS/x', '--dry_run']
  cmd = [sys.executable, '-m', 'experiments.mnist', *args]
  result = cli_runner.run(cmd, cwd=ROOT, env=env, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'would train in {tmp_path}/runs/x' in result.stdout
