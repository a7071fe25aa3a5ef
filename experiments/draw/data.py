"""Binarized MNIST for DRAW (paper section 6.4, Figure 4): images of 0/1 pixels, no labels.

Sources (`config.data.source`):
  'amat':   the paper's data, Larochelle & Murray's fixed binarization: `binarized_mnist_{train,valid,test}.amat` in
            `data_dir`, plain text, one image per line, 784 space-separated 0/1 values (row-major 28x28).
            50,000 / 10,000 / 10,000.
  'tfds':   the same data through TFDS (`binarized_mnist`, prepared in `array_record` format), read without TensorFlow;
            TFDS's train / validation / test splits.
  'idx':    MNIST-format images (e.g. Fashion-MNIST, offline here: `apt-get install dataset-fashion-mnist`) binarized
            by a fixed threshold, pixel >= 128 -> 1 (intensity >= 0.5). Train = the first 50,000 training images,
            valid = the last 10,000, test = the 10,000 test images: the paper's split sizes.
  'digits': scikit-learn's bundled digits at their 8x8 resolution, value >= 8 -> 1 (intensity >= 0.5 of 16), split as
            in `experiments.data.mnist`: a permutation seeded with 0, then 250 test, 250 valid, 1,297 train.

Every split is a uint8 array of 0s and 1s, [N, H, W].
"""

import os

import numpy as np

from experiments.data import DataError, mnist, tfds_source

SOURCES = ('amat', 'tfds', 'idx', 'digits')
AMAT_FILES = {s: f'binarized_mnist_{s}.amat' for s in ('train', 'valid', 'test')}
AMAT_URL = 'http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/'
AMAT_HINT = (
  '`python -m scripts.get_data binarized_mnist` writes the three files (or, where that host is unreachable, a fixed '
  "binarization of real MNIST in their layout) to the `real` variant's directory; or download them from "
  f'{AMAT_URL} and copy them into data_dir; other '
  'alternatives: source=idx with data_dir=/usr/share/datasets/fashion-mnist (`apt-get install dataset-fashion-mnist`), '
  'or source=digits.'
)
FIXED_SPLIT_SOURCES = ('amat', 'tfds')
IDX_NUM_VALID = 10_000  # The paper's 50k/10k/10k split sizes.
IDX_THRESHOLD = 128  # pixel >= 128, i.e. intensity >= 0.5, is a 1.
DIGITS_THRESHOLD = 8  # value >= 8 of 16, the same 0.5 intensity threshold.
_SIDE = 28
_PIXELS = _SIDE * _SIDE
_LINE_BYTES = 2 * _PIXELS - 1  # '0 1 0 ... 1': one character per pixel, one space between.


def _parse_amat_lines(path: str, lines: list[bytes]) -> np.ndarray:
  """General parser (any whitespace); slow, so it runs only when the fast path fails, and names the bad line."""
  images = np.empty((len(lines), _PIXELS), np.uint8)
  for i, line in enumerate(lines):
    values = line.split()
    if len(values) != _PIXELS:
      raise DataError(
        f'{path}, line {i + 1}: expected {_PIXELS} space-separated 0/1 values, found {len(values)}. {AMAT_HINT}'
      )
    for j, v in enumerate(values):
      if v not in (b'0', b'1'):
        raise DataError(
          f'{path}, line {i + 1}: value {j + 1} is {v.decode(errors="replace")!r}, expected 0 or 1. {AMAT_HINT}'
        )
    images[i] = np.array(values, np.uint8)
  return images


def read_amat(path: str) -> np.ndarray:
  """Reads one `.amat` file of binarized MNIST into uint8 0/1 images [N, 28, 28].

  Raises:
    ValueError: a line without exactly 784 values, or a value other than 0 or 1; names the file and the line.
  """
  with open(path, 'rb') as f:
    lines = [line.rstrip() for line in f.read().splitlines()]
  while lines and not lines[-1]:
    lines.pop()
  if not lines:
    raise DataError(f'{path}: no images (empty file). {AMAT_HINT}')
  # Fast path for the published layout, a fixed-width line of '0'/'1' and single spaces: ~50x faster than splitting.
  if all(len(line) == _LINE_BYTES for line in lines):
    chars = np.frombuffer(b''.join(lines), np.uint8).reshape(len(lines), _LINE_BYTES)
    pixels, spaces = chars[:, ::2] - ord('0'), chars[:, 1::2]
    if (pixels <= 1).all() and (spaces == ord(' ')).all():
      return pixels.reshape(-1, _SIDE, _SIDE)
  return _parse_amat_lines(path, lines).reshape(-1, _SIDE, _SIDE)


