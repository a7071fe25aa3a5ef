"""Skip-thought training data: a corpus of consecutive sentences and the (previous, centre, next) triples in it.

Sources (`config.data.source`):
  procedural  short generated stories (`experiments.skip_thoughts.procedural`): neighbouring sentences predict each
              other through the story's character, place, object and mood. Needs nothing.
  text        a directory of `*.txt` files read in sorted order, one tokenized sentence per line in reading order
              (BookCorpus as the authors used it). Read twice, streaming: once to count words (the vocabulary),
              once to write the word ids into `<config.data.cache_dir>/{tokens,offsets}.npy`, then memory-mapped,
              so the corpus is never held in memory (let alone three times, once per role in a triple).

Triples follow the authors' `homogeneous_data.py`: the corpus shifted by one sentence each way (book boundaries are
not special), a triple dropped if any of its sentences has >= `max_len` words, batches of one centre length.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from experiments.data import DataError
from experiments.data import text as text_lib

SOURCES = ('procedural', 'text')
ROLES = ('prev', 'centre', 'next')


def check_source(source: str, data_dir: str | None) -> None:
  """Raises ValueError naming the fix if `source`/`data_dir` cannot work (`validate`'s data check)."""
  if source not in SOURCES:
    raise ValueError(f'unknown source; use one of {", ".join(SOURCES)} (e.g. --config.data.source=procedural).')
  if source == 'text':
    if not data_dir:
      raise ValueError('source=text reads *.txt files from a directory. Fix: --config.data.dir=DIR.')
    directory = os.path.expanduser(os.path.expandvars(data_dir))
    if not text_files(directory):
      raise ValueError(
        f'no *.txt files in {directory}. Fix: a directory of *.txt files, one tokenized sentence per line (e.g. '
        'BookCorpus), or --config.data.source=procedural.'
      )


def text_files(directory: str) -> list[str]:
  return sorted(glob.glob(os.path.join(directory, '*.txt')))


NOT_TEXT = 0.1  # A line with more than this fraction of NUL bytes or undecodable characters is not text.


def _lines(paths: list[str]):
  for path in paths:
    try:
      with open(path, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, 1):
          if (line.count('\0') + line.count('\ufffd')) > NOT_TEXT * len(line):
            raise DataError(
              f'{path}, line {number}: not UTF-8 text ({line.count(chr(0))} NUL bytes, {line.count(chr(0xFFFD))} '
              'undecodable). Fix: tokenized sentences, one per line (`python -m scripts.get_data text` writes a '
              'checked corpus), or move the file out of the corpus directory.'
            )
          words = line.split()
          if words:
            yield words
    except OSError as e:
      raise DataError(f'Cannot read {path}: {e.strerror}. Fix: a readable corpus directory.') from None


def read_text_corpus(directory: str, vocab_size: int, cache_dir: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(tokens, offsets, vocab) of a directory of one-sentence-per-line files, streamed into memory-mapped .npy files.

  The lines are split on whitespace (the files are already tokenized) and lower-cased by nobody: the vocabulary is
  the files' own words, as the authors' `vocab.py` builds it.
  """
  paths = text_files(os.path.expanduser(os.path.expandvars(directory)))
  num_tokens = num_sentences = 0

  def counted():
    nonlocal num_tokens, num_sentences
    for words in _lines(paths):
      num_tokens += len(words)
      num_sentences += 1
      yield words

  vocab = text_lib.build_vocab(counted(), vocab_size)
  if num_sentences < 3:
    raise DataError(f'{directory} holds {num_sentences} sentences; a triple needs 3. Fix: a larger corpus.')
  ids = text_lib.word_ids(vocab)
  os.makedirs(cache_dir, exist_ok=True)
  tokens = np.lib.format.open_memmap(os.path.join(cache_dir, 'tokens.npy'), 'w+', np.int32, (num_tokens,))
  offsets = np.lib.format.open_memmap(os.path.join(cache_dir, 'offsets.npy'), 'w+', np.int64, (num_sentences + 1,))
  position, offsets[0] = 0, 0
  for i, words in enumerate(_lines(paths)):
    tokens[position : position + len(words)] = text_lib.encode(words, ids)
    position += len(words)
    offsets[i + 1] = position
  tokens.flush(), offsets.flush()
  del tokens, offsets
  load = lambda name: np.load(os.path.join(cache_dir, name), mmap_mode='r')
  return load('tokens.npy'), load('offsets.npy'), vocab


def valid_centres(offsets: np.ndarray, max_len: int, first: int = 0, last: int | None = None) -> np.ndarray:
  """Indices i in [first + 1, last - 1) whose sentences i - 1, i, i + 1 all have fewer than `max_len` words."""
  lengths = np.diff(np.asarray(offsets))
  last = len(lengths) if last is None else last
  i = np.arange(first + 1, last - 1)
  short = lengths < max_len
  keep = short[i - 1] & short[i] & short[i + 1] & (lengths[i] > 0)
  return i[keep]


class TripleSource:
  """The loop's `Source` of skip-thought triples in one corpus (tokens and offsets may be memory-mapped).

  `batch(indices)` gives, for each role in ROLES, ids [B, T] (EOS-padded) and lengths `<role>_len` [B] counting the
  one EOS step each sentence gets; all three roles share one T, rounded up to a multiple of `pad_multiple`, so that
  a run compiles a handful of shapes rather than one per length triple.
  """

  def __init__(self, tokens, offsets, centres: np.ndarray, batch_size: int, pad_multiple: int = 8):
    self.tokens, self.offsets, self.centres = tokens, np.asarray(offsets), np.asarray(centres, np.int64)
    self.batch_size, self.pad_multiple = batch_size, pad_multiple
    self.centre_lengths = np.diff(self.offsets)[self.centres]

  def __len__(self) -> int:
    return len(self.centres)

  def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    centre = self.centres[np.asarray(indices)]
    rows = {'prev': centre - 1, 'centre': centre, 'next': centre + 1}
    lengths = np.diff(self.offsets)
    longest = max(int(lengths[r].max()) for r in rows.values()) + 1  # + the EOS step.
    length = text_lib.bucket(longest, self.pad_multiple)
    out = {}
    for role, sentence in rows.items():
      out[role], out[f'{role}_len'] = text_lib.pad_sentences(self.tokens, self.offsets, sentence, length)
    return out

  def order(self, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch, 7])
    return text_lib.length_grouped_order(self.centre_lengths, self.batch_size, rng)
