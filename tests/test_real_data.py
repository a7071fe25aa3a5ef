"""The experiments on the real data `scripts.get_data` fetches: the configs' `real` variants, skip-thoughts' per-task
downstream data, the readers' refusal of corrupt files, and how `scripts.reproduce` picks and reports the data.

No network and no fetched data are needed: every data directory here is one the test writes.
"""

import json
import os
import sys

import cli_runner
import numpy as np
import pytest

from configs import draw as draw_config
from configs import mnist as mnist_config
from configs import skip_thoughts as st_config
from experiments import loop
from experiments.data import DataError
from experiments.handwriting import hershey
from experiments.skip_thoughts import data as st_data
from experiments.skip_thoughts import downstream, procedural, task
from scripts import get_data, plot, reproduce
from scripts import paper_results as pr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data_home(tmp_path, monkeypatch):
  home = tmp_path / 'data'
  monkeypatch.setenv('LAYERNORM_DATA', str(home))
  return home


# -- The configs' real variants ---------------------------------------------------------------------------------------


def test_real_variants_read_where_get_data_writes(data_home):
  fig6_b4, fig6_b128 = (mnist_config.get_config(f'real,norm=bn,batch_size={b}') for b in (4, 128))
  assert (fig6_b4.data.source, fig6_b4.data.dir) == ('idx', str(data_home / 'mnist'))
  assert fig6_b4.data.dir == get_data.data_dir('mnist')  # One directory, whoever asks.
  assert fig6_b4.model.hidden_sizes == (1000, 1000)  # The paper's network; only the epochs are cut.
  assert (fig6_b4.num_epochs, fig6_b128.num_epochs) == (5, 20)
  assert fig6_b4.data.num_valid is None  # The reader's standard 55k/5k split.
  assert fig6_b4.log_every_steps % fig6_b4.steps_per_dispatch == 0  # One compiled chunk size between logs.
  fig4 = draw_config.get_config('real,norm=ln')
  assert (fig4.data.source, fig4.data.dir, fig4.num_epochs) == ('amat', str(data_home / 'binarized_mnist'), 10)
  table3 = st_config.get_config('real,norm=none')
  assert (table3.data.source, table3.data.dir) == ('text', str(data_home / 'text'))
  assert (table3.eval.dir, table3.eval.missing) == (str(data_home / 'senteval'), 'procedural')
  assert table3.eval_every_steps == table3.keep_every_steps == table3.eval.every_steps == 400
  # The default (no variant) stays the stand-in data, and a typo'd eval.dir still fails loudly by default.
  assert mnist_config.get_config().data.source == 'digits' and st_config.get_config().eval.missing == 'error'


@pytest.mark.parametrize(
  'module,arg,match',
  [
    (mnist_config, 'real,smoke', 'smoke, paper and real'),
    (mnist_config, 'real,source=digits', 'reads IDX files'),
    (draw_config, 'real,paper', 'smoke, paper and real'),
    (draw_config, 'real,source=idx', 'reads .amat files'),
    (st_config, 'real,source=procedural', 'reads a text corpus'),
  ],
)
def test_real_variant_refuses_a_contradicting_variant(module, arg, match):
  with pytest.raises(ValueError, match=match):
    module.get_config(arg)


def test_hershey_fonts_are_read_from_the_fetched_directory(data_home):
  (data_home / 'hershey').mkdir(parents=True)
  assert hershey.font_path('cursive', None) == str(data_home / 'hershey' / 'cursive.jhf')
  assert hershey.font_path('cursive', '/elsewhere') == '/elsewhere/cursive.jhf'  # config.data.dir wins.
  with pytest.raises(DataError, match=r'python -m scripts.get_data hershey'):
    hershey.check_fonts(('cursive',), None)


# -- Skip-thoughts: real downstream files where there are, procedural sets elsewhere -----------------------------------


def _write_mr(directory, positives=12, negatives=12):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'rt-polarity.pos'), 'w', encoding='latin-1') as f:
    f.writelines(f'a truly fine film , number {i} .\n' for i in range(positives))
  with open(os.path.join(directory, 'rt-polarity.neg'), 'w', encoding='latin-1') as f:
    f.writelines(f'a dull and tired film , number {i} .\n' for i in range(negatives))


