"""scripts.reproduce: the verdict rules, and the whole smoke-scale report built from real runs of every experiment.

The end-to-end test runs `python -m scripts.reproduce --scale smoke` once (every experiment's smoke sweep, a few
minutes on 2 cores), then checks that every table and figure has its section and PNG, that every number in the report
is the one the runs logged (read again here from metrics.jsonl), and that a second invocation starts no run.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from scripts import paper_results as pr
from scripts import plot, reproduce, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reading(value, run='r'):
  return pr.Reading(value, run, 'm', 'last')


def stat(*values):
  return pr.Stat(tuple(reading(v) for v in values))


def test_a_difference_within_the_seed_spread_is_no_win():
  assert pr.compare(stat(1.0, 1.2), stat(1.3, 1.35), higher_is_better=False) == 'better'  # 0.225 apart > 0.2 spread
  assert pr.compare(stat(1.0, 1.4), stat(1.3, 1.35), higher_is_better=False) == 'within spread'  # 0.125 < 0.4
  assert pr.compare(stat(1.0, 1.4), stat(1.3, 1.35), higher_is_better=True) == 'within spread'
  assert pr.compare(stat(2.0), stat(1.0), higher_is_better=True) == 'better'  # One seed: the direction decides.
  assert pr.compare(stat(2.0), stat(1.0), higher_is_better=False) == 'worse'
  assert pr.compare(stat(), stat(1.0), higher_is_better=False) == 'missing'
  assert pr.compare(stat(1.0), stat(1.0), higher_is_better=False) == 'within spread'


def test_a_difference_between_half_the_spread_and_the_spread_is_within_spread():
  """The rule is the whole spread (max - min over seeds, the larger of the two), not a fraction of it."""
  a = stat(1.0, 1.4)  # Spread 0.4, mean 1.2.
  for fraction in (0.55, 0.75, 0.95):
    b = stat(1.2 + fraction * 0.4 - 0.01, 1.2 + fraction * 0.4 + 0.01)  # Mean 1.2 + fraction * 0.4, spread 0.02.
    assert pr.compare(a, b, higher_is_better=False) == 'within spread', fraction
    assert pr.compare(b, a, higher_is_better=True) == 'within spread', fraction
  b = stat(1.2 + 1.05 * 0.4 - 0.01, 1.2 + 1.05 * 0.4 + 0.01)  # Just beyond the spread: a verdict.
  assert pr.compare(a, b, higher_is_better=False) == 'better'
  assert pr.compare(b, a, higher_is_better=False) == 'worse'
  assert pr.compare(b, a, higher_is_better=True) == 'better'


def test_verdict_ladder_and_its_reason():
  yes, no, unknown = pr.Outcome(True, ''), pr.Outcome(False, ''), pr.Outcome(None, '')
  assert pr.verdict([yes, yes], seeds=3) == ('reproduced', '2 of 2 claims hold')
  assert pr.verdict([yes, no], seeds=3)[0] == 'partly'
  assert pr.verdict([no, no], seeds=3)[0] == 'not reproduced'
  assert pr.verdict([yes, unknown], seeds=3)[0] == 'incomplete'
  assert 'one seed' in pr.verdict([yes], seeds=1)[1]


def run_with(rows):
  return plot.Run(path='p', rows=[{'step': s, 'm': v} for s, v in rows], norm=None, batch_size=None)


def test_measures_and_first_step_read_the_logged_rows():
  run = run_with([(10, 3.0), (20, 1.0), (30, 2.0), (40, float('nan'))])
  assert pr.Measure('x', 'm', 'last', False).read(run).value == 2.0  # NaN rows are not values.
  assert pr.Measure('x', 'm', 'min', False).read(run).value == 1.0
  assert pr.Measure('x', 'm', 'max', True).read(run).value == 3.0
  assert pr.first_step(run, 'm', 2.0, higher_is_better=False).value == 20
  assert pr.first_step(run, 'm', 0.5, higher_is_better=False).value is None
  assert pr.first_step(run, 'm', 3.0, higher_is_better=True).value == 10


def test_reaches_first_compares_seed_by_seed():
  result = dataclass_result()
  fast, slow = run_with([(10, 5.0), (20, 1.0)]), run_with([(10, 5.0), (20, 3.0), (40, 1.0)])
  assert result.claims[0].check(result, {'a': [fast], 'b': [slow]}).holds  # a reaches b's best 1.0 at 20 vs 40.
  assert not result.claims[0].check(result, {'a': [slow], 'b': [fast]}).holds
  assert result.claims[0].check(result, {'a': [fast], 'b': []}).holds is None


def dataclass_result():
  return pr.Result(
    key='t',
    aliases=(),
    title='t',
    config=None,
    labels={'a': 'A', 'b': 'B'},
    measures=(),
    paper='',
    claims=(pr.Claim('a first', pr.reaches_first('a', 'b', 'm', higher_is_better=False)),),
  )


def test_only_accepts_keys_and_aliases_in_the_papers_order():
  assert [r.key for r in pr.select(['fig6', 'fig1'])] == ['table2', 'fig6']
  assert [r.key for r in pr.select(None)] == ['table1', 'table2', 'fig2', 'table3', 'fig4', 'fig5', 'fig6']
  with pytest.raises(ValueError, match=r'unknown result fig9.*fig6'):
    pr.select(['fig9'])


def test_every_result_names_a_sweep_with_its_labelled_points():
  """Each result's claims and labels refer to points its config's sweep (and controls) really has."""
  for result in pr.RESULTS:
    if result.config is None:
      continue
    for variant in (None, 'smoke', 'paper', *(('real',) if result.real_variant else ())):  # Every scale's points.
      points = reproduce.result_points(result, variant, 'root', 1, 'python')
      keys = {reproduce.point_key(p) for p in points}
      assert set(result.labels) == keys, (result.key, variant)


def test_seeds_add_runs_beside_seed_zero(tmp_path):
  result = pr.select(['fig4'])[0]
  points = reproduce.result_points(result, 'smoke', str(tmp_path), 2, 'python')
  assert [p.name for p in points] == [
    'smoke,norm=none',
    'smoke,norm=none,seed=1',
    'smoke,norm=ln',
    'smoke,norm=ln,seed=1',
  ]
  assert '--config.seed=1' in points[1].argv
  assert {reproduce.point_key(p) for p in points} == {'norm=none', 'norm=ln'}


# --- The smoke report, end to end ------------------------------------------------------------------------------------


def reproduce_cli(*args):
  return subprocess.run(
    [sys.executable, '-m', 'scripts.reproduce', *args], cwd=ROOT, capture_output=True, text=True, check=False
  )


def read_again(entry):
  """A reading recomputed here from the run's metrics.jsonl, independently of scripts.paper_results."""
  values = []
  with open(os.path.join(entry['run'], 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  for row in rows:
    value = row.get(entry['metric'])
    if isinstance(value, float | int) and math.isfinite(value):
      values.append((row, value))
  how = entry['how']
  if how == 'last':
    return values[-1][1]
  if how in ('min', 'max'):
    return (min if how == 'min' else max)(v for _, v in values)
  raise AssertionError(how)


@pytest.mark.slow
def test_smoke_report_from_a_clean_root_then_collected_without_rerunning(tmp_path):
  """One test, not several sharing a fixture: pytest-xdist would build a module fixture once per worker."""
  root, out = tmp_path / 'runs', tmp_path / 'report'
  done = reproduce_cli('--scale', 'smoke', '--root', str(root), '--out', str(out), '--jobs', '2')
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  check_report(root, out, done.stdout)
  check_rerun(root, out)


def check_report(root, out, stdout):
  report = (out / 'REPORT.md').read_text()
  results = json.loads((out / 'results.json').read_text())
  assert sorted(results) == sorted(r.key for r in pr.RESULTS)
  assert [report.index(f'## {r.title}') for r in pr.RESULTS] == sorted(
    report.index(f'## {r.title}') for r in pr.RESULTS
  )
  for result in pr.RESULTS:
    entry = results[result.key]
    # Smoke runs evaluate only part of some benchmarks (skip-thoughts: two downstream tasks), hence 'incomplete'.
    assert entry['verdict'] in ('reproduced', 'partly', 'not reproduced', 'incomplete'), (result.key, entry)
    assert entry['verdict'] == 'incomplete' or all(c['holds'] is not None for c in entry.get('claims', []))
    for figure in result.figures:
      drawn = next(f for f in entry['figures'] if f['file'] == figure.filename)
      assert drawn['error'] is None, drawn
      assert (out / figure.filename).stat().st_size > 10_000
      assert f'({figure.filename})' in report
    numbers = 0
    for label, row in entry.get('table', {}).items():
      for measure in result.measures:
        cell = row[measure.label]
        assert len(cell['readings']) == 1 and cell['readings'][0]['run'].startswith(str(root))
        if cell['mean'] is None:  # Not logged at smoke scale; the report shows '-'.
          continue
        numbers += 1
        value = read_again(cell['readings'][0])
        assert cell['mean'] == pytest.approx(value, rel=1e-12), (result.key, label, measure.label)
        assert f'| {label} |' in report and pr.fmt(value, measure.digits) in report
    assert numbers or result.config is None, result.key
  assert '18 of 18 cells agree' in report
  assert '[7/7] Figure 6' in stdout


def check_rerun(root, out):
  logs = sorted(p for p in root.rglob('logs/*.log'))
  before = [p.stat().st_size for p in logs]
  again = reproduce_cli('--scale', 'smoke', '--root', str(root), '--out', str(out / 'again'), '--only', 'fig4,fig6')
  assert again.returncode == 0, again.stderr
  assert '0 to run' in again.stdout and 'running' not in again.stdout
  assert [p.stat().st_size for p in logs] == before  # No process was started: the sweep logs are as they were.

  result = pr.select(['fig4'])[0]
  point = reproduce.result_points(result, 'smoke', str(root), 1, sys.executable)[0]
  module = sweep.load_config_module(result.config)
  assert reproduce.is_done(point, module, 'smoke')
  config_path = os.path.join(point.workdir, 'config.json')
  with open(config_path) as f:
    saved = json.load(f)
  saved['optimizer']['learning_rate'] *= 2
  with open(config_path, 'w') as f:
    json.dump(saved, f)
  assert not reproduce.is_done(point, module, 'smoke')


def test_bad_arguments_exit_2_with_the_fix(tmp_path):
  done = reproduce_cli('--scale', 'smoke', '--root', str(tmp_path), '--only', 'fig9')
  assert done.returncode == 2 and 'unknown result fig9' in done.stderr and 'Traceback' not in done.stderr
  done = reproduce_cli('--scale', 'huge', '--root', str(tmp_path))
  assert done.returncode == 2 and 'smoke' in done.stderr


def test_two_classifiers_near_chance_are_no_evidence():
  result = pr.Result(
    key='t',
    aliases=(),
    title='t',
    config=None,
    labels={},
    measures=(pr.Measure('accuracy', 'm', 'last', True, chance=50.0),),
    paper='',
    claims=(),
  )
  check = pr.beats('a', 'b', 'accuracy')
  at_chance = check(result, {'a': [run_with([(1, 53.0)])], 'b': [run_with([(1, 46.0)])]})
  assert at_chance.holds is False and 'chance' in at_chance.detail
  assert check(result, {'a': [run_with([(1, 70.0)])], 'b': [run_with([(1, 46.0)])]}).holds


def test_readme_status_verdicts_are_the_committed_reports():
  """The README's Status table carries report/REPORT.md's verdicts (regenerate both with `make report`)."""
  with open(os.path.join(ROOT, 'report', 'results.json')) as f:
    verdicts = {key: entry['verdict'] for key, entry in json.load(f).items()}
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  status = readme[readme.index('## Status') : readme.index('## The library')]
  rows = {'table1': 'Table 1:', 'table2': 'Table 2,', 'fig2': 'Figure 2:', 'table3': 'Table 3,', 'fig4': 'Figure 4:'}
  rows |= {'fig5': 'Figure 5:', 'fig6': 'Figure 6:'}
  for key, start in rows.items():
    line = next(line for line in status.splitlines() if line.startswith(f'| {start}'))
    assert line.split(' | ')[2].startswith(verdicts[key]), (key, verdicts[key], line)


def test_a_file_as_root_or_out_is_refused_before_anything_runs(tmp_path):
  file = tmp_path / 'notes.txt'
  file.write_text('keep me')
  for flag in ('--root', '--out'):
    other = '--out' if flag == '--root' else '--root'
    done = reproduce_cli('--scale', 'smoke', flag, str(file), other, str(tmp_path / 'd'), '--only', 'table1')
    assert done.returncode == 2 and f'{flag} {file} is a file' in done.stderr and 'Traceback' not in done.stderr
  assert file.read_text() == 'keep me' and not (tmp_path / 'd').exists()


def test_set_reaches_every_run_and_the_done_check():
  result = pr.select(['fig4'])[0]
  points = reproduce.result_points(result, 'paper', 'r', 1, 'python', {'data.dir': '/data/mnist'})
  assert all('--config.data.dir=/data/mnist' in p.argv for p in points)
  module = sweep.load_config_module(result.config)
  expected = reproduce.expected_config(module, 'paper', points[0].overrides, {'data.dir': '/data/mnist'})
  assert expected['data']['dir'] == '/data/mnist' and expected['data']['source'] == 'amat'
  assert reproduce.parse_sets(['draw:data.dir=/d', 'fig4:seed=3']) == {'fig4': {'data.dir': '/d', 'seed': 3}}
  with pytest.raises(ValueError, match='RESULT:FIELD=VALUE'):
    reproduce.parse_sets(['data.dir=/d'])
