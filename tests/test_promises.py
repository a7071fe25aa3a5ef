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


# ------------------------------------------------------------------------------------- the validation hold-out's size


def small_idx_dir(tmp_path):
  """A user's own small IDX set: 4,000 training and 100 test images, fewer than either default hold-out."""
  d = tmp_path / 'idx'
  d.mkdir()
  return str(d), write_mnist_dir(d, 4_000, 100)


def experiment_config(name: str, data_dir: str | None = None, **data):
  from configs import draw as draw_config
  from configs import mnist as mnist_config

  config = (mnist_config if name == 'mnist' else draw_config).get_config('smoke' + (',source=idx' if data_dir else ''))
  config.data.dir = data_dir
  for key, value in data.items():
    config.data[key] = value
  return config


def experiment(name: str):
  from experiments.draw import task as draw_task
  from experiments.mnist import task as mnist_task

  return mnist_task if name == 'mnist' else draw_task


@pytest.mark.parametrize('name', ['mnist', 'draw'])
def test_num_valid_defaults_to_the_sources_standard_and_bad_values_are_named(name):
  import ml_collections

  from experiments import loop

  config = experiment_config(name)
  assert config.data.num_valid is None  # The source's standard: the paper's 5,000 (MNIST) or 10,000 (DRAW) for idx.
  experiment(name).validate(config)
  for bad in (0, -5, 'all'):
    config = experiment_config(name)
    config.data = ml_collections.ConfigDict({**config.data.to_dict(), 'num_valid': bad})  # As code could build it.
    with pytest.raises(loop.ConfigError) as e:
      experiment(name).validate(config)
    assert 'config.data.num_valid must be a positive int' in str(e.value) and f'got {bad!r}' in str(e.value)
    assert '--config.data.num_valid=' in str(e.value) and str(e.value).count('\n  - ') == 1


def test_draw_refuses_num_valid_for_a_source_with_fixed_splits(tmp_path):
  from experiments import loop

  config = experiment_config('draw', num_valid=100)
  experiment('draw').validate(config)  # digits: its own hold-out is allowed.
  with config.unlocked():
    config.data.source = 'tfds'
  with pytest.raises(loop.ConfigError, match=r'num_valid=100, but source=tfds has fixed train/valid/test splits'):
    experiment('draw').validate(config)


@pytest.mark.parametrize('name', ['mnist', 'draw'])
def test_a_small_idx_set_is_read_with_its_own_hold_out(tmp_path, name, capsys):
  from experiments import cli

  data_dir, arrays = small_idx_dir(tmp_path)
  task = experiment(name)
  # The default hold-out does not fit: exit status 2, one message naming the field and the fix, nothing written.
  workdir = tmp_path / 'run'
  code = cli.run_experiment(task.train_and_evaluate, task.validate, experiment_config(name, data_dir), str(workdir))
  err = capsys.readouterr().err
  assert code == cli.EXIT_CONFIG, err
  default = '5,000' if name == 'mnist' else '10,000'
  assert f'has 4,000 training examples, too few to hold out {default} for validation' in err
  assert '--config.data.num_valid=400 (config.data.num_valid)' in err and 'Traceback' not in err
  assert not workdir.exists()
  # With num_valid set, the last 500 training images are the validation split.
  built = task.build_task(experiment_config(name, data_dir, num_valid=500))
  images = arrays['train-images-idx3-ubyte']
  train, valid = built.train_data['image'], built.eval_data['valid']['image']
  assert len(train) == 3_500 and len(valid) == 500 and len(built.eval_data['test']['image']) == 100
  if name == 'mnist':  # Flat pixels, labels beside them.
    np.testing.assert_array_equal(valid, images[-500:].reshape(500, -1))
    np.testing.assert_array_equal(built.eval_data['valid']['label'], arrays['train-labels-idx1-ubyte'][-500:])
  else:  # Binarized at 128.
    np.testing.assert_array_equal(valid, images[-500:] >= 128)
    np.testing.assert_array_equal(train, images[:-500] >= 128)


def test_mnist_trains_on_a_small_idx_set(tmp_path):
  from experiments import loop
  from experiments.mnist import task

  data_dir, _ = small_idx_dir(tmp_path)
  config = experiment_config('mnist', data_dir, num_valid=500)
  config.num_train_steps = 2
  final = task.train_and_evaluate(config, str(tmp_path / 'run'))
  assert loop.read_status(str(tmp_path / 'run'))['status'] == 'done'
  assert 0 <= final['eval/valid/error'] <= 1 and np.isfinite(final['eval/test/nll'])


def test_runs_made_before_num_valid_existed_still_resume():
  from experiments import workdir as wd

  old = {'seed': 0, 'data': {'source': 'idx', 'dir': '/d'}}  # config.json of a run from before the field.
  assert wd.config_differences(old, {'seed': 0, 'data': {'source': 'idx', 'dir': '/d', 'num_valid': None}}) == []
  changed = {'seed': 0, 'data': {'source': 'idx', 'dir': '/d', 'num_valid': 500}}
  assert wd.config_differences(old, changed) == [('data.num_valid', '<missing>', 500)]
  # A field set to None now that the workdir had set is a difference.
  assert wd.config_differences(changed, {**old, 'data': {**old['data'], 'num_valid': None}}) == [
    ('data.num_valid', 500, None)
  ]
