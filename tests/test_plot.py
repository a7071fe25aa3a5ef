"""scripts.plot on workdirs written here: the figure's data, scales and labels, and errors that name the file."""

import json
import os
import subprocess
import sys

import matplotlib.colors
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from scripts import plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_fig6_draws_rmsnorm_in_its_own_colour_after_the_papers_norms(fig6_root):
  write_run(fig6_root / 'norm=rms,batch_size=4', {'norm': 'rms', 'batch_size': 4}, fig6_rows(seed=9))
  axes = np.array(plot.make_figure([str(fig6_root)], layout='fig6').axes).reshape(2, 2)
  assert [t.get_text() for t in axes[0, 1].get_legend().get_texts()] == [*NORMS.values(), 'RMSNorm']
  colours = {line.get_label(): line.get_color() for line in axes[0, 1].get_lines()}
  assert len(set(colours.values())) == 4
  np.testing.assert_allclose(lines_by_label(axes[0, 1])['RMSNorm'].get_ydata()[0], 9.0)


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
  assert plot.main([str(tmp_path / 'empty'), '--out', str(tmp_path / 'x.png')]) == 2
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


# The paper's Figures 1-5 (experiments/figures.py), from workdirs written here in the shapes the experiments write.


def legend_texts(ax):
  return [t.get_text() for t in ax.get_legend().get_texts()]


def data_of(ax, label):
  """(x, y) of the line labelled `label`, also where it is an errorbar's (whose container holds the label)."""
  bars = {c.get_label(): c.lines[0] for c in ax.containers}
  line = bars.get(label) or lines_by_label(ax)[label]
  return list(line.get_xdata()), list(line.get_ydata())


def write_runs(root, runs: dict[str, tuple[dict, list[dict]]]):
  for name, (config, rows) in runs.items():
    write_run(root / name, config, rows)
  return str(root)


def recall_rows(offset: float):
  """Train rows every 50 steps, a validation R@K row every 100 steps, and the loop's final best/* row."""
  rows = [{'step': s, 'train/loss': 10.0 - s / 100} for s in (50, 100, 150, 200)]
  for s in (100, 200):
    rows.append({'step': s, 'epoch': s / 100, **{f'eval/val/image_r{k}': offset + k + s / 100 for k in (1, 5, 10)}})
  rows.append({'step': 200, 'best/eval/val/image_r1': 99.0})  # Not the curve: best/* is the selected model's.
  return rows


def test_fig1_recall_at_k_of_image_retrieval_against_updates(tmp_path):
  root = write_runs(
    tmp_path,
    {
      'model=oe,norm=ln': ({'model': {'model': 'oe', 'norm': 'ln', 'margin': 0.05}}, recall_rows(20.0)),
      'model=oe,norm=none': ({'model': {'model': 'oe', 'norm': 'none', 'margin': 0.05}}, recall_rows(10.0)),
    },
  )
  fig = plot.make_figure([root], layout='fig1')
  assert [ax.get_title() for ax in fig.axes] == ['R@1', 'R@5', 'R@10']
  assert [ax.get_ylabel() for ax in fig.axes] == [f'Validation image retrieval R@{k} (%)' for k in (1, 5, 10)]
  assert all(ax.get_xlabel() == 'Updates' and ax.get_xscale() == 'linear' for ax in fig.axes)
  assert legend_texts(fig.axes[0]) == ['Order-Embedding', 'Order-Embedding + LN']  # The paper's order and names.
  for ax, k in zip(fig.axes, (1, 5, 10), strict=True):
    assert len(ax.get_lines()) == 2
    assert data_of(ax, 'Order-Embedding') == ([100, 200], [10 + k + 1, 10 + k + 2])
    assert data_of(ax, 'Order-Embedding + LN') == ([100, 200], [20 + k + 1, 20 + k + 2])
    assert all(line.get_marker() == 'o' for line in ax.get_lines())
  # A run that did not log one of the three recalls: that panel is empty and says which metric it lacks.
  rows = [{k: v for k, v in r.items() if k != 'eval/val/image_r5'} for r in recall_rows(0.0)]
  write_run(tmp_path / 'no_r5', {'model': {'model': 'oe', 'norm': 'ln', 'margin': 0.05}}, rows)
  r1, r5, _ = plot.make_figure([str(tmp_path / 'no_r5')], layout='fig1').axes
  assert len(r1.get_lines()) == 1 and not r1.texts
  assert not r5.get_lines() and [t.get_text() for t in r5.texts] == ['not logged by these runs:\neval/val/image_r5']


