"""Reads prepared TFDS image data sets as NumPy arrays, without TensorFlow.

TFDS reads `array_record` files through `builder.as_data_source()` with no TensorFlow (images are decoded with PIL).
No machine here reaches the internet, so TFDS can only read data that was prepared elsewhere and copied in; preparing
MNIST runs the TFDS builder, which encodes images with TensorFlow, so it needs a machine with both.
"""

import os

import numpy as np

from experiments.data import DataError

# The decode is per record in Python (PIL); chunks keep the record list small without slowing the read.
_CHUNK = 4096


def prepare_hint(name: str, target: str, alternative: str = '') -> str:
  """How to get a TFDS data set into the data dir `target` for offline reading, then `alternative` (another source)."""
  return (
    f'Prepare it on a machine with internet and TensorFlow: `pip install tensorflow tensorflow-datasets && '
    f'tfds build {name} --file_format=array_record --data_dir=/tmp/tfds`, then copy /tmp/tfds/{name} into '
    f'{target}/ here. (`array_record` matters: TFDS reads the default `tfrecord` format only through TensorFlow.)'
    + (f' Alternatively: {alternative}' if alternative else '')
  )


def builder(name: str, data_dir: str | None, alternative: str = ''):
  """Returns the TFDS builder of a data set prepared in `array_record` format; ValueError (with the fix) if not."""
  try:
    import tensorflow_datasets as tfds  # Imported here: half a second, and only this source needs it.
  except ImportError as e:
    raise DataError(
      f'source=tfds needs tensorflow-datasets (`pip install -r requirements.txt`) to read {name!r}: {e}.'
    ) from e
  from tensorflow_datasets.core import file_adapters

  if data_dir is not None and not _has_dataset_info(os.path.join(data_dir, name)):
    # Said before TFDS builds anything: a builder of a data set that is not there looks for its metadata on Google
    # Cloud Storage (a network call that can hang on an offline cluster) and leaves an empty temporary directory.
    raise _not_prepared(name, f'{os.path.join(data_dir, name)} (no dataset_info.json in it)', data_dir, alternative)
  b = tfds.builder(name, data_dir=data_dir)
  root = os.path.dirname(os.path.dirname(os.fspath(b.data_dir)))  # b.data_dir is ROOT/name/version.
  if not b.is_prepared():
    raise _not_prepared(name, os.fspath(b.data_dir), root, alternative)
  formats = {b.info.file_format, *b.info.available_file_formats()}
  if file_adapters.FileFormat.ARRAY_RECORD not in formats:
    found = ', '.join(sorted(str(f.value) for f in formats if f is not None))
    raise DataError(
      f'TFDS data set {name!r} in {b.data_dir} is stored as {found}, which TFDS reads only with TensorFlow. '
      f'{prepare_hint(name, root, alternative)}'
    )
  return b


def _not_prepared(name: str, where: str, root: str, alternative: str) -> DataError:
  return DataError(
    f'TFDS data set {name!r} is not prepared under {where} and cannot be downloaded here (no internet). '
    f'{prepare_hint(name, root, alternative)}'
  )


def _has_dataset_info(directory: str) -> bool:
  """Whether a prepared TFDS variant (NAME/VERSION, or NAME/CONFIG/VERSION) lies under `directory`."""
  return any('dataset_info.json' in files for _, _, files in os.walk(directory))


def read_split(name: str, split: str, data_dir: str | None, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Reads every example of one split into stacked arrays, one per feature in `keys`, in the stored order."""
  from tensorflow_datasets.core import file_adapters

  b = builder(name, data_dir)
  source = b.as_data_source(split=split, file_format=file_adapters.FileFormat.ARRAY_RECORD)
  if len(source) == 0:
    raise DataError(f'TFDS data set {name!r} has an empty {split!r} split in {b.data_dir}.')
  columns = {k: [] for k in keys}
  for start in range(0, len(source), _CHUNK):
    for example in source.__getitems__(list(range(start, min(start + _CHUNK, len(source))))):
      for k in keys:
        columns[k].append(example[k])
  return {k: np.stack(v) for k, v in columns.items()}