def _append(path, data):
  with open(path, 'ab') as f:
    f.write(data)


def _real_config(data_home, **eval_fields):
  config = st_config.get_config('real')
  with config.unlocked():
    config.eval.tasks = ('sick', 'mr', 'cr')
    config.eval.per_class = 20
    config.eval.sick_sizes = (40, 20, 40)
    for key, value in eval_fields.items():
      config.eval[key] = value
  return config


def test_each_downstream_task_is_scored_on_its_real_files_or_else_the_procedural_set(data_home, tmp_path):
  _write_mr(data_home / 'senteval')
  config = _real_config(data_home)
  assert task.downstream_sources(config.eval) == {'sick': 'procedural', 'mr': 'real', 'cr': 'procedural'}
  directory = task.eval_directory(config)
  made = procedural.write_eval_dir(str(tmp_path / 'made'), config.data.seed, 20, (40, 20, 40))

  def read(directory, name):
    with open(os.path.join(directory, name), encoding='latin-1') as f:
      return f.read()

  assert read(directory, 'rt-polarity.pos') == read(data_home / 'senteval', 'rt-polarity.pos')
  assert read(directory, 'custrev.pos') == read(made, 'custrev.pos')  # CR is missing: the procedural set.
  assert read(directory, 'SICK_train.txt') == read(made, 'SICK_train.txt')
  # Without config.eval.dir every task is procedural; with missing='error' a missing file stops the run in validate.
  with config.unlocked():
    config.eval.dir = None
  assert set(task.downstream_sources(config.eval).values()) == {'procedural'}
  config = _real_config(data_home, missing='error')
  with pytest.raises(loop.ConfigError, match=r'Missing downstream file .*custrev\.pos'):
    task.validate(config)


@pytest.mark.parametrize(
  'writer,match',
  [
    (lambda d: _write_mr(d, positives=1), r'mr: 1 positive and 12 negative sentences'),
    (lambda d: _write_mr(d, negatives=0), r'mr: one of .* is empty'),
    (lambda d: _append(os.path.join(d, 'rt-polarity.neg'), b'\x00\x01\x02garbage\n'), 'NUL bytes'),
  ],
)
def test_validate_reads_the_real_downstream_files_before_any_training(data_home, writer, match):
  _write_mr(data_home / 'senteval')
  writer(str(data_home / 'senteval'))
  with pytest.raises(loop.ConfigError, match=match):
    task.validate(_real_config(data_home))


def test_a_bad_real_downstream_file_stops_the_command_before_it_touches_the_workdir(data_home, tmp_path):
  _write_mr(data_home / 'senteval', positives=3)
  (data_home / 'text').mkdir()
  (data_home / 'text' / 'a.txt').write_text(''.join(f'sentence number {i} is here .\n' for i in range(50)))
  workdir = tmp_path / 'run'
  command = ['-m', 'experiments.skip_thoughts', '--config', 'configs/skip_thoughts.py:real', f'--workdir={workdir}']
  result = cli_runner.run(
    [sys.executable, *command, '--config.eval.tasks=("mr",)'],
    cwd=ROOT,
    env={**os.environ, 'LAYERNORM_DATA': str(data_home)},
    timeout=30,
  )
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr and 'mr: 3 positive and 12 negative' in result.stderr
  assert not workdir.exists()


def test_the_text_corpus_reader_refuses_binary_content(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'a.txt').write_text('one sentence .\nanother one .\n')
  (corpus / 'b.txt').write_bytes(b'fine line .\n' + bytes(range(128, 256)) * 4 + b'\0\n')  # No newline inside.
  with pytest.raises(DataError, match=r'b\.txt, line 2: not UTF-8 text \(1 NUL bytes, 512 undecodable\)'):
    st_data.read_text_corpus(str(corpus), 100, str(tmp_path / 'cache'))


# -- scripts.reproduce: which data each result runs on, and what the report says --------------------------------------


def _result(key):
  return next(r for r in pr.RESULTS if r.key == key)


