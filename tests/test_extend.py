"""Extending a finished run with a larger num_epochs or num_train_steps: the past stays, the result equals a run
that was that long from the start; every other change is refused, naming the fields and the reason."""

import json
import os

import pytest
import test_train_loop as tl

from experiments import loop
from experiments import workdir as wd


def test_extending_a_done_run_equals_a_longer_run_from_the_start(tmp_path):
  workdir, straight = str(tmp_path / 'run'), str(tmp_path / 'straight')
  final = loop.train(tl.make_config(num_epochs=2), straight, tl.make_task())
  loop.train(tl.make_config(num_epochs=1), workdir, tl.make_task())
  first_rows = loop.read_rows(workdir)
  assert loop.read_status(workdir)['status'] == 'done'

  assert loop.train(tl.make_config(num_epochs=2), workdir, tl.make_task()) == final
  assert loop.read_rows(workdir)[: len(first_rows)] == first_rows  # The logged past, timings and all, stays.
  assert tl.comparable_rows(workdir) == tl.comparable_rows(straight)
  assert tl.final_digest(workdir) == tl.final_digest(straight)
  status = loop.read_status(workdir)
  assert (status['status'], status['step'], status['total_steps']) == ('done', 16, 16)
  with open(os.path.join(workdir, wd.CONFIG_FILE)) as f:
    assert json.load(f)['num_epochs'] == 2  # The workdir now holds the extended run: re-running it resumes it.
  assert loop.train(tl.make_config(num_epochs=2), workdir, tl.make_task()) == final


@pytest.fixture(scope='module')
def one_epoch(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('one_epoch'))
  loop.train(tl.make_config(num_epochs=1), workdir, tl.make_task())
  return workdir


@pytest.mark.parametrize(
  'overrides,message',
  [
    ({'num_epochs': 2, 'optimizer.learning_rate': 0.01}, r'optimizer\.learning_rate cannot change'),
    ({'num_train_steps': 4}, r'run of 8 steps; this config \(num_train_steps: -1 in the workdir, 4 now\) trains for 4'),
  ],
)
def test_changes_other_than_a_longer_schedule_are_refused(one_epoch, overrides, message):
  before = loop.read_rows(one_epoch)
  with pytest.raises(loop.WorkdirError, match=message):
    loop.train(tl.make_config(**{'num_epochs': 1, **overrides}), one_epoch, tl.make_task())
  assert loop.read_rows(one_epoch) == before and loop.read_status(one_epoch)['status'] == 'done'


def test_a_decaying_learning_rate_cannot_be_extended(tmp_path):
  workdir = str(tmp_path)
  loop.train(tl.make_config(num_epochs=1, **{'optimizer.schedule': 'cosine'}), workdir, tl.make_task())
  with pytest.raises(loop.WorkdirError, match=r"schedule='cosine', whose learning rate decays over the total steps"):
    loop.train(tl.make_config(num_epochs=2, **{'optimizer.schedule': 'cosine'}), workdir, tl.make_task())