def reader_rows(errors: list[float]):
  rows = [{'step': 50, 'train/error': 0.9}]
  return rows + [{'step': 250 * (i + 1), 'eval/valid/error': e, 'eval/valid/nll': 2.0} for i, e in enumerate(errors)]


def test_fig2_validation_error_against_steps_one_curve_per_norm_as_the_papers_legend(tmp_path):
  reader = lambda norm, query_only=False: {'model': {'norm': norm, 'query_only': query_only}, 'data': {'source': 'x'}}
  root = write_runs(
    tmp_path / 'fig2',
    {
      'norm=ln': (reader('ln'), reader_rows([0.8, 0.5])),
      'norm=none': (reader('none'), reader_rows([0.8, 0.7])),
      'norm=bn_everywhere': (reader('bn_everywhere'), reader_rows([0.9, 0.6])),
      'norm=bn': (reader('bn'), reader_rows([0.85, 0.75])),
      'norm=ln,query_only=True': (reader('ln', True), reader_rows([0.95, 0.94])),
    },
  )
  fig = plot.make_figure([root], layout='fig2')
  (ax,) = fig.axes
  assert (ax.get_xlabel(), ax.get_ylabel()) == ('Training steps', 'Validation error (%)')
  assert legend_texts(ax) == ['LSTM', 'BN-LSTM', 'BN-everywhere', 'LN-LSTM', 'LN-LSTM, query only (control)']
  assert data_of(ax, 'LN-LSTM') == ([250, 500], [80.0, 50.0])  # In percent.
  assert data_of(ax, 'LN-LSTM, query only (control)') == ([250, 500], [95.0, 94.0])
  assert fig.get_suptitle() == 'Figure 2: attentive reader, validation curves (data: x)'
  # Without config.json, the sweep's directory names say what a run is.
  write_run(tmp_path / 'bare' / 'norm=ln,query_only', None, reader_rows([0.9]))
  (ax,) = plot.make_figure([str(tmp_path / 'bare')], layout='fig2').axes
  assert legend_texts(ax) == ['LN-LSTM, query only (control)']
  assert lines_by_label(ax)['LN-LSTM, query only (control)'].get_marker() == 'o'  # One eval point (smoke): visible.


def test_a_paper_layout_given_another_experiments_runs_says_so(fig6_root, tmp_path, capsys):
  # MNIST logs eval/valid/error too: the config tells the attentive reader's runs apart.
  mnist_run = str(fig6_root / 'run0')
  with open(os.path.join(mnist_run, 'metrics.jsonl'), 'a') as f:
    f.write(json.dumps({'step': 70, 'eval/valid/error': 0.1}) + '\n')
  with pytest.raises(ValueError, match=r'fig2 \(Figure 2\) draws runs of experiments.attentive_reader, but .*run0 is '):
    plot.make_figure([mnist_run], layout='fig2')
  with pytest.raises(
    ValueError, match=r'run0 is not one, or has not evaluated yet: it logged none of \[.eval/test/nll_bound.\]'
  ):
    plot.make_figure([mnist_run], layout='fig4')
  assert plot.main([mnist_run, '--layout', 'fig5', '--out', str(tmp_path / 'x.png')]) == 2
  err = capsys.readouterr().err
  assert err.strip().startswith('Error: fig5 (Figure 5) draws runs of experiments.handwriting')
  assert 'model.window_mixtures' in err
  assert not (tmp_path / 'x.png').exists()
  with pytest.raises(ValueError, match='--metrics, --x and --logy are for --layout curves'):
    plot.make_figure([mnist_run], layout='fig2', metrics=['eval/valid/error'])


def downstream_rows(base: float):
  rows = []
  for i, step in enumerate((4, 8)):
    row = {'step': step, 'eval/downstream/sick/pearson': base + i / 10, 'eval/downstream/sick/mse': 0.3 - i / 100}
    for task in ('mr', 'cr', 'subj', 'mpqa'):
      row |= {f'eval/downstream/{task}/accuracy': 50.0 + 10 * base + i, f'eval/downstream/{task}/accuracy_std': 2.0}
    rows += [{'step': step, 'train/loss': 5.0}, row]
  return rows


