"""`python -m MODULE ARGS` for the tests, as a user runs it, without paying Python's and jax's imports every time.

A test suite that runs a command line a hundred times spends most of it importing jax, flax, optax and orbax (about
2 s a process on these 2 cores). `run` hands the command to a *zygote*: one process per test worker that has
imported those libraries (and nothing of the project, and no jax backend: it never runs a computation) and forks a
child for each command. The child is a new process as `python -m` would start it: its own argv, working directory,
stdin, stdout and stderr files, `__main__` module run by runpy, exit status; the project's modules are imported in
the child, fresh. Only the imported libraries are shared, read-only, as forked memory.

An `env` that differs from this process's in variables read at run time (LAYERNORM_TRACEBACK, HOME, ...) is set in
the child. Where the command needs what a fork cannot give (a variable the imported libraries read at import: JAX_*,
XLA_*, ...; input on stdin; a program other than `python -m`), `run` starts a real subprocess instead. `run` returns
what `subprocess.run(..., capture_output=True, text=True)` returns.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The zygote: imports the libraries, then forks one child per request line ({argv, cwd, out, err, timeout}) and
# answers each with a line {code}. The child's exit status is the command's, as a subprocess's would be.
ZYGOTE = r"""
import faulthandler, json, os, runpy, signal, sys, time, traceback
import jax, jax.numpy, flax.nnx, optax, orbax.checkpoint, ml_collections, absl.app, absl.flags, numpy  # noqa

def child(request):
  for name, value in request['env'].items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value
  os.chdir(request['cwd'])
  # The file descriptors are replaced, not sys.stdout and sys.stderr: logging handlers made at import hold those very
  # objects (and the project's console setup recognises its handlers by them).
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
  for fd, path in ((1, request['out']), (2, request['err'])):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
  signal.signal(signal.SIGINT, signal.default_int_handler)
  faulthandler.dump_traceback_later(max(request['timeout'] - 2, 1))  # Where a command that will time out is stuck.
  module, *args = request['argv']
  sys.argv = [module, *args]
  sys.path[0] = request['cwd']  # As `python -m` puts the working directory first.
  code = 0
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else (print(e.code, file=sys.stderr) or 1))
  except BaseException:
    traceback.print_exc()
    code = 1
  raise SystemExit(code)  # Out of the loop below: the interpreter ends as `python -m` ends (atexit, threads, flush).

for line in sys.stdin:
  request = json.loads(line)
  pid = os.fork()
  if pid == 0:
    child(request)
  deadline = time.monotonic() + request['timeout']
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      break
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      status = None
      break
    time.sleep(0.005)
  code = None if status is None else os.waitstatus_to_exitcode(status)
  print(json.dumps({'code': code}), flush=True)
"""

_zygote: subprocess.Popen | None = None
_zygote_env: dict[str, str] = {}  # The environment the zygote started with: a child gets the differences set.
# Read when a library is imported (the zygote's imports are shared), so a command that sets one gets a real process.
IMPORT_TIME_PREFIXES = ('JAX_', 'XLA_', 'TF_', 'LD_', 'PYTHON', 'OMP_', 'MALLOC_', 'TPU_', 'CUDA', 'NVIDIA')


def _start() -> subprocess.Popen:
  global _zygote, _zygote_env
  if _zygote is None or _zygote.poll() is not None:
    _zygote_env = dict(os.environ)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))}
    _zygote = subprocess.Popen(
      [sys.executable, '-c', ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    atexit.register(_zygote.kill)
  return _zygote


def run(
  argv: list[str], cwd: str = ROOT, timeout: float = 300, env: dict | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
  """Runs `argv` ([sys.executable, '-m', module, *args]) and returns its exit status, stdout and stderr as text."""
  forkable = argv[:2] == [sys.executable, '-m'] and input is None
  if forkable:
    zygote = _start()
    # Against the zygote's environment, not this process's: a test may have set a variable since the zygote started
    # (monkeypatch.setenv), and a subprocess would inherit it.
    wanted = dict(os.environ if env is None else env)
    changed = {k: v for k, v in wanted.items() if _zygote_env.get(k) != v}
    changed |= {k: None for k in _zygote_env if k not in wanted}
    forkable = not any(name.startswith(IMPORT_TIME_PREFIXES) for name in changed)
  if not forkable:
    return subprocess.run(argv, cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout)
  with tempfile.TemporaryDirectory(prefix='cli-runner-') as tmp:
    out, err = os.path.join(tmp, 'out'), os.path.join(tmp, 'err')
    request = {'argv': argv[2:], 'cwd': os.path.abspath(cwd), 'env': changed, 'out': out, 'err': err}
    request['timeout'] = timeout
    zygote.stdin.write(json.dumps(request) + '\n')
    zygote.stdin.flush()
    code = json.loads(zygote.stdout.readline())['code']
    with open(out) as f_out, open(err) as f_err:
      stdout, stderr = f_out.read(), f_err.read()
    if code is None:  # The stderr holds the stacks faulthandler dumped before the child was killed.
      raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
    return subprocess.CompletedProcess(argv, code, stdout, stderr)
