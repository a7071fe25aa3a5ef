"""MNIST-style labelled images for the permutation-invariant MNIST experiment (paper section 6.6, Figure 6).

Sources (`config.data.source`):
  'tfds':   MNIST through TFDS (`mnist`, prepared in `array_record` format), read without TensorFlow. The paper's split:
            train = the first 55,000 of TFDS's train split (in its stored order), valid = the last 5,000, test = test.
  'idx':    the four IDX files (raw or `.gz`) in `data_dir`: MNIST, or Fashion-MNIST, which is installed offline by
            `apt-get install dataset-fashion-mnist` into /usr/share/datasets/fashion-mnist. Same 55k/5k/10k split.
  'digits': scikit-learn's bundled 8x8 digits (1,797 images; no file needed). Values 0..16 are rescaled to 0..255 so
            that every source yields the same dtype and range. Split: a permutation seeded with 0, then 250 test,
            250 valid, 1,297 train.

Every split is `(images uint8 [N, H, W], labels int32 [N])`.
"""

import importlib.util
import os

import numpy as np

from experiments.data import DataError, idx, tfds_source

SOURCES = ('tfds', 'idx', 'digits')
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
  'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
  'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
NUM_CLASSES = 10  # MNIST's digits and Fashion-MNIST's garments: labels 0..9.
NUM_VALID = 5_000  # MNIST's usual 55k/5k/10k split, as in the paper (55,000 training points).
DIGITS_SEED = 0
DIGITS_NUM_TEST = 250
DIGITS_NUM_VALID = 250
IDX_HINT = (
  '`python -m scripts.get_data mnist` fetches MNIST for the `real` variant (configs/mnist.py:real). Or download '
  'the four .gz files from https://storage.googleapis.com/cvdf-datasets/mnist/ (a mirror of '
  'http://yann.lecun.com/exdb/mnist/) into data_dir on a machine with internet. Fashion-MNIST, offline here: '
  f'`apt-get install dataset-fashion-mnist`, then data_dir={FASHION_MNIST_DIR}. Or use source=digits (no files).'
)

Split = tuple[np.ndarray, np.ndarray]


def idx_path(data_dir: str, stem: str) -> str | None:
  """The file `stem` or `stem.gz` in `data_dir` (the raw one if both: no decompression), or None."""
  for name in (stem, stem + '.gz'):
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  return None


def check_idx_dir(data_dir: str | None, stems: tuple[str, ...], hint: str = IDX_HINT) -> None:
  """Raises ValueError unless `data_dir` is a directory holding every `stem` (raw or `.gz`), naming what is missing."""
  if data_dir is None:
    raise DataError(f'source=idx reads IDX files from a directory: set data_dir (config.data.dir). {hint}')
  if not os.path.isdir(data_dir):
    raise DataError(f'data_dir {data_dir!r} is not a directory. {hint}')
  missing = [s for s in stems if idx_path(data_dir, s) is None]
  if missing:
    names = ', '.join(f'{s}[.gz]' for s in missing)
    raise DataError(f'{data_dir} lacks {len(missing)} IDX file(s): {names}. {hint}')


def read_idx_images(path: str) -> np.ndarray:
  images = idx.read_idx(path, fix=IDX_HINT)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DataError(f'{path}: expected uint8 images [N, H, W], found {images.dtype} {images.shape}. {IDX_HINT}')
  return images


def _read_idx_split(data_dir: str, split: str) -> Split:
  image_stem, label_stem = IDX_FILES[split]
  image_path, label_path = idx_path(data_dir, image_stem), idx_path(data_dir, label_stem)
  images = read_idx_images(image_path)
  labels = idx.read_idx(label_path, fix=IDX_HINT)
  if labels.shape != images.shape[:1]:
    raise DataError(
      f'{label_path}: expected {images.shape[0]:,} labels (one per image in {image_path}), found shape '
      f'{labels.shape}. {IDX_HINT}'
    )
  outside = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
  if len(outside):
    raise DataError(
      f'{label_path}: {len(outside):,} labels lie outside the {NUM_CLASSES} classes 0..{NUM_CLASSES - 1}, the first '
      f'{int(labels[outside[0]])} at index {outside[0]:,}. Is it a labels file of MNIST or Fashion-MNIST? {IDX_HINT}'
    )
  return images, labels.astype(np.int32)


def num_valid_fix(num_train: int) -> str:
  """How to hold out fewer of `num_train` training examples (a tenth, say), naming the config field."""
  if num_train < 2:
    return 'Fix: use a data set with at least 2 training examples.'
  return (
    f'Fix: set the hold-out below {num_train:,}, e.g. --config.data.num_valid={max(1, num_train // 10)} '
    '(config.data.num_valid).'
  )