def test_fig3_downstream_scores_against_iterations_with_the_papers_original_lines(tmp_path):
  root = write_runs(
    tmp_path,
    {
      'norm=ln': ({'model': {'norm': 'ln'}}, downstream_rows(0.5)),
      'none': ({'model': {'norm': 'none'}}, downstream_rows(0.4)),
    },
  )
  fig = plot.make_figure([root], layout='fig3')
  assert [ax.get_title() for ax in fig.axes] == ['SICK', 'SICK', 'MR', 'CR', 'SUBJ', 'MPQA']
  assert [ax.get_ylabel() for ax in fig.axes] == ['Pearson × 100', 'MSE × 100'] + ['Accuracy (%)'] * 4
  assert all(ax.get_xlabel() == 'Iterations' for ax in fig.axes)
  original = 'Original (Kiros et al. 2015, reported)'
  assert legend_texts(fig.axes[0]) == ['Ours', 'Ours + LN', original]
  pearson, mse, mr = fig.axes[:3]
  assert data_of(pearson, 'Ours + LN') == ([4, 8], [50.0, 60.0])  # x 100, as the paper's axis.
  np.testing.assert_allclose(data_of(mse, 'Ours')[1], [30.0, 29.0])
  assert data_of(mr, 'Ours') == ([4, 8], [54.0, 55.0])
  assert [data_of(ax, original)[1][0] for ax in fig.axes] == [84.8, 28.7, 75.5, 79.3, 92.1, 86.9]
  # Error bars from the cross-validation folds' spread: the bar's segments span value +- std.
  bars = next(c for c in mr.containers if c.get_label() == 'Ours').lines[2][0]
  np.testing.assert_allclose([seg[:, 1] for seg in bars.get_segments()], [[52.0, 56.0], [53.0, 57.0]])
  write_run(tmp_path / 'untrained', {'model': {'norm': 'none'}}, [{'step': 1, 'train/loss': 5.0}])
  with pytest.raises(
    ValueError,
    match=r"untrained is not one, or has not evaluated yet: it logged none of \['eval/downstream/sick/pearson'",
  ):
    plot.make_figure([str(tmp_path / 'untrained')], layout='fig3')


def test_fig3_draws_rmsnorm_beside_ln_and_its_title_says_which_downstream_tasks_were_procedural(tmp_path):
  """`norm=rms` is a sweep point (beyond the paper): its runs get their own legend entry, not a directory name; and a
  title naming the training data says which evaluation tasks skip-thoughts made up (task.json records it)."""
  data = {'source': 'text'}
  root = write_runs(
    tmp_path,
    {
      'norm=ln': ({'model': {'norm': 'ln'}, 'data': data}, downstream_rows(0.5)),
      'norm=rms': ({'model': {'norm': 'rms'}, 'data': data}, downstream_rows(0.45)),
    },
  )
  sources = {'cr': 'real', 'mpqa': 'procedural', 'mr': 'real', 'sick': 'procedural', 'subj': 'procedural'}
  (tmp_path / 'norm=ln' / 'task.json').write_text(json.dumps({'downstream_sources': sources}))
  fig = plot.make_figure([root], layout='fig3')
  assert legend_texts(fig.axes[0])[:2] == ['Ours + LN', 'Ours + RMSNorm']
  np.testing.assert_allclose(data_of(fig.axes[0], 'Ours + RMSNorm'), [[4, 8], [45.0, 55.0]])
  title = fig.get_suptitle().replace('\n', ' ')
  assert title.endswith('(data: text; downstream CR, MR real, MPQA, SICK, SUBJ procedural)'), title
  (tmp_path / 'norm=ln' / 'task.json').write_text(json.dumps({'downstream_sources': dict.fromkeys(sources, 'real')}))
  assert plot.make_figure([root], layout='fig3').get_suptitle().replace('\n', ' ').endswith('(data: text)')


def test_fig4_test_bound_against_epochs(tmp_path):
  bound = lambda b: [{'step': 10 * e, 'epoch': e, 'eval/test/nll_bound': b - e, 'train/loss': b} for e in (1, 2, 3)]
  root = write_runs(tmp_path, {'norm=none': ({'model': {'norm': 'none'}}, bound(90.0)), 'ln': (None, bound(80.0))})
  fig = plot.make_figure([root], layout='fig4')
  (ax,) = fig.axes
  assert (ax.get_xlabel(), ax.get_ylabel()) == ('Epoch', 'Test variational bound (nats)')
  assert legend_texts(ax) == ['Baseline', 'ln']  # A run neither config nor name identifies: its directory name.
  assert data_of(ax, 'Baseline') == ([1, 2, 3], [89.0, 88.0, 87.0])
  write_run(tmp_path / 'steps_only', {'model': {'norm': 'ln'}}, [{'step': 10, 'eval/test/nll_bound': 80.0}])
  with pytest.raises(ValueError, match=r"fig4 plots eval/test/nll_bound against 'epoch', but no row"):
    plot.make_figure([str(tmp_path / 'steps_only')], layout='fig4')


