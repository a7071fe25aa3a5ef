"""Metric writers: `metrics.jsonl` in the workdir (the source of truth) and TensorBoard event files beside it.

A resumed run first cuts both back to the restored step, so that no step is ever logged twice. Only process 0 of a
multi-host run writes (`enabled=False` elsewhere). TensorBoard files come from tensorboardX: clu's and flax's
writers import TensorFlow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from experiments.workdir import CONFIG_FILE, METRICS_FILE, atomic_write, json_value, read_rows


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
    self.rows = [r for r in read_rows(workdir) if r['step'] <= resume_step]
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
