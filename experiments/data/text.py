"""Word vocabularies and padded token batches, as the authors' Theano code bases built them.

Ids: 0 is the end-of-sentence / padding token, 1 the unknown word, words from 2 on in order of decreasing frequency
(ties in alphabetical order, so the vocabulary is a function of the corpus alone). Sentences are pre-tokenized:
lower-cased words split on single spaces.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

EOS = 0
UNK = 1


def build_vocabulary(sentences: Iterable[str], max_words: int | None = None) -> dict[str, int]:
  """{word: id} over every token of `sentences` (ids 2, 3, ... by decreasing count); `max_words` keeps the first."""
  counts = collections.Counter(word for sentence in sentences for word in sentence.split())
  words = sorted(counts, key=lambda w: (-counts[w], w))
  if max_words is not None:
    words = words[:max_words]
  return {w: i + 2 for i, w in enumerate(words)}


def encode(sentences: Sequence[str], vocab: Mapping[str, int]) -> list[np.ndarray]:
  """Each sentence as an int32 array of word ids (UNK for words outside `vocab`), without the EOS step."""
  return [np.array([vocab.get(w, UNK) for w in s.split()], np.int32) for s in sentences]


def pad_batch(sequences: Sequence[np.ndarray], multiple: int = 1, extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token sequences with EOS (0) into [B, T]; T = the longest + `extra`, rounded up to `multiple`.

  Rounding the padded length to a multiple bounds the number of distinct batch shapes (each a jit compile).

  Returns:
    (tokens [B, T] int32, lengths [B] int32: each sequence's length + `extra`, the steps an encoder must read).
  """
  lengths = np.array([len(s) for s in sequences], np.int32) + extra
  width = int(lengths.max(initial=1))
  width = -(-width // multiple) * multiple
  tokens = np.zeros((len(sequences), width), np.int32)
  for i, s in enumerate(sequences):
    tokens[i, : len(s)] = s
  return tokens, lengths