def handwriting_rows(scale: float):
  rows = [{'step': s, 'train/loss': scale * 300 / s} for s in (20, 40, 60, 80)]
  return rows + [{'step': s, 'eval/test/nll': scale * 200 / s} for s in (40, 80)]


def test_fig5_train_and_test_nll_against_updates_on_a_log_axis(tmp_path):
  hand = lambda norm: {'model': {'norm': norm, 'window_mixtures': 10}}
  root = write_runs(
    tmp_path, {'norm=ln': (hand('ln'), handwriting_rows(1.0)), 'norm=none': (hand('none'), handwriting_rows(2.0))}
  )
  fig = plot.make_figure([root], layout='fig5')
  (ax,) = fig.axes
  assert ax.get_xscale() == 'log' and ax.get_yscale() == 'linear'
  assert (ax.get_xlabel(), ax.get_ylabel()) == ('Updates (log scale)', 'Negative log likelihood per sequence (nats)')
  assert legend_texts(ax) == ['Baseline test', 'Baseline train', 'LN test', 'LN train']
  assert data_of(ax, 'LN train') == ([20, 40, 60, 80], [15.0, 7.5, 5.0, 3.75])
  assert data_of(ax, 'Baseline test') == ([40, 80], [10.0, 5.0])
  styles = {line.get_label(): (line.get_linestyle(), line.get_color()) for line in ax.get_lines()}
  assert styles['LN test'][0] == '-' and styles['LN train'][0] == ':' and styles['LN test'][1] == styles['LN train'][1]
  assert styles['Baseline test'][1] != styles['LN test'][1]


def test_scripts_plot_imports_no_jax():
  code = 'import sys, scripts.plot, experiments.figures; assert "jax" not in sys.modules, "jax imported"'
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]


def test_seeds_of_one_point_share_one_legend_entry(tmp_path):
  for name, loss in (('norm=ln', 1.0), ('norm=ln,seed=1', 2.0), ('norm=none', 3.0), ('norm=none,seed=1', 4.0)):
    write_run(tmp_path / name, {'norm': name.split(',')[0][5:]}, [{'step': 0, 'loss': loss}, {'step': 1, 'loss': loss}])
  (ax, *_) = plot.make_figure([str(tmp_path)], metrics=['loss']).axes
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ['Baseline (2 seeds)', 'LayerNorm (2 seeds)']
  # Every seed still shows: as the edges of its point's band.
  assert sorted(band_range(b) for b in bands(ax)) == [(1.0, 2.0), (3.0, 4.0)]


# Several seeds of one point: the mean over seeds as the line, and a band from the lowest to the highest seed.


def bands(ax):
  return [c for c in ax.collections if isinstance(c, PolyCollection)]


def band_edges(band) -> dict[float, tuple[float, float]]:
  """{x: (lowest, highest)} of a fill_between band's outline."""
  edges = {}
  for x, y in band.get_paths()[0].vertices:
    low, high = edges.get(x, (y, y))
    edges[x] = (min(low, y), max(high, y))
  return edges


def band_range(band) -> tuple[float, float]:
  ys = band.get_paths()[0].vertices[:, 1]
  return float(ys.min()), float(ys.max())


def write_seeds(root, name: str, config: dict, losses_by_seed: list[list[float]]):
  """One workdir per seed as scripts.sweep names them: seed 0 keeps `name`, seed k > 0 gets `,seed=k`."""
  for seed, losses in enumerate(losses_by_seed):
    rows = [{'step': 10 * (i + 1), 'epoch': (i + 1) / 2, 'train/loss': loss} for i, loss in enumerate(losses)]
    write_run(root / (name if seed == 0 else f'{name},seed={seed}'), {**config, 'seed': seed}, rows)