def test_the_cpu_scale_runs_the_real_variant_only_where_its_data_is_there():
  fig6, fig2 = _result('fig6'), _result('fig2')
  assert reproduce.result_variant(fig6, 'cpu', {'mnist': None}) == ('real', None)
  variant, why = reproduce.result_variant(fig6, 'cpu', {'mnist': 'mnist: not to be had: offline'})
  assert variant is None and 'could not be had (mnist: not to be had: offline)' in why
  assert reproduce.result_variant(fig6, 'cpu', {}) == (None, 'real data not fetched (--data default)')
  assert reproduce.result_variant(fig6, 'smoke', {'mnist': None}) == ('smoke', None)
  assert reproduce.result_variant(fig6, 'paper', {'mnist': None}) == ('paper', None)
  assert reproduce.result_variant(fig2, 'cpu', {}) == (None, None)  # No real data here: its default is its result.


def test_fetching_reports_why_a_data_set_could_not_be_had(monkeypatch, data_home):
  class Fetcher:
    def __init__(self, data, clients, out):
      self.out = out

    def get(self, name):
      self.out(f'{name}: not to be had: the test says so')
      return False

  monkeypatch.setattr(get_data, 'Fetcher', Fetcher)
  why = reproduce.fetched_sets([_result('fig6'), _result('fig4')], fetch=True)
  assert why == {name: f'{name}: not to be had: the test says so' for name in ('mnist', 'binarized_mnist')}
  # --dry_run fetches nothing: a set is there when get_data's manifest is.
  (data_home / 'mnist').mkdir(parents=True)
  (data_home / 'mnist' / get_data.MANIFEST).write_text('{}')
  dry = reproduce.fetched_sets([_result('fig6'), _result('fig4')], fetch=False)
  assert dry['mnist'] is None and 'not fetched yet' in dry['binarized_mnist']


def test_the_report_names_the_fetched_data_and_each_downstream_tasks_source(tmp_path, data_home):
  senteval = data_home / 'senteval'
  senteval.mkdir(parents=True)
  manifest = {'senteval/MR': {'source': 'a package', 'licence': 'MIT', 'files': {}}}
  (senteval / get_data.MANIFEST).write_text(json.dumps(manifest))
  (data_home / 'text').mkdir()
  (data_home / 'text' / get_data.MANIFEST).write_text(json.dumps({'text': {'source': 'some books', 'files': {}}}))
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  config = {'data': {'source': 'text', 'dir': str(data_home / 'text')}, 'eval': {'dir': str(senteval)}}
  (run_dir / 'config.json').write_text(json.dumps(config))
  (run_dir / 'task.json').write_text(json.dumps({'downstream_sources': {'sick': 'procedural', 'mr': 'real'}}))
  kind = reproduce.data_kind({'norm=ln': [plot.Run(str(run_dir), [], 'LN', 64)]})
  assert kind == 'real text (text: some books); downstream tasks: MR real (senteval/MR: a package), SICK procedural'
  # Data the user pointed at (no get_data manifest) is named by its directory, as before.
  (run_dir / 'task.json').write_text('{}')
  (run_dir / 'config.json').write_text(json.dumps({'data': {'source': 'text', 'dir': '/mine'}}))
  assert reproduce.data_kind({'k': [plot.Run(str(run_dir), [], 'LN', 64)]}) == 'text files from /mine'


def test_a_classifier_near_its_datas_majority_share_is_no_evidence():
  """CR here is 59% positive: 60% accuracy has learnt nothing, though it is 10 points above 50."""
  measure = pr.Measure('CR', 'cr/accuracy', 'last', True, chance='cr/majority')
  runs = {
    'a': [plot.Run('a', [{'cr/accuracy': 61.0, 'cr/majority': 58.9}], 'LN', 64)],
    'b': [plot.Run('b', [{'cr/accuracy': 60.0, 'cr/majority': 58.9}], None, 64)],
  }
  result = pr.Result('t', (), 't', None, {}, (measure,), '', ())
  outcome = pr.beats('a', 'b', 'CR')(result, runs)
  assert outcome.holds is False and 'within 5 of chance (58.9)' in outcome.detail
  for run in (*runs['a'], *runs['b']):
    run.rows[0]['cr/majority'] = 50.0
  assert pr.beats('a', 'b', 'CR')(result, runs).holds is True
  scores = downstream.classification_accuracy(np.eye(30)[:, :4], np.array([1] * 20 + [0] * 10), folds=2, inner_folds=2)
  assert scores['majority'] == pytest.approx(100 * 20 / 30)
