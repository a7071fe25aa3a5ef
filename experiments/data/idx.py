"""Reader for IDX files, the format MNIST and Fashion-MNIST are published in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions), one big-endian uint32
per dimension, then the data in C order, big-endian. The files are often distributed gzipped.
"""

import os
import zlib

import numpy as np

from experiments.data import DataError

# IDX dtype codes (from the format's definition on the MNIST page).
_DTYPES = {
  0x08: np.dtype('>u1'),
  0x09: np.dtype('>i1'),
  0x0B: np.dtype('>i2'),
  0x0C: np.dtype('>i4'),
  0x0D: np.dtype('>f4'),
  0x0E: np.dtype('>f8'),
}
_GZIP_MAGIC = b'\x1f\x8b'
DEFAULT_FIX = (
  'Get a fresh copy: MNIST with `python -m scripts.get_data mnist` (checked against the published checksums) or '
  'from https://storage.googleapis.com/cvdf-datasets/mnist/ (a mirror of '
  'http://yann.lecun.com/exdb/mnist/), Fashion-MNIST with `apt-get install --reinstall dataset-fashion-mnist` '
  '(files in /usr/share/datasets/fashion-mnist/).'
)


def _gunzip(path: str, raw: bytes) -> tuple[bytes, bool]:
  """Decompresses all gzip members of `raw`; returns (data, complete) so a truncated file can report its size."""
  chunks = []
  while raw:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
      chunks.append(decompressor.decompress(raw))
    except zlib.error as e:
      raise DataError(f'{path}: corrupt gzip data ({e}).') from e
    if not decompressor.eof:
      return b''.join(chunks), False
    raw = decompressor.unused_data.lstrip(b'\0')  # Some writers pad after the last member.
  return b''.join(chunks), True


def read_idx(path: str | os.PathLike, *, fix: str = DEFAULT_FIX) -> np.ndarray:
  """Reads an IDX file, raw or gzipped, into a native-endian array.

  Whether the file is gzipped is decided from its first bytes, not its name: browsers often decompress `.gz` files
  on download and keep the name.

  Args:
    path: the file.
    fix: how to get a good copy, appended to error messages.

  Returns:
    An array with the file's dtype (uint8 for MNIST) and shape.

  Raises:
    ValueError: the file is truncated, has trailing bytes, a bad magic number or corrupt gzip data. The message names
      the file, the expected and found sizes, and `fix`.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    raw = f.read()
  complete = True
  try:
    if raw[:2] == _GZIP_MAGIC:
      data, complete = _gunzip(path, raw)
    else:
      data = raw
    if len(data) < 4:
      raise DataError(f'{path}: not an IDX file: expected at least a 4-byte header, found {len(data)} bytes.')
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or data[3] == 0:
      raise DataError(
        f'{path}: not an IDX file: bad magic number 0x{data[:4].hex()} (expected 0x0000 then a dtype code in '
        f'{{{", ".join(f"0x{c:02x}" for c in _DTYPES)}}} and a non-zero number of dimensions).'
      )
    dtype, ndim = _DTYPES[data[2]], data[3]
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
      raise DataError(
        f'{path}: truncated IDX header: expected {header_bytes} bytes for {ndim} dimensions, found {len(data)}.'
      )
    shape = tuple(int(d) for d in np.frombuffer(data, '>u4', count=ndim, offset=4))
    expected = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected or not complete:
      what = 'truncated' if len(data) < expected or not complete else 'has trailing bytes'
      gz = '' if complete else ' (the gzip stream ends early)'
      raise DataError(
        f'{path}: IDX file {what}{gz}: its header says shape {shape} of {dtype.name}, so expected {expected:,} '
        f'bytes, found {len(data):,}.'
      )
  except ValueError as e:
    raise DataError(f'{e} {fix}') from None
  return np.frombuffer(data, dtype, offset=header_bytes).reshape(shape).astype(dtype.newbyteorder('='))
