"""scripts.sweep on config files written here: the commands it generates, and real launches of a fake experiment
through the local process pool and through submitit's local cluster (the SLURM code path)."""

import json
import os
import shlex
import sys
import textwrap

import pytest

from scripts import sweep

CONFIG = """
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.variant = arg or ''
  config.norm = 'none'
  config.batch_size = 128
  for item in filter(None, (arg or '').split(',')):  # Variants, as configs.common.parse_arg reads them.
    key, _, value = item.partition('=')
    if key not in ('norm', 'batch_size', 'smoke'):
      raise ValueError(f'Unknown config variant {key!r}')
    if key == 'batch_size':
      config.batch_size = int(value)
    elif key == 'norm':
      config.norm = value
  config.optimizer = ml_collections.ConfigDict({'learning_rate': 1e-3, 'b1': 0.9})
  return config


def sweep(add):
  for batch_size in (128, 4):
    for norm in ('bn', 'none', 'ln'):
      add(norm=norm, batch_size=batch_size)
  add(**{'optimizer.learning_rate': 0.01, 'norm': 'ln'})
"""

# Stands in for `python -m experiments.<name>`: records its arguments in the workdir, fails on request.
FAKE_EXPERIMENT = """
import json, os, sys

args = sys.argv[1:]
workdir = args[args.index('--workdir') + 1]
if '--config.norm=fail' in args:
  print('diverged on purpose')
  sys.exit(3)
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, 'args.json'), 'w') as f:
  json.dump({'argv': args, 'cwd': os.getcwd()}, f)
print('trained', workdir)
"""


def write_config(d, body=CONFIG, name='toy.py'):
  path = d / name
  path.write_text(textwrap.dedent(body))
  return str(path)


@pytest.fixture
def fake_experiment(tmp_path, monkeypatch):
  package_dir = tmp_path / 'pythonpath'
  package_dir.mkdir()
  (package_dir / 'fake_experiment.py').write_text(FAKE_EXPERIMENT)
  # Children inherit the environment; keep the repository importable too (submitit's job runs scripts.sweep).
  paths = [str(package_dir), os.getcwd(), os.environ.get('PYTHONPATH', '')]
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(p for p in paths if p))
  return 'fake_experiment'


def test_dry_run_prints_one_command_per_point(tmp_path, capsys):
  config = write_config(tmp_path)
  root = str(tmp_path / 'runs' / 'fig6')
  assert sweep.main([config, '--variant', 'smoke', '--root', root, '--dry_run']) == 0
  commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
  assert len(commands) == 7
  # Keys get_config accepts as variants go after the colon (so what the variant derives is set too); the rest are
  # config fields.
  assert commands[0] == [
    sys.executable, '-m', 'experiments.toy', '--config', f'{config}:smoke,norm=bn,batch_size=128',
    '--workdir', f'{root}/smoke,norm=bn,batch_size=128',
  ]  # fmt: skip
  assert commands[5][-3:] == [
    f'{config}:smoke,norm=ln,batch_size=4', '--workdir', f'{root}/smoke,norm=ln,batch_size=4'
  ]  # fmt: skip
  assert commands[6][4:] == [
    f'{config}:smoke,norm=ln', '--config.optimizer.learning_rate=0.01',
    '--workdir', f'{root}/smoke,optimizer.learning_rate=0.01,norm=ln',
  ]  # fmt: skip
  assert not os.path.exists(root)  # A dry run launches and creates nothing.


def test_no_variant_and_value_formatting(tmp_path):
  config = write_config(
    tmp_path,
    CONFIG.replace(
      "add(**{'optimizer.learning_rate': 0.01, 'norm': 'ln'})",
      "add(**{'optimizer.b1': 0.5, 'variant': 'a b/c'}); add(variant='x', batch_size=True)",
    ),
  )
  points = sweep.build_points(config, None, 'r', module='my.module', python='py')
  assert points[6].argv == [
    'py', '-m', 'my.module', '--config', config, '--config.optimizer.b1=0.5', '--config.variant=a b/c',
    '--workdir', 'r/optimizer.b1=0.5,variant=a_b_c',
  ]  # fmt: skip
  assert points[7].argv[5:7] == ['--config.variant=x', '--config.batch_size=True']


def test_misspelled_key_fails_before_launch(tmp_path, capsys):
  config = write_config(tmp_path, CONFIG.replace("'optimizer.learning_rate'", "'optimizer.lr'"))
  assert sweep.main([config, '--root', str(tmp_path / 'r')]) == 2
  err = capsys.readouterr().err
  assert "overrides 'optimizer.lr', which is no variant of get_config, and optimizer has no field 'lr'" in err
  assert '(fields: b1, learning_rate)' in err
  assert config in err
  assert not os.path.exists(tmp_path / 'r')
  config = write_config(tmp_path, CONFIG.replace('add(norm=norm, ', 'add(nrom=norm, '))
  with pytest.raises(ValueError, match=r"'nrom', which is no variant .* has no field 'nrom' \(fields: batch_size"):
    sweep.build_points(config, None, 'r')


