"""scripts.reproduce: the verdict rules, and the whole smoke-scale report built from real runs of every experiment.

The end-to-end test runs `python -m scripts.reproduce --scale smoke` once (every experiment's smoke sweep, a few
minutes on 2 cores), then checks that every table and figure has its section and PNG, that every number in the report
is the one the runs logged (read again here from metrics.jsonl), and that a second invocation starts no run.
"""

import dataclasses
import json
import math
import os
import sys

import cli_runner
import pytest

from benchmarks import regression
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
  assert [r.key for r in pr.select(None)] == ['table1', 'table2', 'fig2', 'table3', 'fig4', 'fig5', 'fig6', 'rms']
  assert [r.key for r in pr.select(['rmsnorm', 'fig6'])] == ['fig6', 'rms']  # Beyond the paper: last.
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


def test_every_sweep_has_an_rms_point_beside_each_ln_point():
  """Issue 27 part 4: `norm=rms` is a point of every experiment's grid next to `ln` (the same fields otherwise)."""
  configs = {r.config for r in pr.PAPER_RESULTS if r.config is not None}
  assert len(configs) == 6
  for config in sorted(configs):
    grid = sweep.collect_points(sweep.load_config_module(config), config)
    ln = [p for p in grid if p.get('norm') == 'ln']
    assert ln and [p for p in grid if p.get('norm') == 'rms'] == [{**p, 'norm': 'rms'} for p in ln], config
    for p in ln:  # Right after its LN point, so that a sweep's logs read in pairs.
      assert grid[grid.index(p) + 1] == {**p, 'norm': 'rms'}, config


def test_the_paper_results_run_their_grid_and_controls_less_the_rms_points():
  """The RMS runs belong to the extension: every paper result's points are its sweep's grid and controls without the
  `norm=rms` points, so the paper's figures and verdicts stay as they are."""
  for result in pr.PAPER_RESULTS:
    if result.config is None:
      continue
    for variant in (None, 'smoke', 'paper', *(('real',) if result.real_variant else ())):
      points = reproduce.result_points(result, variant, 'root', 2, 'python')
      grid = sweep.build_points(
        result.config, variant, os.path.join('root', result.key), python='python', seeds=2, more_points=result.controls
      )
      assert any(p.overrides.get('norm') == 'rms' for p in grid), (result.key, variant)
      assert points == [p for p in grid if p.overrides.get('norm') != 'rms'], (result.key, variant)


def test_the_rms_extension_adds_an_rms_run_beside_each_ln_run_it_reuses():
  rms = pr.select(['rmsnorm'])[0]
  assert rms.key == 'rms' and pr.RESULTS[-1] is rms and rms.config is None
  assert [part.key for part in rms.parts] == ['fig6', 'table2', 'fig2', 'table3', 'fig4', 'fig5']
  expected_ln = {
    'fig6': ['norm=ln,batch_size=128', 'norm=ln,batch_size=4'],
    'table2': ['model=oe,norm=ln'],
  }
  for part in rms.parts:
    paper = pr.select([part.key])[0]
    ln_keys = expected_ln.get(part.key, ['norm=ln'])
    for variant in ('smoke', None, *(('real',) if part.real_variant else ())):
      points = reproduce.result_points(part, variant, 'root', 2, 'python')
      by_key = {}
      for p in points:
        by_key.setdefault(reproduce.point_key(p), []).append(p)
      rms_keys = [k.replace('norm=ln', 'norm=rms') for k in ln_keys]
      assert sorted(by_key) == sorted(ln_keys + rms_keys), (part.key, variant)  # In the grid's order.
      # The LN runs are the paper result's own, the very same commands and workdirs: collected there, not re-run.
      paper_points = reproduce.result_points(paper, variant, 'root', 2, 'python')
      assert [p for k in ln_keys for p in by_key[k]] == [p for p in paper_points if reproduce.point_key(p) in ln_keys]
      paper_dirs = {p.workdir for p in paper_points}
      for key in rms_keys:
        assert [p.name for p in by_key[key]] == [
          ','.join(filter(None, [variant, key])),
          ','.join(filter(None, [variant, key, 'seed=1'])),
        ]
        for p in by_key[key]:
          assert p.workdir == os.path.join('root', part.key, p.name) and p.workdir not in paper_dirs
          config_arg = p.argv[p.argv.index('--config') + 1]
          assert config_arg.startswith(paper.config + ':') and 'norm=rms' in config_arg.split(':')[1].split(',')
          assert reproduce.is_done(p, sweep.load_config_module(part.config), variant) is False
    # Its measures are the paper result's, its claims one quality claim per LN point, its speed rows in the table.
    assert part.measures == paper.measures and len(part.claims) == len(ln_keys)
    names = {r.name for r in regression.ROWS}
    experiment = os.path.basename(part.config).removesuffix('.py')
    assert [(a, b) for _, a, b in part.speed] == [
      (f'{experiment}/{k.replace("norm=ln", "norm=rms")}', f'{experiment}/{k}')
      for k in (','.join(p for p in key.split(',') if not p.startswith('model=')) for key in ln_keys)
    ]
    assert all(a in names and b in names for _, a, b in part.speed)


def fake_runs(*values):
  return [run_with([(100, v)]) for v in values]


