"""scripts.plot on workdirs written here: the figure's data, scales and labels, and errors that name the file."""

import json
import os

import numpy as np
import pytest

from scripts import plot

NORMS = {'bn': 'BatchNorm', 'none': 'Baseline', 'ln': 'LayerNorm'}


def write_run(d, config: dict | None, rows: list[dict]):
  d.mkdir(parents=True)
  if config is not None:
    (d / 'config.json').write_text(json.dumps(config))
  (d / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return d


def fig6_rows(seed: float):
  """Train rows every half epoch and eval rows every epoch, written separately, as a loop logs them."""
  rows = []
  for step in range(1, 7):
    rows.append({'step': step * 10, 'epoch': step / 2, 'train/loss': seed / step})
    if step % 2 == 0:
      rows.append({'step': step * 10, 'epoch': step / 2, 'eval/test/error': seed / 100 + step / 1000})
  return rows


@pytest.fixture
def fig6_root(tmp_path):
  root = tmp_path / 'fig6'
  for i, (norm, bs) in enumerate([(n, b) for b in (4, 128) for n in NORMS]):
    # Configs in the two shapes the loop may write: nested under `model`, and flat.
    config = {'model': {'norm': norm}, 'data': {'batch_size': bs}} if i % 2 else {'norm': norm, 'batch_size': bs}
    write_run(root / f'run{i}', config, fig6_rows(seed=i + 1))
  return root


def lines_by_label(ax):
  return {line.get_label(): line for line in ax.get_lines()}


def test_fig6_layout(fig6_root):
  fig = plot.make_figure([str(fig6_root)], layout='fig6')
  axes = np.array(fig.axes).reshape(2, 2)
  assert [ax.get_title() for ax in axes.flat] == [
    'batch size 128: training NLL',
    'batch size 4: training NLL',
    'batch size 128: test error',
    'batch size 4: test error',
  ]
  assert [ax.get_yscale() for ax in axes.flat] == ['log', 'log', 'linear', 'linear']
  assert all(ax.get_xlabel() == 'Epoch' for ax in axes.flat)
  assert [ax.get_ylabel() for ax in axes.flat] == ['Training NLL (log scale)'] * 2 + ['Test error (%)'] * 2
  for ax in axes.flat:
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['BatchNorm', 'Baseline', 'LayerNorm']
  # Same colour for a norm in every panel.
  colours = {
    label: {line.get_color() for ax in axes.flat for line in ax.get_lines() if line.get_label() == label}
    for label in NORMS.values()
  }
  assert all(len(c) == 1 for c in colours.values()) and len({c.pop() for c in colours.values()}) == 3
  # Batch size 4, LayerNorm is run2 (seed 3): its NLL at every half epoch, its error only where it was logged.
  nll = lines_by_label(axes[0, 1])['LayerNorm']
  np.testing.assert_allclose(nll.get_xdata(), [0.5, 1, 1.5, 2, 2.5, 3])
  np.testing.assert_allclose(nll.get_ydata(), [3 / s for s in range(1, 7)])
  error = lines_by_label(axes[1, 1])['LayerNorm']
  np.testing.assert_allclose(error.get_xdata(), [1, 2, 3])
  np.testing.assert_allclose(error.get_ydata(), [100 * (0.03 + s / 1000) for s in (2, 4, 6)])  # In percent.
  # Batch size 128, BatchNorm is run3 (seed 4, nested config).
  np.testing.assert_allclose(lines_by_label(axes[0, 0])['BatchNorm'].get_ydata()[0], 4.0)


def test_fig6_metric_names_configurable_and_step_axis(tmp_path):
  for norm in ('ln', 'bn'):
    write_run(
      tmp_path / norm,
      {'norm': norm, 'batch_size': 4},
      [{'step': 1, 'nll': 2.0, 'err': 0.5}, {'step': 2, 'nll': 1.0}, {'step': 3, 'nll': 0.5, 'err': 0.25}],
    )
  fig = plot.make_figure([str(tmp_path / 'ln'), str(tmp_path / 'bn')], 'fig6', 'step', ['nll', 'err'])
  nll_ax, error_ax = fig.axes
  assert nll_ax.get_xlabel() == 'Training step' and nll_ax.get_ylabel() == 'nll (log scale)'  # Unknown: its key.
  np.testing.assert_array_equal(lines_by_label(error_ax)['LayerNorm'].get_xdata(), [1, 3])
  np.testing.assert_array_equal(lines_by_label(error_ax)['LayerNorm'].get_ydata(), [0.5, 0.25])


def test_fig6_prefers_the_epoch_mean_training_loss_to_a_single_steps(tmp_path):
  # The loop logs both: the last step's loss (noisy at batch size 4) and the mean over the epoch (Figure 6's NLL).
  rows = [
    {'step': 10, 'epoch': 1, 'train/loss': 0.9, 'train_epoch/loss': 0.5, 'eval/test/error': 0.1},
    {'step': 20, 'epoch': 2, 'train/loss': 0.05, 'train_epoch/loss': 0.2, 'eval/test/error': 0.05},
  ]
  write_run(tmp_path / 'ln', {'norm': 'ln', 'batch_size': 4}, rows)
  nll_ax, _ = plot.make_figure([str(tmp_path / 'ln')], 'fig6').axes
  assert nll_ax.get_ylabel() == 'Training NLL (log scale)'
  np.testing.assert_array_equal(lines_by_label(nll_ax)['LayerNorm'].get_ydata(), [0.5, 0.2])


def test_curves_layout_labels_from_dir_names(tmp_path):
  # No config.json: the sweep launcher's `key=value` directory names still label the curves.
  bound = [{'step': s, 'epoch': s // 2, 'eval/test/bound': 100 - s} for s in range(4)]
  write_run(tmp_path / 'norm=ln,batch_size=128', None, bound)
  write_run(tmp_path / 'norm=none,batch_size=128', None, [{**r, 'eval/test/bound': 110 - r['step']} for r in bound])
  write_run(tmp_path / 'plain', None, [{'step': 0, 'eval/test/bound': 120.0}, {'step': 5, 'other': 1}])
  fig = plot.make_figure([str(tmp_path)], 'curves', 'step', ['eval/test/bound'])
  (ax,) = fig.axes
  assert ax.get_title() == 'eval/test/bound' and ax.get_yscale() == 'linear'
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ['Baseline', 'LayerNorm', 'plain']
  lines = lines_by_label(ax)
  np.testing.assert_array_equal(lines['Baseline'].get_ydata(), [110, 109, 108, 107])
  np.testing.assert_array_equal(lines['plain'].get_xdata(), [0])


def test_curves_default_metrics_and_logy(tmp_path):
  write_run(tmp_path / 'a', None, [{'step': 1, 'train/loss': 1.0, 'eval/error': 0.5, 'note': 'x'}])
  fig = plot.make_figure([str(tmp_path / 'a')], 'curves', logy=True)
  assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ['eval/error', 'train/loss']
  assert all(ax.get_yscale() == 'log' for ax in fig.axes if ax.get_visible())


def test_same_norm_twice_gets_directory_names(tmp_path):
  for name in ('ln_lr1', 'ln_lr2'):
    write_run(tmp_path / name, {'norm': 'ln'}, [{'step': 0, 'loss': 1.0}])
  fig = plot.make_figure([str(tmp_path)], metrics=['loss'])
  assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ['LayerNorm (ln_lr1)', 'LayerNorm (ln_lr2)']


def test_main_writes_png(fig6_root, tmp_path, capsys):
  out = tmp_path / 'fig6.png'
  assert plot.main([str(fig6_root), '--out', str(out), '--layout', 'fig6']) == 0
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert f'wrote {out}' in capsys.readouterr().out


def test_errors_name_the_file(tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  assert plot.main([str(tmp_path / 'empty'), '--out', str(tmp_path / 'x.png')]) == 1
  assert f'{tmp_path}/empty/metrics.jsonl: not found' in capsys.readouterr().err
  (tmp_path / 'empty' / 'metrics.jsonl').write_text('\n')
  with pytest.raises(ValueError, match=r'empty/metrics.jsonl: no rows \(empty file\)'):
    plot.make_figure([str(tmp_path / 'empty')])
  (tmp_path / 'empty' / 'metrics.jsonl').write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
  with pytest.raises(ValueError, match=r'empty/metrics.jsonl, line 2: not JSON'):
    plot.make_figure([str(tmp_path / 'empty')])
  (tmp_path / 'empty' / 'metrics.jsonl').write_text('{"step": 1, "train/loss": 1.0}\n')
  with pytest.raises(ValueError, match=r"No row has 'epoch' in .*empty/metrics.jsonl; try --x step"):
    plot.make_figure([str(tmp_path / 'empty')], 'fig6')


def test_partly_written_last_line_skipped(tmp_path, capsys):
  run = write_run(tmp_path / 'r', None, [{'step': 1, 'loss': 2.0}])
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 2, "lo')
  fig = plot.make_figure([str(run)], metrics=['loss'])
  np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_ydata(), [2.0])
  assert 'skipping the partly written last line 2' in capsys.readouterr().err


def test_unknown_metric_lists_logged_ones(fig6_root):
  with pytest.raises(ValueError, match=r'No run logged train/nll_typo\. The runs logged: eval/test/error, train/loss'):
    plot.make_figure([str(fig6_root)], metrics=['train/nll_typo'])
  with pytest.raises(ValueError, match='fig6 takes two metrics'):
    plot.make_figure([str(fig6_root)], 'fig6', metrics=['train/loss'])


def test_a_glob_over_a_sweep_root_skips_the_sweeps_own_folders(tmp_path):
  rows = [{'step': 1, 'epoch': 1, 'eval/test/nll_bound': 3.0}]
  for name in ('norm=ln', 'norm=none'):
    write_run(tmp_path / name, None, rows)
  (tmp_path / 'logs').mkdir()
  (tmp_path / 'submitit').mkdir()
  found = plot.find_runs(sorted(str(p) for p in tmp_path.iterdir()))
  assert [os.path.basename(p) for p in found] == ['norm=ln', 'norm=none']


def test_axis_labels_in_words_and_units():
  assert plot.axis_label('eval/test/error') == ('Test error (%)', 100.0)
  assert plot.axis_label('eval/test/nll_bound') == ('Test bound (nats)', 1.0)
  assert plot.axis_label('eval/valid/nll') == ('Validation NLL (nats)', 1.0)
  assert plot.axis_label('train_epoch/loss') == ('Training loss', 1.0)
  assert plot.axis_label('perf/steps_per_sec') == ('perf/steps_per_sec', 1.0)  # Unknown: the key itself.
  assert plot.axis_label('eval/retrieval/r_sum') == ('eval/retrieval/r_sum', 1.0)


def test_a_single_point_gets_a_marker_and_curves_get_words(tmp_path):
  write_run(tmp_path / 'one', {'model': {'norm': 'ln'}}, [{'step': 10, 'epoch': 1, 'eval/test/nll_bound': 90.0}])
  rows = [{'step': s, 'epoch': s / 10, 'eval/test/nll_bound': 100.0 - s} for s in (10, 20)]
  write_run(tmp_path / 'two', {'model': {'norm': 'none'}}, rows)
  fig = plot.make_figure([str(tmp_path / 'one'), str(tmp_path / 'two')], metrics=['eval/test/nll_bound'])
  ax = fig.axes[0]
  assert (ax.get_xlabel(), ax.get_ylabel()) == ('Training step', 'Test bound (nats)')
  markers = {line.get_label(): line.get_marker() for line in ax.get_lines()}
  assert markers == {'LayerNorm': 'o', 'Baseline': 'None'}
