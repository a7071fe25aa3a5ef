"""One spelling per flag across commands: `--dry_run`, with the hyphenated spelling of before accepted, not shown."""

import argparse
import ast
import glob
import importlib
import os
import pathlib

import pytest

from experiments.flag_spelling import add_flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser_with_flags() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='cmd')
  add_flag(parser, '--dry_run', action='store_true', help='print, run nothing')
  add_flag(parser, '--torch_threads', type=int, default=3, help='threads')
  add_flag(parser, '--quick', action='store_true')
  return parser


def test_both_spellings_parse_to_one_value_and_only_the_projects_is_shown():
  parser = parser_with_flags()
  assert vars(parser.parse_args([])) == {'dry_run': False, 'torch_threads': 3, 'quick': False}
  expected = {'dry_run': True, 'torch_threads': 5, 'quick': False}
  assert vars(parser.parse_args(['--dry_run', '--torch_threads', '5'])) == expected
  assert vars(parser.parse_args(['--dry-run', '--torch-threads', '5'])) == expected
  assert vars(parser.parse_args(['--dry-run', '--torch-threads=5'])) == expected
  with pytest.raises(SystemExit):
    parser.parse_args(['--torch-threads', 'many'])  # The hidden spelling checks its value as the shown one does.
  help_text = parser.format_help()
  assert '--dry_run' in help_text and '--torch_threads' in help_text
  assert '--dry-run' not in help_text and '--torch-threads' not in help_text


def test_a_flag_declared_with_hyphens_is_refused():
  with pytest.raises(ValueError, match='spell a flag with underscores'):
    add_flag(argparse.ArgumentParser(), '--dry-run', action='store_true')


class Parsed(Exception):
  """Raised with the parsed namespace in place of running the command."""


@pytest.fixture
def parsed(monkeypatch):
  """`parsed(main, argv)`: the namespace `main(argv)` parses its arguments into; nothing after parsing runs."""
  parse_args = argparse.ArgumentParser.parse_args

  def stop(self, args=None, namespace=None):
    raise Parsed(parse_args(self, args, namespace))

  monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', stop)

  def run(main, argv):
    with pytest.raises(Parsed) as stopped:
      main(argv)
    return vars(stopped.value.args[0])

  return run


# Every flag that was spelled with hyphens, in the command that has it: (module, arguments it needs, old spelling).
RENAMED = [
  ('scripts.sweep', ['configs/mnist.py', '--root', 'r'], ['--dry-run']),
  ('scripts.reproduce', ['--scale', 'smoke', '--root', 'r'], ['--dry-run']),
  ('benchmarks.regression', [], ['--write-baseline']),
  ('benchmarks.layer_norm', [], ['--no-torch', '--in-graph', '7']),
  ('benchmarks.cells', [], ['--random-cotangent', '--scan-too']),
  ('benchmarks.mnist_throughput', [], ['--no-torch', '--torch-threads', '2']),
  ('benchmarks.attentive_reader', [], ['--no-torch', '--torch-modes', 'eager', '--torch-threads', '2']),
]


@pytest.mark.parametrize(('module', 'needed', 'old'), RENAMED, ids=[r[0] for r in RENAMED])
def test_every_renamed_flag_keeps_its_old_spelling(parsed, module, needed, old):
  main = importlib.import_module(module).main
  new = ['--' + a[2:].replace('-', '_') if a.startswith('--') else a for a in old]
  given = parsed(main, needed + new)
  assert parsed(main, needed + old) == given
  assert given != parsed(main, needed)  # The flags did something: not all defaults.


def long_options_of(path: str):
  """(line, option) of each literal `--option` handed to add_argument in `path`."""
  for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
    if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'add_argument':
      for arg in node.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith('--'):
          yield node.lineno, arg.value


def test_no_command_declares_a_hyphenated_flag():
  # Underscores are the one spelling (absl, the experiments' command line, accepts no other); add_flag adds the
  # hyphenated alias itself, so a literal hyphenated option here is a second spelling creeping back.
  folders = ('scripts', 'experiments', 'benchmarks')
  paths = [p for folder in folders for p in glob.glob(f'{ROOT}/{folder}/**/*.py', recursive=True)]
  hyphenated = [
    f'{os.path.relpath(path, ROOT)}:{line}: {option}'
    for path in paths
    for line, option in long_options_of(path)
    if '-' in option[2:]
  ]
  assert not hyphenated, 'declare these with experiments.flag_spelling.add_flag and underscores:\n' + '\n'.join(
    hyphenated
  )