def test_rms_quality_claim_holds_within_the_seed_spread_or_better_and_fails_when_clearly_worse():
  part = next(p for p in pr.RMS_PARTS if p.key == 'fig4')  # The test bound: lower is better.
  claim = part.claims[0]
  assert 'RMS' in claim.text and 'LN' in claim.text
  part = dataclasses.replace(part, measures=(pr.Measure('final test bound (nats)', 'm', 'last', False),))

  def check(rms, ln):
    return claim.check(part, {'norm=rms': fake_runs(*rms), 'norm=ln': fake_runs(*ln)})

  assert check((90.5, 91.5), (90.0, 91.0)).holds is True  # 0.5 nats worse, within a 1-nat spread.
  assert check((88.0, 88.2), (90.0, 91.0)).holds is True  # Better.
  worse = check((95.0, 95.2), (90.0, 91.0))
  assert worse.holds is False and worse.detail.endswith('worse')
  assert check((95.0,), (90.0,)).holds is False  # One seed each: the direction decides.
  assert check((90.0,), ()).holds is None


def test_rms_speed_claim_reads_the_regression_table():
  def row(name, ms, *samples_ms):
    return {'row': name, 'loop_ms': ms, 'steps_per_call': 10, 'loop_samples_s': [s * 10 / 1e3 for s in samples_ms]}

  a, b = 'draw/norm=rms', 'draw/norm=ln'
  same = pr.step_time({a: row(a, 2.05, 2.0, 2.1), b: row(b, 2.0, 1.95, 2.1)}, a, b, 'no table')
  assert same.holds is True and 'within spread' in same.detail and '1.02x' in same.detail
  slower = pr.step_time({a: row(a, 3.0, 2.9, 3.1), b: row(b, 2.0, 1.95, 2.05)}, a, b, 'no table')
  assert slower.holds is False and slower.detail.endswith('worse')
  assert pr.step_time(None, a, b, 'not timed at the smoke scale') == pr.Outcome(None, 'not timed at the smoke scale')
  assert pr.step_time({b: row(b, 2.0, 2.0)}, a, b, '').holds is None


def test_rms_step_times_are_read_from_the_regression_table_under_the_root(tmp_path):
  rms = pr.select(['rms'])[0]
  args = reproduce.parse_args(['--scale', 'smoke', '--root', str(tmp_path)])
  table, note, brief = reproduce.speed_table(rms, args)  # Smoke: not timed, and said so.
  assert table is None and brief == 'not timed at the smoke scale' and 'benchmarks.regression --rows mnist/' in note
  _, a, b = rms.parts[0].speed[0]
  rows = [{'row': a, 'loop_ms': 1.0}, {'row': b, 'loop_ms': 1.1}]
  (tmp_path / 'rms').mkdir()
  (tmp_path / 'rms' / 'regression.json').write_text(json.dumps({'environment': {}, 'rows': rows}))
  table, note, _ = reproduce.speed_table(rms, args)
  assert table == {a: rows[0], b: rows[1]} and 'regression.json' in note and 'timed' not in note
  # The note says when and how the table was timed, from the table's own record (a full run may have written it).
  env = {'date': '2026-12-05T16:20:09+00:00', 'loadavg_start': [0.146, 1.9, 3.4], 'loadavg_end': [1.686, 1.7, 2.9]}
  flags = {'check': True, 'write_baseline': True, 'rows': None, 'repeats': 7, 'json': 'x.json', 'traceback': False}
  (tmp_path / 'rms' / 'regression.json').write_text(json.dumps({'environment': env, 'args': flags, 'rows': rows}))
  _, note, _ = reproduce.speed_table(rms, args)
  assert (
    'timed 2026-12-05 16:20 UTC, 1-min load 0.15 to 1.69, by '
    '`python -m benchmarks.regression --check --write_baseline --repeats 7`; the CPU-scale configs'
  ) in note
  (tmp_path / 'rms' / 'regression.json').write_text('[1, 2]')
  table, note, _ = reproduce.speed_table(rms, args)
  assert table is None and 'is not a benchmarks.regression table' in note


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
  return cli_runner.run([sys.executable, '-m', 'scripts.reproduce', *args], cwd=ROOT, timeout=1200)


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
  assert '[7/8] Figure 6' in stdout
  check_rms_section(root, results['rms'], report)


def check_rms_section(root, entry, report):
  """The RMSNorm extension: a subsection per experiment, its numbers read from the runs beside the paper's."""
  for part in pr.RMS_PARTS:
    assert f'### {part.title}' in report
    numbers = entry['parts'][part.key]
    assert [c['text'] for c in numbers['claims']][: len(part.claims)] == [c.text for c in part.claims]
    speed = numbers['claims'][len(part.claims) :]
    assert len(speed) == len(part.speed) and all(c['holds'] is None and 'smoke' in c['detail'] for c in speed)
    for label, row in numbers['table'].items():
      for cell in row.values():
        assert cell['readings'][0]['run'].startswith(str(root / part.key))
        if cell['mean'] is not None:
          assert cell['mean'] == pytest.approx(read_again(cell['readings'][0]), rel=1e-12), (part.key, label)


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
  rows |= {'fig5': 'Figure 5:', 'fig6': 'Figure 6:', 'rms': 'Beyond the paper: RMSNorm'}
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
