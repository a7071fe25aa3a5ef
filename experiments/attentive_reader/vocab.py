"""The attentive reader's token sequences: its vocabulary (ids NIL=0, EOS=1, UNK=2), ragged storage, padding.

Kept apart from `experiments.data.text` because the reader code numbers its dictionary differently (there 0 is EOS
and padding, 1 UNK); the flat-array-plus-offsets storage is the same idea as that module's corpora.

A corpus of variable-length token sequences is stored as one flat int32 array plus offsets (`Ragged`), so that a
batch is padded only to its own longest sequence and a paper-scale corpus costs one array, not a million lists.
Id 0 is padding everywhere: the loop zero-pads the batches of one dispatch to a common shape, and models read the
lengths (or `tokens != 0`) as their mask.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import numpy as np

PAD, EOS, UNK = '<pad>', '<eos>', '<unk>'
RESERVED = (PAD, EOS, UNK)  # Ids 0, 1, 2, as in the attentive reader's dictionaries (NIL=0, EOS=1, UNK=2).


class Ragged:
  """Variable-length int32 sequences, stored flat: sequence i is `tokens[offsets[i]:offsets[i + 1]]`."""

  def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
    self.tokens = np.asarray(tokens, np.int32)
    self.offsets = np.asarray(offsets, np.int64)
    if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens):
      raise ValueError(f'Ragged offsets must run from 0 to {len(self.tokens)}; got {self.offsets[[0, -1]]}.')

  @classmethod
  def from_lists(cls, sequences: Sequence[Sequence[int]]) -> Ragged:
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for s in sequences for t in s), np.int32, int(offsets[-1]))
    return cls(flat, offsets)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets).astype(np.int32)

  def __getitem__(self, i: int) -> np.ndarray:
    return self.tokens[self.offsets[i] : self.offsets[i + 1]]

  def padded(self, indices: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sequences `indices` zero-padded to `length` (None: the longest of them, at least 1).

    Returns (tokens [B, T] int32, lengths [B] int32).
    """
    lengths = self.lengths[indices]
    longest = int(lengths.max(initial=0))
    if length is not None and length < longest:
      raise ValueError(f'padded(length={length}) is shorter than the longest sequence ({longest}).')
    out = np.zeros((len(indices), max(longest, 1) if length is None else length), np.int32)
    for row, i in enumerate(indices):
      seq = self[i]
      out[row, : len(seq)] = seq
    return out, lengths


def count_words(sequences: Iterable[Iterable[str]]) -> collections.Counter:
  counts = collections.Counter()
  for words in sequences:
    counts.update(words)
  return counts


def build_vocabulary(counts: collections.Counter, *, min_count: int = 2, always: Iterable[str] = ()) -> list[str]:
  """Words by decreasing count (ties alphabetical) after the reserved tokens, keeping those seen `min_count` times.

  `always` (e.g. entity markers) is kept whatever its count, so no answer becomes <unk>.
  """
  always = set(always)
  keep = [w for w, n in counts.items() if (n >= min_count or w in always) and w not in RESERVED]
  keep += sorted(always - set(keep) - set(RESERVED))
  keep.sort(key=lambda w: (-counts.get(w, 0), w))
  return [*RESERVED, *keep]


def encode(words: Iterable[str], index: dict[str, int]) -> list[int]:
  unk = index[UNK]
  return [index.get(w, unk) for w in words]
