"""Image data sources: IDX and .amat readers on files written here in the published formats, the splits of every
source, a fake prepared TFDS data set read without TensorFlow, and the error messages that name the fix."""

import gzip
import importlib
import os
import struct
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from experiments.data import mnist
from experiments.data.idx import read_idx
from experiments.draw import data as binarized_mnist

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
  """IDX, written from the format's definition: 0, 0, dtype code, rank, big-endian uint32 dims, big-endian data."""
  header = struct.pack('>BBBB', 0, 0, IDX_CODES[array.dtype.type], array.ndim)
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def write_idx(path, array: np.ndarray, gz: bool = False) -> str:
  path = os.fspath(path) + ('.gz' if gz else '')
  with open(path, 'wb') as f:
    f.write(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
  return path


def write_mnist_dir(d, num_train: int, num_test: int, shape=(28, 28), gz_files=()):
  rng = np.random.default_rng(0)
  arrays = {
    'train-images-idx3-ubyte': rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
    'train-labels-idx1-ubyte': rng.integers(0, 10, num_train).astype(np.uint8),
    't10k-images-idx3-ubyte': rng.integers(0, 256, (num_test, *shape), dtype=np.uint8),
    't10k-labels-idx1-ubyte': rng.integers(0, 10, num_test).astype(np.uint8),
  }
  for name, a in arrays.items():
    write_idx(d / name, a, gz=name in gz_files)
  return arrays


# ---------------------------------------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize(
  'array',
  [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([0, 9, 3], np.uint8),
    np.array([[-129, 258], [70000, -1]], np.int32),  # Multi-byte values catch a wrong byte order.
    np.array([[1.5, -2.25e3]], np.float32),
    np.array([-3e300, 1e-300], np.float64),
    np.array([[-5, 300]], np.int16),
  ],
)
def test_read_idx_round_trip(tmp_path, array, gz):
  out = read_idx(write_idx(tmp_path / 'x-idx', array, gz=gz))
  assert out.dtype == array.dtype and out.dtype.isnative
  np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
  # Browsers often decompress a download and keep its `.gz` name; the reader must not trust the name.
  array = np.arange(12, dtype=np.uint8).reshape(3, 4)
  path = tmp_path / 'labels.gz'
  path.write_bytes(idx_bytes(array))
  np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize('gz', [False, True])
def test_read_idx_truncated_file_names_file_and_sizes(tmp_path, gz):
  array = np.zeros((10, 28, 28), np.uint8)
  data = idx_bytes(array)[:-100]  # 7,856 of 7,856 + 16 - 100 bytes.
  path = tmp_path / ('images.gz' if gz else 'images')
  path.write_bytes(gzip.compress(data) if gz else data)
  with pytest.raises(ValueError, match='truncated') as e:
    read_idx(path)
  message = str(e.value)
  assert str(path) in message
  assert 'expected 7,856 bytes, found 7,756' in message
  assert '(10, 28, 28)' in message
  assert 'dataset-fashion-mnist' in message  # How to get a good copy.


def test_read_idx_truncated_gzip_stream(tmp_path):
  compressed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)))
  path = tmp_path / 'cut.gz'
  path.write_bytes(compressed[: len(compressed) // 2])
  with pytest.raises(ValueError, match=r'truncated \(the gzip stream ends early\).*expected 20,008 bytes, found'):
    read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
  compressed = bytearray(gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32))))
  compressed[-6] ^= 0xFF  # Inside the CRC-32 trailer: the data decompresses but fails its check.
  path = tmp_path / 'bad.gz'
  path.write_bytes(bytes(compressed))
  with pytest.raises(ValueError, match='corrupt gzip data') as e:
    read_idx(path)
  assert str(path) in str(e.value)


def test_read_idx_trailing_bytes_and_bad_magic(tmp_path):
  path = tmp_path / 'long'
  path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b'\0\0')
  with pytest.raises(ValueError, match=r'has trailing bytes.*expected 12 bytes, found 14'):
    read_idx(path)
  path = tmp_path / 'text'
  path.write_bytes(b'<html>Not Found</html>')  # What a failed download often leaves behind.
  with pytest.raises(ValueError, match=r'not an IDX file: bad magic number 0x3c68746d'):
    read_idx(path)
  path = tmp_path / 'tiny'
  path.write_bytes(b'\0\0')
  with pytest.raises(ValueError, match='expected at least a 4-byte header, found 2 bytes'):
    read_idx(path)


