"""The selected model on disk (`checkpoints_best/<step>` and `best.json`), kept consistent with the run's checkpoints.

A run resumes from its last good regular checkpoint, at step S, and runs the steps after S again. Whatever model
selection wrote after S (a process killed after a new best was saved, before that step's regular checkpoint) belongs
to steps that will run again: left in place, the re-run would find the same step best and Orbax would refuse to save
`checkpoints_best/<step>` a second time, on every re-run. So a resume rolls the record back to the best as of S (which
the regular checkpoint carries in its metadata) and deletes the best checkpoints newer than S.

Crash safety, by the order of the writes:
* a new best: its checkpoint (Orbax writes a temporary directory and renames it), then best.json (an atomic
  replace), then pruning; best.json therefore never names a missing checkpoint;
* a roll-back: best.json first (it names an older checkpoint, still there), then the deletions;
* pruning keeps every best checkpoint that a resume may roll back to: the current best and the best recorded in each
  of the newest regular checkpoints (those a resume restores, or falls back to if the newest is corrupt).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging

from experiments import workdir as wd
from experiments.loop import checkpoints

BEST_CHECKPOINT_DIR = 'checkpoints_best'


def best_checkpointer(workdir: str, *, read_only: bool = False) -> checkpoints.Checkpointer:
  # Orbax deletes nothing by itself (max_to_keep=None): which best checkpoints may go depends on the run's regular
  # checkpoints, which only `BestStore.prune` knows.
  return checkpoints.Checkpointer(os.path.join(workdir, BEST_CHECKPOINT_DIR), max_to_keep=None, read_only=read_only)


class BestStore:
  """The best checkpoints and best.json of one run, open for the run.

  Args:
    workdir: the run's directory.
    metric, mode: `config.best_metric` and its resolved mode, recorded in best.json.
    is_writer: process 0, the one that writes best.json (every process takes part in the checkpoints).
  """

  def __init__(self, workdir: str, metric: str, mode: str, *, is_writer: bool):
    self.workdir, self.metric, self.mode, self.is_writer = workdir, metric, mode, is_writer
    self.checkpointer = best_checkpointer(workdir)

  def steps(self) -> list[int]:
    return self.checkpointer.steps()

  def roll_back(self, best: dict | None, step: int) -> dict | None:
    """Makes the record the one as of `step`, the step the run resumes from; returns the best to go on with.

    Args:
      best: {'value', 'step'} as saved in the regular checkpoint at `step` (None: nothing selected yet).
      step: the resumed step (0 for a run that starts anew).

    Returns:
      `best`, or None if its checkpoint was pruned (a resume from a checkpoint older than the newest few, after
      the newer ones were found corrupt): selection then starts again from `step`.
    """
    if best is not None and best['step'] not in self.steps():
      logging.warning(
        'The best checkpoint as of step %d (step %d) is no longer in %s; model selection starts again from step %d.',
        step,
        best['step'],
        self.checkpointer.directory,
        step,
      )
      best = None
    self._write_record(best)
    for stale in self.steps():
      if stale > step:
        logging.info('Deleting the best checkpoint at step %d, newer than the resumed step %d.', stale, step)
        self.checkpointer.delete(stale)
    return best

  def save(self, state: dict, best: dict, keep: set[int]) -> None:
    """Saves `state` as the new best {'value', 'step'}, records it, then prunes to `keep` and the new best."""
    step, value = best['step'], best['value']
    self.checkpointer.save(step, state, {'metric': self.metric, 'mode': self.mode, 'value': value})
    self._write_record(best)
    self.prune(keep | {step})

  def prune(self, keep: set[int]) -> None:
    """Deletes the best checkpoints whose steps are not in `keep` (no resume can roll back to them)."""
    for step in self.steps():
      if step not in keep:
        self.checkpointer.delete(step)

  def restore(self, step: int, abstract_tree: Any) -> dict:
    return self.checkpointer.restore(step, abstract_tree)[0]

  def _write_record(self, best: dict | None) -> None:
    if not self.is_writer:
      return
    path = os.path.join(self.workdir, wd.BEST_FILE)
    if best is None:
      if os.path.exists(path):
        os.remove(path)
      return
    record = {'metric': self.metric, 'mode': self.mode, 'value': best['value'], 'step': best['step']}
    wd.write_json(path, record)

  def close(self) -> None:
    self.checkpointer.close()
