"""benchmarks.timing.text_table: the layout every benchmark prints its results in."""

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