# ------------------------------------------------------------------------------------------------------------ MNIST


def test_load_mnist_idx_split_and_dtypes(tmp_path):
  arrays = write_mnist_dir(tmp_path, 12, 3, shape=(5, 4), gz_files=('train-images-idx3-ubyte',))
  data = mnist.load_mnist('idx', str(tmp_path), num_valid=2)
  train_x, train_y = arrays['train-images-idx3-ubyte'], arrays['train-labels-idx1-ubyte']
  expected = {
    'train': (train_x[:10], train_y[:10]),
    'valid': (train_x[10:], train_y[10:]),  # The last training images, as the paper's 55k/5k split.
    'test': (arrays['t10k-images-idx3-ubyte'], arrays['t10k-labels-idx1-ubyte']),
  }
  assert set(data) == set(expected)
  for split, (x, y) in data.items():
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, expected[split][0])
    np.testing.assert_array_equal(y, expected[split][1])


def test_load_mnist_idx_holds_out_5000_by_default(tmp_path):
  write_mnist_dir(tmp_path, 5_003, 2, shape=(1, 2))
  data = mnist.load_mnist('idx', str(tmp_path))
  assert [len(data[s][0]) for s in ('train', 'valid', 'test')] == [3, 5_000, 2]


def test_load_mnist_idx_label_count_mismatch(tmp_path):
  write_mnist_dir(tmp_path, 6, 2, shape=(2, 2))
  write_idx(tmp_path / 't10k-labels-idx1-ubyte', np.zeros(3, np.uint8))
  with pytest.raises(ValueError, match=r't10k-labels-idx1-ubyte: expected 2 labels.*found shape \(3,\)'):
    mnist.load_mnist('idx', str(tmp_path), num_valid=1)


def test_load_mnist_idx_corrupt_file_named(tmp_path):
  write_mnist_dir(tmp_path, 6, 2, shape=(2, 2))
  path = tmp_path / 'train-images-idx3-ubyte'
  path.write_bytes(path.read_bytes()[:-1])
  with pytest.raises(ValueError, match=r'train-images-idx3-ubyte: IDX file truncated.*expected 40 bytes, found 39'):
    mnist.load_mnist('idx', str(tmp_path), num_valid=1)


def test_mnist_check_source_errors(tmp_path):
  with pytest.raises(ValueError, match="Unknown MNIST source 'mnist'; choose one of tfds, idx, digits"):
    mnist.check_source('mnist')
  with pytest.raises(ValueError, match='set data_dir'):
    mnist.check_source('idx', None)
  with pytest.raises(ValueError, match=r'is not a directory.*apt-get install dataset-fashion-mnist'):
    mnist.check_source('idx', str(tmp_path / 'nope'))
  write_mnist_dir(tmp_path, 2, 2, shape=(1, 1))
  os.remove(tmp_path / 't10k-images-idx3-ubyte')
  os.remove(tmp_path / 'train-labels-idx1-ubyte')
  with pytest.raises(ValueError) as e:
    mnist.check_source('idx', str(tmp_path))
  message = str(e.value)
  assert 'lacks 2 IDX file(s): train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz]' in message
  assert f'data_dir={FASHION_MNIST_DIR}' in message and 'apt-get install dataset-fashion-mnist' in message
  assert 'storage.googleapis.com/cvdf-datasets/mnist' in message


def test_load_mnist_digits():
  data = mnist.load_mnist('digits')
  assert [data[s][0].shape for s in ('train', 'valid', 'test')] == [(1297, 8, 8), (250, 8, 8), (250, 8, 8)]
  images = np.concatenate([data[s][0] for s in data])
  assert images.dtype == np.uint8 and images.min() == 0 and images.max() == 255
  # Values are exactly the 17 levels 0..16 rescaled: nothing else appears.
  assert set(np.unique(images)) <= set(np.round(np.arange(17) * 255 / 16).astype(int))
  labels = np.concatenate([data[s][1] for s in data])
  assert labels.dtype == np.int32 and np.bincount(labels).sum() == 1797 and len(np.bincount(labels)) == 10
  split = mnist.digits_split()
  assert sorted(np.concatenate(list(split.values()))) == list(range(1797))  # Disjoint and complete.
  again = mnist.load_mnist('digits')
  for s in data:  # The split is fixed, not drawn per call.
    np.testing.assert_array_equal(again[s][0], data[s][0])


