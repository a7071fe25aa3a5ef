"""Metric writers: `metrics.jsonl` in the workdir (the source of truth) and TensorBoard event files beside it.

A resumed run first cuts both back to the restored step, so that no step is ever logged twice. A line of
`metrics.jsonl` that does not parse (a write cut short, a damaged file) is never dropped silently: the resume says
so, keeps the original beside it (`metrics.jsonl.corrupt-<time>`), and logs the steps after its checkpoint again;
a finished run whose log lost its tail gets its final row back from status.json (`check_finished_log`). Only
process 0 of a multi-host run writes (`enabled=False` elsewhere). TensorBoard files come from tensorboardX: clu's
and flax's writers import TensorFlow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from absl import logging

from experiments.workdir import (
  CONFIG_FILE,
  METRICS_FILE,
  STATUS_FILE,
  atomic_write,
  json_value,
  keep_corrupt_metrics,
  scan_metrics,
)


class MetricWriter:
  """Appends one JSON object per logged step to `metrics.jsonl` and the same scalars to TensorBoard.

  Args:
    workdir: the run's directory.
    resume_step: the step the run restarts from; rows logged after it by an earlier, interrupted process are removed.
    enabled: False on processes other than 0, which then write nothing.
  """

  def __init__(self, workdir: str, resume_step: int, *, enabled: bool = True):
    self.enabled = enabled
    self.rows: list[dict] = []  # Rows up to now (kept ones and new ones), for the final metrics.
    self._file = None
    self._tensorboard = None
    if not enabled:
      return
    path = os.path.join(workdir, METRICS_FILE)
    existed = os.path.exists(path)
    rows, bad_lines = scan_metrics(workdir)
    if bad_lines:
      kept = keep_corrupt_metrics(workdir)
      logging.warning(
        '%s: %s not a complete JSON row (a write cut short, or a damaged file), %s; the original file is kept as %s. '
        'The steps after %d are logged again as the run resumes from its checkpoint; a lost row before that is not.',
        path,
        _lines(bad_lines),
        _where(bad_lines, path),
        kept,
        resume_step,
      )
    self.rows = [r for r in rows if r['step'] <= resume_step]
    if existed:
      atomic_write(path, ''.join(json.dumps(r) + '\n' for r in self.rows))
    self._file = open(path, 'a')  # noqa: SIM115 -- held open for the whole run, closed by `close`.

    import tensorboardX  # Imported here: processes that do not write should not pay for it.

    # purge_step makes TensorBoard hide events an interrupted process logged after the restored step. The file name
    # holds the time in whole seconds: a resume within the same second would reopen (and empty) the interrupted
    # process's file, losing its steps up to the checkpoint. The resume step in the suffix gives a new name that
    # still sorts after the old one, as TensorBoard reads them; reusing a name is then safe: the same resume step
    # means the old file held only steps that this process logs again.
    self._tensorboard = tensorboardX.SummaryWriter(
      workdir, purge_step=resume_step + 1 if existed else None, filename_suffix=f'.{resume_step:012d}'
    )
    if not existed:
      self._log_config(workdir)

  def _log_config(self, workdir: str) -> None:
    """The run's config.json as TensorBoard text (its TEXT tab), so runs can be compared there; once per run."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        # Indented four spaces: TensorBoard renders text as Markdown, and a code block keeps the JSON's layout.
        text = ''.join(f'    {line}' for line in f)
      self._tensorboard.add_text('config', text, global_step=0)

  def write(self, step: int, scalars: Mapping[str, float | int]) -> None:
    """Logs `scalars` at `step`: one JSON line, and one TensorBoard scalar each (`epoch` too, as a curve)."""
    if not self.enabled:
      return
    row = {'step': int(step)}
    for key, value in scalars.items():
      row[key] = int(value) if isinstance(value, int) else json_value(float(value))
    self.rows.append(row)
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()  # A SIGKILL loses nothing that was flushed; fsync in `sync` guards against power loss.
    for key, value in row.items():
      if key != 'step' and value is not None:
        self._tensorboard.add_scalar(key, value, global_step=step)

  def sync(self) -> None:
    """Makes every row written so far durable: called before each checkpoint, which must not outrun its logs."""
    if not self.enabled:
      return
    self._file.flush()
    os.fsync(self._file.fileno())
    self._tensorboard.flush()

  def close(self) -> None:
    if not self.enabled or self._file is None:
      return
    self.sync()
    self._file.close()
    self._tensorboard.close()
    self._file = None


def _lines(numbers: list[int]) -> str:
  shown = ', '.join(map(str, numbers[:5])) + (f' and {len(numbers) - 5} more' if len(numbers) > 5 else '')
  return f'line {shown} is' if len(numbers) == 1 else f'lines {shown} are'


def _where(bad_lines: list[int], path: str) -> str:
  """'after step 40 and before step 60' for the first bad line: where the lost rows were."""
  with open(path, 'rb') as f:
    lines = f.read().splitlines()
  before = after = None
  for number, line in enumerate(lines, 1):
    try:
      step = json.loads(line).get('step') if line.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
      step = None
    if isinstance(step, int):
      if number < bad_lines[0]:
        before = step
      elif after is None:
        after = step
  return f'after step {before if before is not None else "0"} and ' + (
    f'before step {after}' if after is not None else 'at the end of the file'
  )


def check_finished_log(workdir: str, status: Mapping) -> None:
  """For a run that is done: says so if its `metrics.jsonl` is damaged, and repairs what it can.

  Bad lines are dropped from the file after it is kept beside it (`keep_corrupt_metrics`); a lost final row is written
  again from status.json's final metrics (the values logged at the last step). Rows lost before it cannot be logged
  again without training again; the warning says which.
  """
  path = os.path.join(workdir, METRICS_FILE)
  rows, bad_lines = scan_metrics(workdir)
  final_step, final = int(status['step']), dict(status.get('metrics') or {})
  lost_final = bool(final) and not any(r['step'] == final_step for r in rows)
  if not bad_lines and not lost_final:
    return
  problems, kept = [], None
  if bad_lines:
    problems.append(f'{_lines(bad_lines)} not a complete JSON row, {_where(bad_lines, path)}')
    kept = keep_corrupt_metrics(workdir)
  if lost_final:
    last = max((r['step'] for r in rows), default=None)
    problems.append(f'it ends at step {last} although the run finished at step {final_step}')
    rows.append({'step': final_step, **final})
  atomic_write(path, ''.join(json.dumps(r) + '\n' for r in rows))
  logging.warning(
    '%s is done, but its %s was damaged: %s.%s%s Other lost rows can only be logged again by training again (in a '
    'new --workdir).',
    workdir,
    METRICS_FILE,
    '; '.join(problems),
    f' The original is kept as {kept}; the file now holds the rows that parse.' if kept else '',
    f' The final row (step {final_step}) was written again from {STATUS_FILE}.' if lost_final else '',
  )
