"""The docs name only what the repository holds, and the README stays short.

Checked: every Markdown link (relative to the file it is in, with its #anchor where it points into a Markdown file)
and every repository path written in the text (`configs/mnist.py`, `experiments/loop/`, plain or backticked, relative
to the repository root) of README.md, the other READMEs and docs/*.md, and the paths the configs' docstrings name
(what `--list_config` prints). Not checked: URLs, runs/..., paths under ~ or $VARS, and placeholders (DIR, <name>).
"""

from __future__ import annotations

import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository's own top-level folders: a path in prose is one of ours when it starts with one of these.
ROOTS = ('layernorm', 'experiments', 'configs', 'scripts', 'benchmarks', 'tests', 'docs', 'report')
PATH = re.compile(r'(?<![\w./~$-])((?:' + '|'.join(ROOTS) + r')/[\w./*-]*)')
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
PLACEHOLDER = re.compile(r'^[A-Z][A-Z_]*$')  # DIR, NAME, IAM_DIR: a component the reader fills in.
README_MAX_LINES = 260


def doc_files() -> list[str]:
  patterns = ('README.md', '*/README.md', 'experiments/*/README.md', 'docs/*.md')
  return sorted({f for p in patterns for f in glob.glob(p, root_dir=ROOT)})


def python_files() -> list[str]:
  return sorted(f for r in ROOTS for f in glob.glob(f'{r}/**/*.py', root_dir=ROOT, recursive=True))


def config_docstrings() -> dict[str, str]:
  docs = {}
  for name in sorted(glob.glob('configs/*.py', root_dir=ROOT)):
    with open(os.path.join(ROOT, name)) as f:
      docs[name] = ast.get_docstring(ast.parse(f.read())) or ''
  return docs


def slug(heading: str) -> str:
  """The anchor GitHub gives a Markdown heading."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


def anchors(path: str) -> set[str]:
  with open(path) as f:
    return {slug(m.group(1)) for m in re.finditer(r'^#+ (.*)$', f.read(), flags=re.MULTILINE)}


def _exists(path: str) -> bool:
  return bool(glob.glob(path)) if '*' in path else os.path.exists(path)


def missing_paths(text: str, base_dir: str, root: str = ROOT, links: bool = True) -> list[str]:
  """The links (relative to base_dir) and repository paths (relative to root) in text that do not resolve."""
  missing = []
  if links:
    for target in LINK.findall(text):
      if re.match(r'^[a-z]+:', target) or target.startswith(('#', '~', '$')):
        continue
      path, _, anchor = target.partition('#')
      full = os.path.normpath(os.path.join(base_dir, path))
      resolves = full.startswith(root + os.sep) and _exists(full)
      if not resolves or (anchor and full.endswith('.md') and anchor not in anchors(full)):
        missing.append(target)
  prose = LINK.sub('', text) if links else text  # A link's target is relative to its file: checked above.
  for path in PATH.findall(prose):
    path = path.rstrip('.')
    parts = [p for p in path.split('/') if p]
    if any(PLACEHOLDER.match(os.path.splitext(p)[0]) and not p.endswith('.md') for p in parts):
      continue
    if not _exists(os.path.join(root, path)):
      missing.append(path)
  return missing


@pytest.mark.parametrize('doc', doc_files())
def test_every_path_a_doc_names_exists(doc):
  with open(os.path.join(ROOT, doc)) as f:
    text = f.read()
  assert not missing_paths(text, os.path.dirname(os.path.join(ROOT, doc))), f'{doc} names paths that do not exist'


@pytest.mark.parametrize('config', sorted(config_docstrings()))
def test_every_path_a_config_docstring_names_exists(config):
  docstring = config_docstrings()[config]
  assert not missing_paths(docstring, ROOT, links=False), f'{config} names paths that do not exist'


def test_every_cited_section_of_docs_paper_exists():
  with open(os.path.join(ROOT, 'docs', 'paper.md')) as f:
    sections = set(re.findall(r'^## (\d+)\. ', f.read(), flags=re.MULTILINE))
  cited = {}
  for name in python_files() + doc_files():
    with open(os.path.join(ROOT, name)) as f:
      for number in re.findall(r'docs/paper\.md, section (\d+)', f.read()):
        cited.setdefault(number, []).append(name)
  assert cited, 'no file cites a section of docs/paper.md'
  assert not {n: names for n, names in cited.items() if n not in sections}


def test_no_reference_to_the_old_paper_notes():
  old = 'docs/' + 'PAPER.md'  # Spelled in two parts so that this file does not cite it.
  for name in doc_files() + python_files():
    with open(os.path.join(ROOT, name)) as f:
      assert old not in f.read(), f'{name} cites {old}, which does not exist: docs/paper.md replaces it'


def test_the_readme_is_short():
  with open(os.path.join(ROOT, 'README.md')) as f:
    lines = f.read().count('\n')
  assert lines < README_MAX_LINES, f"README.md has {lines} lines: move the detail into the experiments' READMEs"


def test_the_checker_reports_what_is_missing_and_skips_what_is_not_ours(tmp_path):
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'mnist.py').write_text('')
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'paper.md').write_text('# Title\n\n## 4. DRAW\n')
  root = str(tmp_path)
  text = '\n'.join(
    [
      'Run `configs/mnist.py:norm=ln` and `configs/nope.py`; see [the paper](docs/paper.md#4-draw),',
      '[gone](docs/gone.md), [no such heading](docs/paper.md#5-handwriting) and configs/*.py.',
      'Not ours: runs/x/y, ~/.cache/layernorm/data, $LAYERNORM_DATA/mnist, [web](https://example.org/a),',
      'configs/DIR/x.py, --config.data.dir=/usr/share/datasets/fashion-mnist, scripts/*.sh.',
    ]
  )
  missing = missing_paths(text, root, root=root)
  assert sorted(missing) == sorted(['configs/nope.py', 'docs/gone.md', 'docs/paper.md#5-handwriting', 'scripts/*.sh'])