def test_digits_read_from_the_shipped_file_equal_scikit_learns_reader(monkeypatch):
  """load_digits reads scikit-learn's file itself (no import); it must give exactly what scikit-learn's reader gives,
  and fall back to that reader where the file is not where it looks."""
  from sklearn import datasets

  reference = datasets.load_digits()
  images, labels = mnist.load_digits()
  np.testing.assert_array_equal(images, reference.images)
  np.testing.assert_array_equal(labels, reference.target)
  assert images.dtype == np.int64 and labels.dtype == np.int32
  monkeypatch.setattr(mnist.importlib.util, 'find_spec', lambda name: None)
  fallback_images, fallback_labels = mnist.load_digits()
  np.testing.assert_array_equal(fallback_images, images)
  np.testing.assert_array_equal(fallback_labels, labels)


@pytest.mark.skipif(
  not os.path.isdir(FASHION_MNIST_DIR), reason='Fashion-MNIST not installed: apt-get install dataset-fashion-mnist'
)
def test_load_mnist_idx_on_fashion_mnist():
  data = mnist.load_mnist('idx', FASHION_MNIST_DIR)
  assert [data[s][0].shape for s in ('train', 'valid', 'test')] == [(55_000, 28, 28), (5_000, 28, 28), (10_000, 28, 28)]
  assert np.bincount(data['test'][1]).tolist() == [1000] * 10
  assert np.bincount(np.concatenate([data['train'][1], data['valid'][1]])).tolist() == [6000] * 10


# ----------------------------------------------------------------------------------------------- Binarized MNIST


def amat_text(images: np.ndarray, newline: str = '\n') -> str:
  """The published .amat layout: one image per line, 784 space-separated 0/1 values in row-major order."""
  return ''.join(' '.join(str(v) for v in image.reshape(-1)) + newline for image in images)


def write_amat_dir(d, sizes=(3, 2, 2)):
  rng = np.random.default_rng(1)
  images = {
    s: rng.integers(0, 2, (n, 28, 28), dtype=np.uint8) for s, n in zip(('train', 'valid', 'test'), sizes, strict=True)
  }
  for s, x in images.items():
    (d / f'binarized_mnist_{s}.amat').write_text(amat_text(x))
  return images


def test_load_binarized_mnist_amat(tmp_path):
  images = write_amat_dir(tmp_path)
  data = binarized_mnist.load_binarized_mnist('amat', str(tmp_path))
  for s, x in images.items():
    assert data[s].dtype == np.uint8
    np.testing.assert_array_equal(data[s], x)


def test_read_amat_other_whitespace_and_line_endings(tmp_path):
  x = np.random.default_rng(2).integers(0, 2, (3, 28, 28), dtype=np.uint8)
  path = tmp_path / 'crlf.amat'
  path.write_text(amat_text(x[:2], '\r\n') + '  ' + amat_text(x[2:]).replace(' ', '\t') + '\n\n')
  np.testing.assert_array_equal(binarized_mnist.read_amat(str(path)), x)


def test_read_amat_malformed_line_named(tmp_path):
  x = np.zeros((4, 28, 28), np.uint8)
  lines = amat_text(x).splitlines()
  lines[2] = lines[2][:-2]  # Line 3 loses its last value.
  path = tmp_path / 'short.amat'
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match=r'short.amat, line 3: expected 784 space-separated 0/1 values, found 783'):
    binarized_mnist.read_amat(str(path))
  lines = amat_text(x).splitlines()
  lines[1] = '0 0 0 0 2' + lines[1][9:]
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match=r"line 2: value 5 is '2', expected 0 or 1.*larocheh"):
    binarized_mnist.read_amat(str(path))


