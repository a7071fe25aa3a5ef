"""Image-caption data for order-embeddings: the authors' COCO layout, or procedural scenes; the training batches.

Sources (`config.data.source`):
  'procedural'  rendered scenes with 5 captions each at 5 levels of detail (`scenes.py`), image features from a fixed
                random convolution (4,096-d, non-negative, unit norm, as VGG fc7 after the authors' normalization).
                Splits of `config.data.num_{train,val,test}` images, each from its own seed.
  'coco'        the layout of Vendrov et al.'s `coco.zip` in `config.data.dir`: `{train,val,test}.txt`, one
                pre-tokenized caption per line, exactly 5 per image in image order (lines 5i..5i+4 are image i's),
                and `images/10crop/{train,val,test}.npy`, float32 [N, 4096] (VGG-19 fc7, 10-crop mean).

Vocabulary as the authors built it: every word of the train and dev (first `dev_images` of val) captions, by
decreasing count from id 2; 0 is end-of-sentence and padding, 1 unknown. Every caption is read with one trailing
end-of-sentence step (the authors' mask covers it).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import numpy as np

from experiments.data import DataError, text
from experiments.order_embeddings import scenes

SOURCES = ('procedural', 'coco')
SPLITS = ('train', 'val', 'test')
CAPTIONS_PER_IMAGE = 5
COCO_HINT = (
  'Download coco.zip from the order-embedding repository (github.com/ivendrov/order-embedding, README: '
  '"Dataset") on a machine with internet and unzip it so that the directory holds train.txt, val.txt, test.txt and '
  'images/10crop/{train,val,test}.npy; offline alternative: source=procedural.'
)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: its captions (5 per image, in image order) and its images' features (and pixels, if rendered)."""

  captions: list[str]
  features: Callable[[np.ndarray], np.ndarray]  # image indices -> float32 [len, 4096]
  num_images: int
  pixels: np.ndarray | None = None  # uint8 [N, 32, 32, 3] for procedural scenes (pictures)


def coco_paths(data_dir: str, split: str) -> tuple[str, str]:
  return os.path.join(data_dir, f'{split}.txt'), os.path.join(data_dir, 'images', '10crop', f'{split}.npy')


def check_source(source: str, data_dir: str | None = None) -> None:
  """Raises DataError, naming the fix, unless `load_splits` can find the data of `source`."""
  if source not in SOURCES:
    raise DataError(f'Unknown image-caption source {source!r}; choose one of {", ".join(SOURCES)}.')
  if source == 'coco':
    if not data_dir:
      raise DataError(f'source=coco reads the order-embedding files from a directory: set config.data.dir. {COCO_HINT}')
    if not os.path.isdir(data_dir):
      raise DataError(f'data dir {data_dir!r} is not a directory. {COCO_HINT}')
    missing = [p for s in SPLITS for p in coco_paths(data_dir, s) if not os.path.isfile(p)]
    if missing:
      raise DataError(f'{data_dir} lacks {len(missing)} file(s): {", ".join(missing)}. {COCO_HINT}')


def read_coco_split(data_dir: str, split: str) -> Split:
  """One split of the order-embedding COCO layout; the features stay memory-mapped.

  Raises:
    DataError: a features file that is not float [N, D] or has a constant (e.g. all-zero) or non-finite row,
      or a captions file without exactly 5 lines per image.
  """
  caption_path, feature_path = coco_paths(data_dir, split)
  try:
    features = np.load(feature_path, mmap_mode='r')
  except (ValueError, OSError) as e:
    raise DataError(f'{feature_path}: not a readable .npy array ({e}). {COCO_HINT}') from None
  if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating) or len(features) == 0:
    raise DataError(f'{feature_path}: expected float image features [N, 4096]; got {features.dtype} {features.shape}.')
  try:
    with open(caption_path, encoding='utf-8') as f:
      captions = [line.strip() for line in f.read().splitlines()]
  except UnicodeDecodeError as e:  # Not text: a binary file, or another split's features under the captions' name.
    raise DataError(
      f'{caption_path}: not UTF-8 text (byte {e.start}: {e.reason}); the captions file holds one caption a line. '
      f'{COCO_HINT}'
    ) from None
  while captions and not captions[-1]:
    captions.pop()
  if len(captions) != CAPTIONS_PER_IMAGE * len(features):
    raise DataError(
      f'{caption_path} has {len(captions)} captions for the {len(features)} images of {feature_path}; the layout '
      f'needs exactly {CAPTIONS_PER_IMAGE} per image ({CAPTIONS_PER_IMAGE * len(features)} lines), lines 5i..5i+4 '
      'describing image i. Fix: regenerate the file with the order-embedding scripts, or check that both files are '
      'of the same split.'
    )
  check_feature_rows(features, feature_path)
  # Fancy indexing a memmap reads only those rows.
  return Split(captions, lambda idx: np.asarray(features[np.asarray(idx)], np.float32), len(features))


