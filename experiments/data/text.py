"""Text shared by the sentence experiments: tokenizing, frequency vocabularies, corpora as flat token arrays, padding.

A corpus of N sentences is two arrays: `tokens` (int32, every sentence's word ids back to back) and `offsets`
(int64 [N + 1]; sentence i is `tokens[offsets[i]:offsets[i + 1]]`). Both can be `.npy` files opened with
`np.load(path, mmap_mode='r')`, so a paper-scale corpus (BookCorpus: 74M sentences, ~1B words) stays on disk and a
batch reads only its own sentences; nothing is copied once per use (a skip-thought triple is three offsets).

Vocabularies follow the skip-thoughts code (`vocab.py`): words sorted by decreasing frequency (ties: alphabetical,
so that a vocabulary is a function of the corpus alone), ids from 2, 0 = EOS (also the padding id), 1 = UNK.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

EOS, UNK = 0, 1
RESERVED = ('<eos>', '<unk>')
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
  """Lower-cased words, numbers and single punctuation marks (a stand-in for NLTK's word_tokenize, offline)."""
  return _TOKEN.findall(text.lower())


def build_vocab(sentences: Iterable[Sequence[str]], max_words: int) -> list[str]:
  """The `max_words` entries of the vocabulary (RESERVED first, then the most frequent words).

  Args:
    sentences: tokenized sentences (any iterable: it is read once).
    max_words: the vocabulary size including EOS and UNK (the authors' `n_words`, 20,000 at paper scale).
  """
  counts = collections.Counter()
  for words in sentences:
    counts.update(words)
  for word in RESERVED:
    counts.pop(word, None)
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return list(RESERVED) + [w for w, _ in ranked[: max(0, max_words - len(RESERVED))]]


def word_ids(vocab: Sequence[str]) -> dict[str, int]:
  return {w: i for i, w in enumerate(vocab)}


def encode(words: Sequence[str], ids: dict[str, int]) -> np.ndarray:
  """int32 ids of `words`, UNK for words outside the vocabulary."""
  return np.fromiter((ids.get(w, UNK) for w in words), np.int32, len(words))


def flatten(sentences: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, offsets) of encoded sentences (see the module docstring)."""
  sentences = list(sentences)
  lengths = np.array([len(s) for s in sentences], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  tokens = np.concatenate(sentences).astype(np.int32) if sentences else np.zeros(0, np.int32)
  return tokens, offsets


def bucket(length: int, multiple: int) -> int:
  """`length` rounded up to a multiple of `multiple` (>= multiple): a few padded shapes, so a few compilations."""
  return max(multiple, -(-length // multiple) * multiple)


def pad_sentences(
  tokens: np.ndarray, offsets: np.ndarray, indices: np.ndarray, length: int, *, add_eos: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  """Sentences `indices` of a corpus as ids [B, length] (EOS-padded) and their lengths [B] (incl. the EOS step).

  With `add_eos` each sentence gets one EOS step covered by its length, as the skip-thoughts iterator does; the
  padding is EOS too but lies past the length, so masks built from the lengths exclude it.
  """
  ids = np.full((len(indices), length), EOS, np.int32)
  lengths = np.zeros(len(indices), np.int32)
  for row, i in enumerate(np.asarray(indices)):
    words = np.asarray(tokens[offsets[i] : offsets[i + 1]])
    n = len(words) + int(add_eos)
    if n > length:
      raise ValueError(f'Sentence {i} has {n} steps, more than the padded length {length}.')
    ids[row, : len(words)] = words
    lengths[row] = n
  return ids, lengths


def length_grouped_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
  """A permutation of the examples in which each run of `batch_size` shares one length, as far as possible.

  The skip-thoughts iterator (`homogeneous_data.py`): examples grouped by exact length, shuffled inside a group, the
  groups' full batches visited in random order. Each group's remainder (< batch_size) goes to the end, where the
  loop's batches mix lengths (padded and masked) or are dropped with the epoch's last partial batch.
  """
  full, rest = [], []
  for length in np.unique(lengths):
    group = rng.permutation(np.flatnonzero(lengths == length))
    cut = len(group) - len(group) % batch_size
    full.extend(np.split(group[:cut], cut // batch_size) if cut else [])
    rest.append(group[cut:])
  batches = [full[i] for i in rng.permutation(len(full))]
  return np.concatenate(batches + rest).astype(np.int64) if (batches or rest) else np.zeros(0, np.int64)


# The order-embedding code's form of the same conventions: space-separated pre-tokenized captions and a {word: id}
# map (what its data files hold), and batches padded from lists of id arrays.


def build_vocabulary(sentences: Iterable[str], max_words: int | None = None) -> dict[str, int]:
  """{word: id} over every token of `sentences` (ids 2, 3, ... by decreasing count); `max_words` keeps the first.

  `build_vocab` over space-split sentences, as a map without the reserved entries.
  """
  sentences = list(sentences)
  limit = sum(len(s.split()) for s in sentences) if max_words is None else max_words  # None: every word.
  ids = word_ids(build_vocab((s.split() for s in sentences), limit + len(RESERVED)))
  return {w: i for w, i in ids.items() if w not in RESERVED}


def encode_sentences(sentences: Sequence[str], vocab: Mapping[str, int]) -> list[np.ndarray]:
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