def test_load_binarized_mnist_idx_threshold_and_split(tmp_path):
  rng = np.random.default_rng(3)
  train = rng.integers(0, 256, (7, 4, 4), dtype=np.uint8)
  train[0, 0, :3] = [127, 128, 255]
  test = rng.integers(0, 256, (2, 4, 4), dtype=np.uint8)
  write_idx(tmp_path / 'train-images-idx3-ubyte', train, gz=True)
  write_idx(tmp_path / 't10k-images-idx3-ubyte', test)
  data = binarized_mnist.load_binarized_mnist('idx', str(tmp_path), num_valid=3)
  assert data['train'][0, 0, :3].tolist() == [0, 1, 1]  # pixel >= 128 is ink.
  np.testing.assert_array_equal(data['train'], train[:4] >= 128)
  np.testing.assert_array_equal(data['valid'], train[4:] >= 128)
  np.testing.assert_array_equal(data['test'], test >= 128)
  assert all(x.dtype == np.uint8 for x in data.values())


def test_load_binarized_mnist_idx_default_split_is_50k_10k(tmp_path):
  write_idx(tmp_path / 'train-images-idx3-ubyte', np.zeros((10_004, 1, 1), np.uint8))
  write_idx(tmp_path / 't10k-images-idx3-ubyte', np.zeros((3, 1, 1), np.uint8))
  data = binarized_mnist.load_binarized_mnist('idx', str(tmp_path))
  assert [len(data[s]) for s in ('train', 'valid', 'test')] == [4, 10_000, 3]


def test_load_binarized_mnist_digits_matches_mnist_digits_at_half_intensity():
  data = binarized_mnist.load_binarized_mnist('digits')
  grey = mnist.load_mnist('digits')
  for s in ('train', 'valid', 'test'):
    assert data[s].shape == grey[s][0].shape and data[s].dtype == np.uint8
    # 8/16 rescales to 127.5 -> 128, so the two thresholds agree exactly.
    np.testing.assert_array_equal(data[s], grey[s][0] >= 128)
  assert 0.2 < np.mean(data['train']) < 0.5


def test_binarized_check_source_errors(tmp_path):
  with pytest.raises(ValueError, match="Unknown binarized MNIST source 'png'; choose one of amat, tfds, idx, digits"):
    binarized_mnist.check_source('png')
  write_amat_dir(tmp_path)
  os.remove(tmp_path / 'binarized_mnist_valid.amat')
  with pytest.raises(
    ValueError, match=r'lacks 1 file\(s\): binarized_mnist_valid.amat.*larocheh.*dataset-fashion-mnist'
  ):
    binarized_mnist.check_source('amat', str(tmp_path))
  with pytest.raises(ValueError, match=r'lacks 2 IDX file\(s\): train-images-idx3-ubyte\[.gz\], t10k-images'):
    binarized_mnist.check_source('idx', str(tmp_path))
  with pytest.raises(ValueError, match='fixed train/valid/test splits'):
    write_amat_dir(tmp_path)
    binarized_mnist.load_binarized_mnist('amat', str(tmp_path), num_valid=5)


# ------------------------------------------------------------------------------------------------------------- TFDS

# A builder module in a package (TFDS needs one to build): the real MNIST and binarized MNIST builders, same names,
# versions and features, with the download replaced by a few images encoded as PNG by PIL (TFDS's own numpy encoder
# needs TensorFlow). `tfds.builder(name, data_dir)` then reads what they wrote exactly as it would read real data.
FAKE_BUILDERS = """
import io

import numpy as np
import PIL.Image
from tensorflow_datasets.datasets.binarized_mnist import binarized_mnist_dataset_builder
from tensorflow_datasets.image_classification import mnist


def png(image):
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format='png')
  return buffer.getvalue()


def fake_image(i, max_value):
  return np.random.default_rng(i).integers(0, max_value + 1, (28, 28), dtype=np.uint8)


class FakeMnist(mnist.MNIST, skip_registration=True):
  name = 'mnist'

  def _split_generators(self, dl_manager):
    return {'train': self._examples(NUM_TRAIN, 0), 'test': self._examples(NUM_TEST, 1000)}

  def _examples(self, n, offset):
    for i in range(offset, offset + n):
      yield i, {'image': png(fake_image(i, 255)), 'label': i % 10}


class FakeBinarizedMnist(binarized_mnist_dataset_builder.Builder, skip_registration=True):
  name = 'binarized_mnist'

  def _split_generators(self, dl_manager):
    return {'train': self._examples(3, 0), 'validation': self._examples(2, 100), 'test': self._examples(2, 200)}

  def _examples(self, n, offset):
    for i in range(offset, offset + n):
      yield i, {'image': png(fake_image(i, 1))}
"""
NUM_TRAIN, NUM_TEST = 9, 4