SEED_LOSSES = {'ln': [[3.0, 2.0, 1.0], [4.0, 2.5, 0.5], [2.0, 1.5, 1.5]], 'none': [[5.0, 4.0, 3.0], [6.0, 5.0, 4.5]]}


def test_curves_of_three_seeds_are_their_mean_over_a_band_from_lowest_to_highest(tmp_path):
  for norm, losses in SEED_LOSSES.items():
    write_seeds(tmp_path, f'norm={norm}', {'model': {'norm': norm}, 'batch_size': 4}, losses)
  write_run(
    tmp_path / 'norm=bn', {'model': {'norm': 'bn'}, 'batch_size': 4, 'seed': 0}, [{'step': 10, 'train/loss': 7.0}]
  )
  (ax,) = plot.make_figure([str(tmp_path)], 'curves', 'step', ['train/loss']).axes
  assert legend_texts(ax) == ['BatchNorm', 'Baseline (2 seeds)', 'LayerNorm (3 seeds)']
  lines = lines_by_label(ax)
  assert len(ax.get_lines()) == 3  # One per method, not one per seed.
  for norm, label in (('ln', 'LayerNorm (3 seeds)'), ('none', 'Baseline (2 seeds)')):
    per_step = list(zip(*SEED_LOSSES[norm], strict=True))
    np.testing.assert_array_equal(lines[label].get_xdata(), [10, 20, 30])
    np.testing.assert_allclose(lines[label].get_ydata(), [sum(v) / len(v) for v in per_step])
  by_colour = {b.get_facecolor()[0][:3].tobytes(): b for b in bands(ax)}
  assert len(by_colour) == 2  # The single BatchNorm run keeps its plain line, with no band.
  ln_band = by_colour[np.array(matplotlib.colors.to_rgb(lines['LayerNorm (3 seeds)'].get_color())).tobytes()]
  assert band_edges(ln_band) == {10: (2.0, 4.0), 20: (1.5, 2.5), 30: (0.5, 1.5)}
  assert 0 < ln_band.get_alpha() < 1  # Translucent: the other method's mean shows through.


def test_fig6_of_seeds_draws_a_mean_and_band_per_norm_and_batch_size(tmp_path):
  for norm, losses in SEED_LOSSES.items():
    for batch_size in (4, 128):
      scaled = [[loss * batch_size for loss in seed] for seed in losses]
      write_seeds(tmp_path, f'norm={norm},batch_size={batch_size}', {'norm': norm, 'batch_size': batch_size}, scaled)
      error_rows = [{'step': 30, 'epoch': 1.5, 'eval/test/error': 0.1 * (seed + 1)} for seed in range(len(losses))]
      for seed, row in enumerate(error_rows):
        name = f'norm={norm},batch_size={batch_size}' + (f',seed={seed}' if seed else '')
        with open(tmp_path / name / 'metrics.jsonl', 'a') as f:
          f.write(json.dumps(row) + '\n')
  fig = plot.make_figure([str(tmp_path)], layout='fig6')
  nll_128, nll_4, error_128, _ = fig.axes
  assert legend_texts(nll_4) == ['Baseline (2 seeds)', 'LayerNorm (3 seeds)']
  np.testing.assert_allclose(lines_by_label(nll_4)['LayerNorm (3 seeds)'].get_ydata(), [12.0, 8.0, 4.0])
  np.testing.assert_allclose(lines_by_label(nll_128)['Baseline (2 seeds)'].get_xdata(), [0.5, 1.0, 1.5])
  assert len(bands(nll_128)) == 2
  # One evaluation (a smoke run): no band can be drawn over one x, so a bar spans the lowest to the highest seed.
  ln_error = lines_by_label(error_128)['LayerNorm (3 seeds)']
  assert list(ln_error.get_xdata()) == [1.5] and ln_error.get_marker() == 'o'
  assert legend_texts(error_128) == ['Baseline (2 seeds)', 'LayerNorm (3 seeds)']  # The bar adds no entry.
  np.testing.assert_allclose(ln_error.get_ydata(), [20.0])
  (bar,) = [c for c in error_128.containers if c.lines[0].get_color() == ln_error.get_color()]
  np.testing.assert_allclose(bar.lines[2][0].get_segments()[0][:, 1], [10.0, 30.0])