def check_feature_rows(features: np.ndarray, path: str, chunk: int = 8192) -> None:
  """DataError unless every image's feature row is finite and not constant (all-zero, say).

  The model scales each image's features to unit length: a zero row divides by zero and the first step is NaN, with
  the cause nowhere in the message. Read in chunks: the features are memory-mapped and may not fit in memory.
  """
  count, first = 0, None
  for start in range(0, len(features), chunk):
    rows = np.asarray(features[start : start + chunk], np.float32)
    bad = ~np.isfinite(rows).all(axis=1) | (rows.max(axis=1) == rows.min(axis=1))
    if first is None and bad.any():
      first = start + int(np.argmax(bad))
    count += int(bad.sum())
  if count:
    raise DataError(
      f'{path}: {count} of {len(features)} image feature rows are constant (e.g. all zeros) or not finite, the first '
      f'row {first}; real CNN features vary within a row. Fix: re-extract the features of those images, or '
      f'regenerate the file. {COCO_HINT}'
    )


@functools.lru_cache(maxsize=4)
def procedural_split(num_images: int, seed: int, encoder_seed: int = 0) -> Split:
  """`num_images` rendered scenes from `seed`, with the fixed random-convolution encoder's features."""
  pixels, captions = scenes.generate(num_images, seed)
  encoder = scenes.RandomConvEncoder(encoder_seed)
  return Split(captions, lambda idx: encoder(pixels[np.asarray(idx)]), num_images, pixels)


def load_splits(data_config) -> dict[str, Split]:
  """{'train' | 'val' | 'test': Split} for `config.data` (see the module docstring)."""
  check_source(data_config.source, data_config.dir)
  if data_config.source == 'coco':
    return {s: read_coco_split(data_config.dir, s) for s in SPLITS}
  sizes = {'train': data_config.num_train, 'val': data_config.num_val, 'test': data_config.num_test}
  return {s: procedural_split(n, seed=data_config.seed * 10 + i + 1) for i, (s, n) in enumerate(sizes.items())}


def vocabulary(splits: dict[str, Split], dev_images: int) -> dict[str, int]:
  """The authors' vocabulary: every word of the train captions and of the dev fold's (the first `dev_images`)."""
  dev = splits['val'].captions[: CAPTIONS_PER_IMAGE * dev_images]
  return text.build_vocabulary([*splits['train'].captions, *dev])


class TrainSource:
  """Training batches as the authors' `datasource.py` draws them: images shuffled per epoch, each image paired
  with one of its 5 captions chosen uniformly at random.

  The loop asks `order(seed, epoch)` for the epoch's sequence of example indices; here each index is a caption
  index (image `i // 5`), so the caption choice is part of the (seed, epoch) order and a resumed run sees the same
  pairs. `len()` is the number of images: an epoch is one pass over the images.
  """

  def __init__(self, split: Split, tokens: list[np.ndarray], pad_multiple: int):
    self.split, self.tokens, self.pad_multiple = split, tokens, pad_multiple

  def __len__(self) -> int:
    return self.split.num_images

  def order(self, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch, 5])
    images = rng.permutation(self.split.num_images)
    return images * CAPTIONS_PER_IMAGE + rng.integers(0, CAPTIONS_PER_IMAGE, size=len(images))

  def batch(self, caption_indices: np.ndarray) -> dict[str, np.ndarray]:
    caption_indices = np.asarray(caption_indices)
    tokens, lengths = text.pad_batch([self.tokens[i] for i in caption_indices], self.pad_multiple, extra=1)
    return {
      'image': self.split.features(caption_indices // CAPTIONS_PER_IMAGE),
      'tokens': tokens,
      'lengths': lengths,
    }