def test_set_overrides_a_field_at_every_point_and_is_checked(tmp_path):
  config = write_config(tmp_path)
  points = sweep.build_points(config, None, 'r', python='py', extra=['optimizer.b1=0.5'])
  assert all(p.argv[-3] == '--config.optimizer.b1=0.5' for p in points)
  with pytest.raises(ValueError, match=r"'optimizer\.b2', which is no variant"):
    sweep.build_points(config, None, 'r', extra=['optimizer.b2=0.5'])
  with pytest.raises(ValueError, match='expected FIELD=VALUE'):
    sweep.build_points(config, None, 'r', extra=['optimizer.b1'])


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match='defines no sweep'):
    sweep.build_points(write_config(tmp_path, 'x = 1\n'), None, 'r')
  with pytest.raises(ValueError, match='added no points'):
    sweep.build_points(write_config(tmp_path, 'def sweep(add):\n  pass\n'), None, 'r')
  twice = 'def sweep(add):\n  add(norm="ln")\n  add(norm="ln")\n'
  with pytest.raises(ValueError, match='would share workdir norm=ln'):
    sweep.build_points(write_config(tmp_path, twice), None, 'r')
  with pytest.raises(ValueError, match='not found'):
    sweep.build_points(str(tmp_path / 'missing.py'), None, 'r')


TWO_POINTS = 'def sweep(add):\n  add(norm="ln", batch_size=4)\n  add(norm="bn", batch_size=4)\n'


def test_local_executor_runs_each_point(tmp_path, fake_experiment, capsys):
  config = write_config(tmp_path, TWO_POINTS, name='mnist.py')
  root = tmp_path / 'runs'
  assert (
    sweep.main([config, '--variant', 'smoke', '--root', str(root), '--jobs', '2', '--module', fake_experiment]) == 0
  )
  for name in ('smoke,norm=ln,batch_size=4', 'smoke,norm=bn,batch_size=4'):
    recorded = json.loads((root / name / 'args.json').read_text())
    norm = name.split(',')[1].split('=')[1]
    assert recorded['argv'] == [
      '--config', f'{config}:smoke', f'--config.norm={norm}', '--config.batch_size=4', '--workdir', str(root / name)
    ]  # fmt: skip
    assert f'trained {root / name}' in (root / 'logs' / f'{name}.log').read_text()
  out = capsys.readouterr().out
  assert '[1/2]' in out and '[2/2]' in out and out.count(': done in') == 2


def test_sweeps_of_two_variants_into_one_root_keep_apart_and_logs_are_appended(tmp_path, fake_experiment, capsys):
  config = write_config(tmp_path, TWO_POINTS, name='mnist.py')
  root = tmp_path / 'runs'
  launch = lambda *variant: sweep.main([config, *variant, '--root', str(root), '--module', fake_experiment])
  assert launch('--variant', 'smoke') == 0 and launch() == 0 and launch() == 0
  smoke, full = root / 'smoke,norm=ln,batch_size=4', root / 'norm=ln,batch_size=4'
  assert json.loads((smoke / 'args.json').read_text())['argv'][1] == f'{config}:smoke'
  assert json.loads((full / 'args.json').read_text())['argv'][1] == config
  assert (root / 'logs' / 'smoke,norm=ln,batch_size=4.log').read_text().count('trained') == 1
  assert (root / 'logs' / 'norm=ln,batch_size=4.log').read_text().count('trained') == 2  # The re-run appended.


def test_local_executor_reports_failures(tmp_path, fake_experiment, capsys):
  config = write_config(tmp_path, 'def sweep(add):\n  add(norm="fail")\n  add(norm="ln")\n')
  root = tmp_path / 'runs'
  assert sweep.main([config, '--root', str(root), '--module', fake_experiment, '--jobs', '2']) == 1
  out, err = capsys.readouterr()
  assert f'norm=fail: FAILED (exit 3), see {root}/logs/norm=fail.log' in out
  assert '1 of 2 runs failed: norm=fail' in err
  assert 'diverged on purpose' in (root / 'logs' / 'norm=fail.log').read_text()
  assert (root / 'norm=ln' / 'args.json').exists()


def test_submitit_local_executor(tmp_path, fake_experiment, capsys):
  config = write_config(tmp_path, TWO_POINTS, name='mnist.py')
  root = tmp_path / 'runs'
  argv = [
    config,
    '--root',
    str(root),
    '--executor',
    'submitit-local',
    '--module',
    fake_experiment,
    '--timeout_min',
    '2',
  ]
  assert sweep.main(argv) == 0
  for name in ('norm=ln,batch_size=4', 'norm=bn,batch_size=4'):
    recorded = json.loads((root / name / 'args.json').read_text())
    assert recorded['argv'][-1] == str(root / name)
    assert recorded['cwd'] == os.getcwd()  # Jobs run where the sweep was launched, so relative paths hold.
  out = capsys.readouterr().out
  assert 'submitted 2 jobs' in out and (root / 'submitit').is_dir()


def test_requeue_resubmits_the_same_command():
  # On preemption or timeout submitit calls checkpoint() and submits what it returns; the run then resumes itself.
  command = sweep.Command('/launch/dir')
  delayed = command.checkpoint(['python', '-m', 'experiments.mnist', '--workdir', 'w'])
  assert delayed.function is command and delayed.args == (['python', '-m', 'experiments.mnist', '--workdir', 'w'],)


def test_slurm_without_slurm_says_what_to_do(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('PATH', str(tmp_path))  # No srun on the PATH, as on any machine outside a cluster.
  config = write_config(tmp_path, TWO_POINTS)
  assert sweep.main([config, '--root', str(tmp_path / 'r'), '--executor', 'slurm']) == 2
  assert 'cannot submit to SLURM here' in capsys.readouterr().err
