"""benchmarks.timing: the table layout every benchmark prints its results in, and the flags they share."""

import argparse

import pytest

from benchmarks import timing


def test_text_columns_left_numbers_right_and_blank_lines_between_groups():
  lines = [('lstm', 'fwd', '1.5'), ('lstm', 'fwd', '12.25'), ('gru', 'fwd', '3.0')]
  table = timing.text_table(('cell', 'pass', 'ms'), lines, text_columns={0, 1}, group_by=1)
  assert table.splitlines() == [
    'cell  pass     ms',
    '----  ----  -----',
    'lstm  fwd     1.5',
    'lstm  fwd   12.25',
    '',
    'gru   fwd     3.0',
  ]


def test_no_grouping_by_default():
  table = timing.text_table(('a', 'b'), [('x', '1'), ('y', '2')], text_columns={0})
  assert '' not in table.splitlines()


def test_sampling_flags_reject_counts_below_one(capsys):
  parser = argparse.ArgumentParser()
  timing.add_sampling_arguments(parser, repeats=7, warmup=2)
  assert vars(parser.parse_args([])) == {'repeats': 7, 'warmup': 2, 'json': None}
  for bad in (['--repeats', '0'], ['--warmup', 'two']):
    with pytest.raises(SystemExit) as exit_info:
      parser.parse_args(bad)
    assert exit_info.value.code == 2
  assert 'expected an integer of at least 1' in capsys.readouterr().err
