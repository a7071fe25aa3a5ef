"""scripts.report on workdirs written here: values at epochs, first epoch reaching a threshold, order, errors."""

import json

import pytest

from experiments.epochs import format_epoch
from scripts import report


def write_run(d, config: dict, rows: list[dict], status: dict | None = None):
  d.mkdir(parents=True)
  (d / 'config.json').write_text(json.dumps(config))
  (d / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  if status is not None:
    (d / 'status.json').write_text(json.dumps(status))
  return d


def rows(errors: list[float]):
  # Two train rows per epoch (the second with the epoch's mean) and an eval row at the end of each epoch.
  out = []
  for epoch, error in enumerate(errors, start=1):
    out.append({'step': 2 * epoch - 1, 'epoch': epoch - 0.5, 'train/loss': 9.0})
    out.append({'step': 2 * epoch, 'epoch': epoch, 'train/loss': 1.0 / epoch})
    out.append({'step': 2 * epoch, 'epoch': epoch, 'eval/test/error': error})
  return out


@pytest.fixture
def runs_root(tmp_path):
  write_run(
    tmp_path / 'ln4', {'model': {'norm': 'ln'}, 'batch_size': 4}, rows([0.3, 0.2, 0.1]), {'status': 'done', 'step': 6}
  )
  write_run(tmp_path / 'bn4', {'model': {'norm': 'bn'}, 'batch_size': 4}, rows([0.5, 0.4]))
  write_run(tmp_path / 'ln128', {'model': {'norm': 'ln'}, 'batch_size': 128}, rows([0.25, 0.15, 0.12]))
  return tmp_path


def load(root):
  return [report.plot.load_run(p) for p in report.plot.find_runs([str(root)])]


def test_table_reads_each_metric_at_the_last_row_of_each_epoch(runs_root):
  table = report.make_table(load(runs_root), ['train/loss', 'eval/test/error'], [1, 3], [('eval/test/error', 0.2)])
  header, separator, *lines = table.splitlines()
  assert header == (
    '| run | train/loss @ epoch 1 | train/loss @ epoch 3 | eval/test/error @ epoch 1 | eval/test/error @ epoch 3 '
    '| first epoch with eval/test/error <= 0.2 |'
  )
  assert separator == '|---|---|---|---|---|---|'
  # Largest batch first, then the paper's legend order; a run that stopped early shows '-', one never reaching 'never'.
  assert lines == [
    '| LayerNorm, batch 128 | 1 | 0.3333 | 0.25 | 0.12 | 2 |',
    '| BatchNorm, batch 4 | 1 | - | 0.5 | - | never |',
    '| LayerNorm, batch 4 | 1 | 0.3333 | 0.3 | 0.1 | 2 |',
  ]


def test_status_column(runs_root):
  lines = report.make_table(load(runs_root), ['eval/test/error'], [1], status=True).splitlines()[2:]
  assert [line.rsplit('|', 2)[-2].strip() for line in lines] == ['-', '-', 'done at step 6']


def test_small_values_keep_their_magnitude():
  assert report._format(3.0e-5) == '3.00e-05'
  assert report._format(0.1234567) == '0.1235'
  assert report._format(None) == '-'


def test_unknown_metric_lists_the_logged_ones(runs_root):
  with pytest.raises(ValueError, match=r'No run logged eval/test/nll\. The runs logged: eval/test/error, train/loss'):
    report.make_table(load(runs_root), ['eval/test/nll'], [1])


@pytest.mark.parametrize('text', ['eval/test/error', 'eval/test/error=abc', '=0.1', 'eval/test/error=nan'])
def test_bad_reach_says_the_expected_form(text):
  with pytest.raises(ValueError, match='--reach expects METRIC=VALUE'):
    report.parse_reach(text)


def test_main_exits_2_with_the_message(tmp_path, capsys):
  assert report.main([str(tmp_path / 'missing'), '--metrics', 'x', '--epochs', '1']) == 2
  assert 'metrics.jsonl: not found' in capsys.readouterr().err


def test_epochs_printed_rounded_to_two_decimals_or_two_significant_digits(tmp_path):
  assert [format_epoch(e) for e in (0.002909090909090909, 49 / 6, 8.0, 0.125, 1e-5, 0.0)] == [
    '0.0029',
    '8.17',
    '8',
    '0.12',
    '0.00001',
    '0',
  ]
  # The first epoch reaching a threshold, as logged mid-epoch at full precision, is printed rounded.
  run = write_run(tmp_path / 'ln', {'model': {'norm': 'ln'}}, [{'step': 1, 'epoch': 2 / 275, 'eval/test/error': 0.1}])
  table = report.make_table(load(run), ['eval/test/error'], [1], [('eval/test/error', 0.2)])
  assert table.splitlines()[2] == '| LayerNorm | - | 0.0073 |'
