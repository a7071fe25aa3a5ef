"""Every `python -m ...` command in the bash blocks of the README and the docs it points to (each experiment's
README, docs/*.md) at least parses, as written.

The blocks run under bash with `python` replaced by a recorder, so that loops, variables and line continuations
expand as they would for a reader; then each experiment command runs with --dry_run (flags, config file, variants,
validate) and a tmp workdir, each sweep with --dry_run, and each plot/report/picture command must read a workdir
that a command in these files creates.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import cli_runner
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READERS = ('scripts.plot', 'scripts.report', 'scripts.draw_pictures')
# Bash stubs: `python` records its arguments; the other programs the blocks call do nothing.
STUBS = r"""
python() { local a; for a in "$@"; do printf '%s\037' "$a"; done >> "$RECORD"; printf '\036' >> "$RECORD"; }
make() { :; }; tensorboard() { :; }; source() { :; }
"""


# The top-level README first, then the experiments' READMEs and docs/, where most commands now live.
DOCS = ['README.md']
DOCS += sorted(glob.glob('experiments/*/README.md', root_dir=ROOT)) + sorted(glob.glob('docs/*.md', root_dir=ROOT))


def readme_commands(doc: str = 'README.md') -> list[list[str]]:
  with open(os.path.join(ROOT, doc)) as f:
    blocks = re.findall(r'```bash\n(.*?)```', f.read(), flags=re.DOTALL)
  record = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'readme_commands_{os.getpid()}')
  if os.path.exists(record):
    os.remove(record)
  if not blocks:
    return []
  for block in blocks:  # Run in an empty directory, so that globs such as runs/x/* stay as written.
    empty = os.path.join(os.path.dirname(record), f'readme_cwd_{os.getpid()}')
    os.makedirs(empty, exist_ok=True)
    subprocess.run(['bash', '-c', STUBS + block], cwd=empty, env={**os.environ, 'RECORD': record}, check=True)
  with open(record) as f:
    text = f.read()
  os.remove(record)
  return [c.split('\037')[:-1] for c in text.split('\036') if c]


README_COMMANDS = readme_commands()
COMMANDS = [c for doc in DOCS for c in (README_COMMANDS if doc == 'README.md' else readme_commands(doc))]


def _value(args: list[str], flag: str) -> str | None:
  for i, a in enumerate(args):
    if a.startswith(flag + '='):
      return a.split('=', 1)[1]
    if a == flag and i + 1 < len(args):
      return args[i + 1]
  return None


def _replace(args: list[str], flag: str, value: str) -> list[str]:
  out, skip = [], False
  for i, a in enumerate(args):
    if skip:
      skip = False
    elif a.startswith(flag + '='):
      out.append(f'{flag}={value}')
    elif a == flag and i + 1 < len(args):
      out += [flag, value]
      skip = True
    else:
      out.append(a)
  return out


def test_the_readme_has_commands_of_every_kind():
  assert len(DOCS) >= 7, DOCS  # README.md and the six experiments' READMEs at least.
  modules = {c[1] for c in README_COMMANDS if c[0] == '-m'}
  assert {'experiments.mnist', 'experiments.draw', 'scripts.sweep', 'scripts.plot', 'scripts.report'} <= modules
  assert all(c[0] == '-m' for c in COMMANDS), [c for c in COMMANDS if c[0] != '-m']


# Tools that read a trained workdir (evaluate, pictures, sample) rather than train: `--help` must work.
TOOLS = ('.evaluate', '.pictures', '.sample', '.figure5')
TRAINING = [c for c in COMMANDS if c[1].startswith('experiments.') and not c[1].endswith(TOOLS)]


@pytest.mark.parametrize('module', sorted({c[1] for c in COMMANDS if c[1].endswith(TOOLS)}))
def test_tool_command_exists(module):
  command = [sys.executable, '-m', module, '--help']
  result = cli_runner.run(command, cwd=ROOT, timeout=120)
  assert result.returncode == 0 and 'usage' in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize('args', TRAINING, ids=' '.join)
def test_experiment_command_parses(args, tmp_path):
  args = [*_replace(args, '--workdir', str(tmp_path / 'run')), '--dry_run']
  result = cli_runner.run([sys.executable, *args], cwd=ROOT, timeout=120)
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  if result.returncode:  # Allowed only where the command names data this machine does not have.
    assert result.returncode == 2 and 'Invalid config' in result.stderr, result.stderr[-2000:]
    problems = [line for line in result.stderr.splitlines() if line.startswith('  - ')]
    data_dirs = ('  - config.data (source=', '  - config.eval.dir=')  # The training data, the downstream files.
    assert problems and all(p.startswith(data_dirs) for p in problems), result.stderr[-2000:]
  else:
    assert 'Config OK' in result.stdout
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('args', [c for c in COMMANDS if c[1] == 'scripts.sweep'], ids=' '.join)
def test_sweep_command_parses(args, tmp_path):
  args = _replace(args, '--root', str(tmp_path / 'sweep'))
  args += [] if '--dry_run' in args else ['--dry_run']
  result = cli_runner.run([sys.executable, *args], cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '--workdir' in result.stdout


def _written_by_the_readme() -> list[str]:
  made = []
  for c in COMMANDS:
    if c[1].startswith('experiments.'):
      made.append(_value(c, '--workdir'))
    elif c[1] == 'scripts.sweep':
      made.append(_value(c, '--root'))
  return [os.path.normpath(m) for m in made if m]


@pytest.mark.parametrize('args', [c for c in COMMANDS if c[1] in READERS], ids=' '.join)
def test_reader_commands_read_what_the_readme_writes(args):
  made = _written_by_the_readme()
  paths = [a for a in args[2:] if a.startswith('runs/')]
  assert paths, args
  for path in paths:
    path = os.path.normpath(path.removesuffix('/*'))
    covered = [m for m in made if m == path or m.startswith(path + os.sep) or path.startswith(m + os.sep)]
    assert covered, f'{" ".join(args)} reads {path}, which no README command creates'


@pytest.mark.parametrize('module', sorted({c[1] for c in COMMANDS if c[1] in READERS}))
def test_reader_modules_parse_their_flags(module):
  result = cli_runner.run([sys.executable, '-m', module, '--help'], cwd=ROOT)
  assert result.returncode == 0 and 'usage' in result.stdout.lower(), result.stderr[-2000:]


@pytest.mark.parametrize('args', [c for c in COMMANDS if c[1] == 'scripts.reproduce'], ids=' '.join)
def test_reproduce_command_plans_its_runs(args, tmp_path):
  args = _replace(_replace(args, '--root', str(tmp_path / 'runs')), '--out', str(tmp_path / 'report'))
  result = cli_runner.run([sys.executable, *args, '--dry_run'], cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'to run' in result.stdout and ' --workdir ' + str(tmp_path / 'runs') in result.stdout
  assert not os.path.exists(tmp_path / 'runs') and not os.path.exists(tmp_path / 'report')
