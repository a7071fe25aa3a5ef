"""README promises outside the loop: a gzip file cut in its trailer is refused, the library imports nothing from
`experiments/`, TFDS data are read without TensorFlow, and the validation hold-out is a config field."""

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_data_images import idx_bytes, tfds_dir, write_mnist_dir  # noqa: F401 -- tfds_dir is a fixture.

from experiments.data.idx import read_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, tmp_path, extra_path: str = '') -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, ROOT) if p), JAX_PLATFORMS='cpu')
  return subprocess.run(
    [sys.executable, '-c', textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
  )


@pytest.mark.parametrize('cut', [1, 4, 7])
def test_read_idx_refuses_a_gzip_file_cut_inside_its_trailer(tmp_path, cut):
  """The last 8 bytes are the CRC-32 and length: without them every data byte is there, but the file is incomplete."""
  array = np.arange(300, dtype=np.int32)
  compressed = gzip.compress(idx_bytes(array))
  path = tmp_path / 'cut.gz'
  path.write_bytes(compressed[:-cut])
  with pytest.raises(ValueError, match=r'truncated \(the gzip stream ends early\).*expected 1,208 bytes, found 1,208'):
    read_idx(path)
  path.write_bytes(compressed)  # The whole file reads.
  np.testing.assert_array_equal(read_idx(path), array)


# Refuses `experiments` (and the other top-level folders that are not the library) to anything that imports them.
BLOCKER = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('experiments', 'scripts', 'configs'):
      raise ImportError(f'the library imported {name}')
    return None

sys.meta_path.insert(0, Blocker())
"""


def test_the_library_never_imports_experiments(tmp_path):
  code = (
    BLOCKER
    + """
import importlib, pkgutil
import layernorm
names = [m.name for m in pkgutil.walk_packages(layernorm.__path__, 'layernorm.')]
for name in names:
  importlib.import_module(name)
import jax, jax.numpy as jnp
from flax import nnx
x = jnp.arange(12.0).reshape(3, 4)
y = layernorm.layer_norm(x)
cell = layernorm.LNLSTMCell(4, 5, rngs=nnx.Rngs(0))
carry, ys = layernorm.unroll(cell, x[None])
assert not [m for m in sys.modules if m.split('.')[0] in ('experiments', 'scripts', 'configs')]
print(len(names), 'modules')
"""
  )
  result = run_python(code, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert int(result.stdout.split()[0]) >= 8  # Every submodule was imported, not just the package.
  # The blocker works: the same process refuses `experiments`.
  result = run_python(BLOCKER + 'import experiments.loop\n', tmp_path)
  assert result.returncode != 0 and 'the library imported experiments' in result.stderr


# A `tensorflow` that any import would reveal: it leaves a marker file and fails, as on a machine without it.
FAKE_TENSORFLOW = """
import os
open(os.environ['TF_MARKER'], 'w').close()
raise ImportError('tensorflow was imported')
"""


def test_tfds_data_are_read_without_tensorflow(tmp_path, tfds_dir):  # noqa: F811 -- the fixture.
  fake = tmp_path / 'fake_tf'
  (fake / 'tensorflow').mkdir(parents=True)
  (fake / 'tensorflow' / '__init__.py').write_text(FAKE_TENSORFLOW)
  marker = tmp_path / 'tensorflow_was_imported'
  code = f"""
import json, os, sys
os.environ['TF_MARKER'] = {str(marker)!r}
from experiments.data import mnist
from experiments.draw import data as draw_data
digits = mnist.load_mnist('tfds', {tfds_dir!r}, num_valid=3)
binarized = draw_data.load_binarized_mnist('tfds', {tfds_dir!r})
assert 'tensorflow' not in sys.modules
print(json.dumps({{s: len(x) for s, (x, _) in digits.items()}} | {{'b_' + s: len(x) for s, x in binarized.items()}}))
"""
  result = run_python(code, tmp_path, extra_path=str(fake))
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {
    'train': 6, 'valid': 3, 'test': 4, 'b_train': 3, 'b_valid': 2, 'b_test': 2
  }  # fmt: skip
  assert not marker.exists()
  # The fake is on the path and would be found by an import.
  result = run_python(f'import os; os.environ["TF_MARKER"] = {str(marker)!r}\nimport tensorflow\n', tmp_path, str(fake))
  assert result.returncode != 0 and marker.exists()
