"""A run's workdir: file names, atomic writes, the status file, the lock, and readers. No jax here.

Everything that reads a workdir (the loop, `scripts/plot.py`, `scripts/report.py`, sampling scripts) goes through
this module, so that the layout is written down once:

  config.json      the resolved config (written once, at the start of a new run)
  metrics.jsonl    one JSON object per logged step: {"step": int, "train/loss": ..., "eval/<split>/<name>": ...}
  status.json      {"status": "running" | "done" | "diverged" | "interrupted", "step", "total_steps", ...}
  best.json        the model-selection record: {"metric", "mode", "value", "step"} (runs with `best_metric`)
  task.json        what a model needs besides its weights (vocabulary, input sizes, ...): `Task.metadata`
  checkpoints/     Orbax checkpoints (`experiments.loop.checkpoints`)
  checkpoints_best/  the best model's checkpoints (`experiments.loop.best`), consistent with best.json on resume
  events.out.*     TensorBoard event files
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
STATUS_FILE = 'status.json'
BEST_FILE = 'best.json'
TASK_FILE = 'task.json'
CHECKPOINT_DIR = 'checkpoints'
LOCK_FILE = '.lock'
STATUSES = ('running', 'done', 'diverged', 'interrupted')


class WorkdirError(RuntimeError):
  """The workdir cannot be used for this run; the message says why and what to do."""


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` so that a reader (or a SIGKILL) sees the old file or the new one, never a mix."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str) -> Any | None:
  """The JSON in `path`, None if there is no such file; WorkdirError naming the file if it is not JSON."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise WorkdirError(
      f'{path} is corrupt ({e}). Fix: restore it from a backup, or delete the workdir and start a new run.'
    ) from None


def write_json(path: str, payload: Any) -> None:
  atomic_write(path, json.dumps(payload, indent=2, sort_keys=True) + '\n')


def read_rows(workdir: str, *, strict: bool = False) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`; a partly written last line (a killed or running run) is skipped.

  Args:
    workdir: the run's directory.
    strict: raise ValueError naming the file if it is missing, empty, or malformed before its last line (for
      readers such as plots, where a silent empty curve would mislead); otherwise return what can be read.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    if strict:
      raise ValueError(f'{path}: not found. Is {workdir or "."} a workdir? Runs write {METRICS_FILE} there.')
    return []
  with open(path) as f:
    lines = f.read().splitlines()
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines) - 1 or not strict:  # Only a SIGKILL (or a running job) mid-write leaves a broken line.
        if strict:
          print(f'{path}: skipping the partly written last line {i + 1}.', file=sys.stderr)
        continue
      raise ValueError(f'{path}, line {i + 1}: not JSON ({e}); each line must be one JSON object.') from e
    if strict and not isinstance(row, dict):
      raise ValueError(f'{path}, line {i + 1}: expected a JSON object, found {type(row).__name__}.')
    if isinstance(row, dict) and isinstance(row.get('step'), int):
      rows.append(row)
  if strict and not rows:
    raise ValueError(f'{path}: no rows (empty file). Has the run logged anything yet?')
  return rows


def scan_metrics(workdir: str) -> tuple[list[dict], list[int]]:
  """(rows, numbers of the bad lines) of `workdir/metrics.jsonl`; ([], []) if there is no such file.

  Each non-blank line is a row (a JSON object with an int 'step') or a bad line (numbered from 1): a write cut short
  (a SIGKILL, a full disk) or a damaged file. Unlike `read_rows`, this says which lines it could not read.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return [], []
  with open(path, 'rb') as f:
    lines = f.read().splitlines()
  rows, bad = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
      row = None
    if isinstance(row, dict) and isinstance(row.get('step'), int):
      rows.append(row)
    else:
      bad.append(number)
  return rows, bad


def keep_corrupt_metrics(workdir: str) -> str:
  """Copies `metrics.jsonl` to `metrics.jsonl.corrupt-<UTC time>` beside it, before it is rewritten; returns the copy.

  Whatever a damaged line held stays readable there: the rewrite keeps only the rows that parse.
  """
  path = os.path.join(workdir, METRICS_FILE)
  stamp = datetime.datetime.now(datetime.UTC).strftime('%Y%m%dT%H%M%S.%fZ')
  kept = f'{path}.corrupt-{stamp}'
  shutil.copyfile(path, kept)
  return kept


def read_status(workdir: str) -> dict | None:
  """The workdir's `status.json` ({'status': 'running' | 'done' | ..., 'step', 'message', ...}) or None."""
  return read_json(os.path.join(workdir, STATUS_FILE))


def write_status(workdir: str, status: str, step: int, total: int, message: str = '', **fields) -> None:
  """Records where the run stands; `fields` (epoch, metrics, eta, ...) are added as they are."""
  assert status in STATUSES, status
  payload = {
    'status': status,
    'step': int(step),
    'total_steps': int(total),
    'message': message,
    'metrics': {},
    **fields,
    'updated': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
  }
  write_json(os.path.join(workdir, STATUS_FILE), payload)


def read_saved_config(workdir: str) -> dict | None:
  """The resolved config a run saved in `workdir` as a plain dict, or None for a workdir without one."""
  return read_json(os.path.join(workdir, CONFIG_FILE))


def read_best(workdir: str) -> dict | None:
  """The model-selection record {'metric', 'mode', 'value', 'step'}, or None before the first evaluation."""
  return read_json(os.path.join(workdir, BEST_FILE))


def read_task_metadata(workdir: str) -> dict:
  """What the task recorded besides the weights (`Task.metadata`); {} if it recorded nothing."""
  return read_json(os.path.join(workdir, TASK_FILE)) or {}


def flatten(d: Mapping, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_differences(saved: Mapping, wanted: Mapping) -> list[tuple[str, Any, Any]]:
  """(field, saved value, wanted value) for every dotted field that differs; '<missing>' for an absent one.

  A field the saved config lacks and the wanted one leaves at None is no difference: fields are added to configs
  with None as the old behaviour (e.g. `data.num_valid`), and the runs made before them must still resume.
  """
  saved, wanted = flatten(saved), flatten(wanted)
  differs = lambda k: saved.get(k, '<missing>') != wanted.get(k, '<missing>') and (k in saved or wanted[k] is not None)
  keys = sorted(k for k in saved.keys() | wanted.keys() if differs(k))
  return [(k, saved.get(k, '<missing>'), wanted.get(k, '<missing>')) for k in keys]


def lock(workdir: str):
  """An exclusive lock on the workdir for this process (released by the OS even on SIGKILL); returns the file."""
  f = open(os.path.join(workdir, LOCK_FILE), 'a+')  # noqa: SIM115 -- held for the whole run.
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise WorkdirError(
      f'Another process is training in {workdir}. Fix: wait for it to finish, or stop it, then re-run.'
    ) from None
  return f


def json_value(v: float) -> float | None:
  """JSON has no NaN or Inf; null keeps the file standard (a diverged run never logs them anyway)."""
  return v if math.isfinite(v) else None