def fake_image(i, max_value):
  return np.random.default_rng(i).integers(0, max_value + 1, (28, 28), dtype=np.uint8)


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  tfds = pytest.importorskip('tensorflow_datasets')
  tfds.disable_progress_bar()
  root = tmp_path_factory.mktemp('tfds')
  package = root / 'fake_tfds_builders'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'builders.py').write_text(FAKE_BUILDERS + f'\nNUM_TRAIN, NUM_TEST = {NUM_TRAIN}, {NUM_TEST}\n')
  sys.path.insert(0, str(root))
  try:
    builders = importlib.import_module('fake_tfds_builders.builders')
    data_dir = str(root / 'data')
    for cls in (builders.FakeMnist, builders.FakeBinarizedMnist):
      cls(data_dir=data_dir, file_format='array_record').download_and_prepare()
  finally:
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith('fake_tfds_builders')]:
      del sys.modules[name]
  return data_dir


def test_load_mnist_tfds_reads_prepared_array_record(tfds_dir):
  import tensorflow_datasets as tfds

  data = mnist.load_mnist('tfds', tfds_dir, num_valid=3)
  assert [data[s][0].shape for s in ('train', 'valid', 'test')] == [(6, 28, 28), (3, 28, 28), (4, 28, 28)]
  assert all(x.dtype == np.uint8 and y.dtype == np.int32 for x, y in data.values())
  # Every image decodes to what the builder wrote, with its own label (the image's seed i has label i % 10).
  for x, y in data.values():
    for image, label in zip(x, y, strict=True):
      seeds = [
        i for i in [*range(NUM_TRAIN), *range(1000, 1000 + NUM_TEST)] if np.array_equal(image, fake_image(i, 255))
      ]
      assert len(seeds) == 1 and seeds[0] % 10 == label
  # train/valid are the first/last examples of TFDS's train split in its stored order, as `train[:55000]` would be.
  stored = tfds.builder('mnist', data_dir=tfds_dir).as_data_source(split='train')
  stored_labels = [stored[i]['label'] for i in range(len(stored))]
  assert np.concatenate([data['train'][1], data['valid'][1]]).tolist() == stored_labels


def test_load_binarized_mnist_tfds(tfds_dir):
  data = binarized_mnist.load_binarized_mnist('tfds', tfds_dir)
  assert [data[s].shape for s in ('train', 'valid', 'test')] == [(3, 28, 28), (2, 28, 28), (2, 28, 28)]
  expected = {
    s: {fake_image(i, 1).tobytes() for i in range(o, o + len(data[s]))}
    for s, o in (('train', 0), ('valid', 100), ('test', 200))
  }
  for s, x in data.items():
    assert x.dtype == np.uint8
    assert {image.tobytes() for image in x} == expected[s]


def test_tfds_not_prepared_says_how_to_prepare(tmp_path, monkeypatch):
  pytest.importorskip('tensorflow_datasets')
  scratch = tmp_path / 'tempdir'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  (tmp_path / 'mnist' / '3.0.1').mkdir(parents=True)  # A version directory without its dataset_info.json.
  with pytest.raises(ValueError) as e:
    mnist.check_source('tfds', str(tmp_path))
  assert not os.listdir(scratch)  # Said before TFDS looked for the metadata online and left a temporary directory.
  message = textwrap.shorten(str(e.value), 10_000)
  assert f"'mnist' is not prepared under {tmp_path}/mnist (no dataset_info.json in it)" in message
  assert 'tfds build mnist --file_format=array_record' in message
  assert f'copy /tmp/tfds/mnist into {tmp_path}/' in message
  assert 'Alternatively: source=idx.' in message and 'apt-get install dataset-fashion-mnist' in message
  with pytest.raises(ValueError, match=r'tfds build binarized_mnist --file_format=array_record.*source=amat'):
    binarized_mnist.load_binarized_mnist('tfds', str(tmp_path))