def holdout(images: np.ndarray, labels: np.ndarray, num_valid: int, where: str) -> tuple[Split, Split]:
  """Splits off the last `num_valid` examples as validation: the TensorFlow MNIST reader's convention."""
  if not 0 < num_valid < len(images):
    raise DataError(
      f'{where} has {len(images):,} training examples, too few to hold out {num_valid:,} for validation. '
      f'{num_valid_fix(len(images))}'
    )
  return (images[:-num_valid], labels[:-num_valid]), (images[-num_valid:], labels[-num_valid:])


def digits_split(num_valid: int = DIGITS_NUM_VALID) -> dict[str, np.ndarray]:
  """Indices into scikit-learn's digits for each split: a fixed permutation, then test, valid, train."""
  if not 0 < num_valid < 1797 - DIGITS_NUM_TEST:
    raise DataError(
      f'digits has {1797 - DIGITS_NUM_TEST:,} non-test images, too few to hold out {num_valid:,}. '
      f'{num_valid_fix(1797 - DIGITS_NUM_TEST)}'
    )
  order = np.random.default_rng(DIGITS_SEED).permutation(1797)
  test, valid = order[:DIGITS_NUM_TEST], order[DIGITS_NUM_TEST : DIGITS_NUM_TEST + num_valid]
  return {'train': order[DIGITS_NUM_TEST + num_valid :], 'valid': valid, 'test': test}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as (images int [1797, 8, 8] with values 0..16, labels int32 [1797]).

  Read from the file scikit-learn ships (a row a digit: 64 pixel values, then the label) without importing
  scikit-learn, whose import costs ~1.8 s of CPU: more than the rest of a smoke run's data loading. Where that file is
  not found (another scikit-learn layout), scikit-learn's own reader is used.
  """
  spec = importlib.util.find_spec('sklearn')  # Finds the package without importing it.
  path = os.path.join(spec.submodule_search_locations[0], 'datasets', 'data', 'digits.csv.gz') if spec else ''
  if os.path.isfile(path):
    rows = np.loadtxt(path, delimiter=',')
    return rows[:, :-1].reshape(-1, 8, 8).astype(np.int64), rows[:, -1].astype(np.int32)
  from sklearn import datasets

  digits = datasets.load_digits()
  return digits.images.astype(np.int64), digits.target.astype(np.int32)


def check_source(source: str, data_dir: str | None = None) -> None:
  """Raises ValueError, naming the fix, unless `load_mnist(source, data_dir)` can find its data. Cheap: no decoding."""
  if source not in SOURCES:
    raise DataError(f'Unknown MNIST source {source!r}; choose one of {", ".join(SOURCES)}.')
  if source == 'idx':
    check_idx_dir(data_dir, IDX_FILES['train'] + IDX_FILES['test'])
  elif source == 'tfds':
    tfds_source.builder('mnist', data_dir, alternative=f'source=idx. {IDX_HINT}')


def load_mnist(source: str, data_dir: str | None = None, *, num_valid: int | None = None) -> dict[str, Split]:
  """Loads labelled digit images split into 'train', 'valid' and 'test'.

  Args:
    source: 'tfds', 'idx' or 'digits' (see the module docstring).
    data_dir: the IDX directory for 'idx'; the TFDS data dir for 'tfds' (None: TFDS's default); unused by 'digits'.
    num_valid: training examples held out for validation; None: the source's standard (5,000; 250 for 'digits').

  Returns:
    {'train' | 'valid' | 'test': (images uint8 [N, H, W], labels int32 [N])}.

  Raises:
    ValueError: unknown source, missing or corrupt files, unprepared TFDS data; the message says how to fix it.
  """
  check_source(source, data_dir)
  if source == 'digits':
    images, labels = load_digits()
    # Exact 0..16 -> 0..255 rescaling, rounded, so that 16 maps to 255 like MNIST's full ink.
    images = np.round(images * (255 / 16)).astype(np.uint8)
    split = digits_split(DIGITS_NUM_VALID if num_valid is None else num_valid)
    return {k: (images[i], labels[i]) for k, i in split.items()}

  num_valid = NUM_VALID if num_valid is None else num_valid
  if source == 'idx':
    train, test = _read_idx_split(data_dir, 'train'), _read_idx_split(data_dir, 'test')
    where = idx_path(data_dir, IDX_FILES['train'][0])
  else:
    train, test = (_read_tfds_split(data_dir, s) for s in ('train', 'test'))
    where = f'TFDS mnist in {data_dir or "the default data dir"}'
  train, valid = holdout(*train, num_valid, where)
  return {'train': train, 'valid': valid, 'test': test}


def _read_tfds_split(data_dir: str | None, split: str) -> Split:
  columns = tfds_source.read_split('mnist', split, data_dir, ('image', 'label'))
  return columns['image'][..., 0].astype(np.uint8), columns['label'].astype(np.int32)