def check_source(source: str, data_dir: str | None = None) -> None:
  """Raises ValueError, naming the fix, unless `load_binarized_mnist(source, data_dir)` can find its data."""
  if source not in SOURCES:
    raise DataError(f'Unknown binarized MNIST source {source!r}; choose one of {", ".join(SOURCES)}.')
  if source == 'amat':
    if data_dir is None:
      raise DataError(f'source=amat reads .amat files from a directory: set data_dir (config.data.dir). {AMAT_HINT}')
    if not os.path.isdir(data_dir):
      raise DataError(f'data_dir {data_dir!r} is not a directory. {AMAT_HINT}')
    missing = [n for n in AMAT_FILES.values() if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
      raise DataError(f'{data_dir} lacks {len(missing)} file(s): {", ".join(missing)}. {AMAT_HINT}')
  elif source == 'idx':
    mnist.check_idx_dir(data_dir, (mnist.IDX_FILES['train'][0], mnist.IDX_FILES['test'][0]))
  elif source == 'tfds':
    tfds_source.builder('binarized_mnist', data_dir, alternative=f'source=amat. {AMAT_HINT}')


def load_binarized_mnist(
  source: str, data_dir: str | None = None, *, num_valid: int | None = None
) -> dict[str, np.ndarray]:
  """Loads binarized digit images split into 'train', 'valid' and 'test'.

  Args:
    source: 'amat', 'tfds', 'idx' or 'digits' (see the module docstring).
    data_dir: the directory of the .amat or IDX files, or the TFDS data dir (None: TFDS's default); unused by 'digits'.
    num_valid: for 'idx' and 'digits', training images held out for validation (None: 10,000 and 250). 'amat' and
      'tfds' come with fixed splits.

  Returns:
    {'train' | 'valid' | 'test': uint8 array of 0/1, [N, H, W]}.

  Raises:
    ValueError: unknown source, missing or malformed files, unprepared TFDS data; the message says how to fix it.
  """
  check_source(source, data_dir)
  if num_valid is not None and source in FIXED_SPLIT_SOURCES:
    raise DataError(f'source={source} has fixed train/valid/test splits; leave num_valid unset.')
  if source == 'amat':
    return {s: read_amat(os.path.join(data_dir, n)) for s, n in AMAT_FILES.items()}
  if source == 'tfds':
    splits = {'train': 'train', 'valid': 'validation', 'test': 'test'}
    columns = {s: tfds_source.read_split('binarized_mnist', t, data_dir, ('image',)) for s, t in splits.items()}
    return {s: c['image'][..., 0].astype(np.uint8) for s, c in columns.items()}
  if source == 'idx':
    train_path = mnist.idx_path(data_dir, mnist.IDX_FILES['train'][0])
    test_path = mnist.idx_path(data_dir, mnist.IDX_FILES['test'][0])
    train, test = mnist.read_idx_images(train_path), mnist.read_idx_images(test_path)
    num_valid = IDX_NUM_VALID if num_valid is None else num_valid
    (train, _), (valid, _) = mnist.holdout(train, np.zeros(len(train)), num_valid, train_path)
    return {s: (x >= IDX_THRESHOLD).astype(np.uint8) for s, x in (('train', train), ('valid', valid), ('test', test))}
  images, _ = mnist.load_digits()
  split = mnist.digits_split(mnist.DIGITS_NUM_VALID if num_valid is None else num_valid)
  return {s: (images[i] >= DIGITS_THRESHOLD).astype(np.uint8) for s, i in split.items()}