def test_only_configs_equal_but_for_the_seed_are_averaged(tmp_path):
  write_seeds(tmp_path, 'norm=ln', {'norm': 'ln', 'learning_rate': 0.1}, [[1.0, 1.0]])
  # Named as seed 1 of the same point, but trained with another learning rate: a different point, not a seed.
  write_run(
    tmp_path / 'norm=ln,seed=1', {'norm': 'ln', 'learning_rate': 0.2, 'seed': 1}, [{'step': 10, 'train/loss': 9.0}]
  )
  (ax,) = plot.make_figure([str(tmp_path)], metrics=['train/loss']).axes
  assert len(ax.get_lines()) == 2 and not bands(ax)
  assert sorted(len(line.get_xdata()) for line in ax.get_lines()) == [1, 2]


def test_a_seed_that_stopped_early_cuts_the_mean_to_the_steps_every_seed_logged(tmp_path):
  write_seeds(tmp_path, 'norm=ln', {'norm': 'ln'}, [[3.0, 2.0, 1.0], [5.0, 4.0]])
  (ax,) = plot.make_figure([str(tmp_path)], metrics=['train/loss']).axes
  (line,) = ax.get_lines()
  np.testing.assert_array_equal(line.get_xdata(), [10, 20])
  np.testing.assert_allclose(line.get_ydata(), [4.0, 3.0])
  assert band_edges(bands(ax)[0]) == {10: (3.0, 5.0), 20: (2.0, 4.0)}


def test_seeds_that_share_no_x_are_drawn_one_line_each_under_one_label(tmp_path):
  write_run(tmp_path / 'norm=ln', {'norm': 'ln', 'seed': 0}, [{'step': 10, 'train/loss': 1.0}])
  write_run(tmp_path / 'norm=ln,seed=1', {'norm': 'ln', 'seed': 1}, [{'step': 20, 'train/loss': 2.0}])
  (ax,) = plot.make_figure([str(tmp_path)], metrics=['train/loss']).axes
  assert legend_texts(ax) == ['LayerNorm (2 seeds)'] and not bands(ax)
  assert sorted(list(line.get_xdata()) for line in ax.get_lines()) == [[10], [20]]
  assert len({line.get_color() for line in ax.get_lines()}) == 1


def test_paper_figures_draw_a_points_seeds_as_their_mean_over_a_band(tmp_path):
  hand = lambda norm, seed: {'model': {'norm': norm, 'window_mixtures': 10}, 'seed': seed}
  for seed, scale in enumerate((1.0, 2.0, 3.0)):
    write_run(tmp_path / ('norm=ln' + (f',seed={seed}' if seed else '')), hand('ln', seed), handwriting_rows(scale))
  write_run(tmp_path / 'norm=none', hand('none', 0), handwriting_rows(4.0))
  (ax,) = plot.make_figure([str(tmp_path)], layout='fig5').axes
  assert legend_texts(ax) == ['Baseline test', 'Baseline train', 'LN test (3 seeds)', 'LN train (3 seeds)']
  assert len(ax.get_lines()) == 4
  assert data_of(ax, 'LN test (3 seeds)') == ([40, 80], [10.0, 5.0])  # The mean of 200 s / step, s = 1, 2, 3.
  np.testing.assert_allclose(data_of(ax, 'LN train (3 seeds)')[1], [30.0, 15.0, 10.0, 7.5])
  test_band, train_band = bands(ax)  # Only the three seeds' point has bands, one per line.
  assert band_edges(test_band) == {40: (5.0, 15.0), 80: (2.5, 7.5)}
  assert band_range(train_band) == (300 / 80, 900 / 20)
  # Figure 3's fold error bars stay on a single run; a point's seeds get the band instead.
  write_run(tmp_path / 'st' / 'norm=ln', {'model': {'norm': 'ln'}, 'seed': 0}, downstream_rows(0.5))
  write_run(tmp_path / 'st' / 'norm=ln,seed=1', {'model': {'norm': 'ln'}, 'seed': 1}, downstream_rows(0.7))
  write_run(tmp_path / 'st' / 'norm=none', {'model': {'norm': 'none'}, 'seed': 0}, downstream_rows(0.4))
  fig = plot.make_figure([str(tmp_path / 'st')], layout='fig3')
  pearson, mr = fig.axes[0], fig.axes[2]
  np.testing.assert_allclose(data_of(pearson, 'Ours + LN (2 seeds)')[1], [60.0, 70.0])
  assert band_edges(bands(pearson)[0]) == {4: (50.0, 70.0), 8: (60.0, 80.0)}
  assert [c.get_label() for c in mr.containers] == ['Ours']
