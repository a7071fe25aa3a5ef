"""Handwriting data: the internal line format, the alphabet, offsets and their normalization, and the two sources.

Every source yields lines as (points, text): absolute pen positions float32 [N, 3] = (x, y up, end_of_stroke), the
bit 1 on the last point of each stroke. `encode_split` turns them into the arrays the model reads, as Graves (2013)
does: each point becomes its offset from the previous one (the first point's offset is 0), offsets are normalized to
mean 0 and standard deviation 1 per coordinate with statistics of the training set only, and the text becomes indices
into a 57-symbol alphabet.

  source=hershey (default)  lines of random English words rendered from the Hershey stroke fonts by 80 writers
                            (slant, size, spacing, jitter, speed, joins, baseline drift); valid and test lines come
                            from other writers than the training lines. Deterministic in `config.data.seed`.
  source=iam                the IAM On-Line Handwriting Database under config.data.dir (experiments/handwriting/iam.py).

Sequences longer than `seq_len` points are cut to their first `seq_len` points (the text is kept whole: the window
has seen a prefix of it when the sequence ends). Hershey lines are generated to fit, so this only touches IAM.
"""

from __future__ import annotations

import numpy as np

from experiments.data import DataError
from experiments.handwriting import hershey, iam

SOURCES = ('hershey', 'iam')
# Graves (2013) used 57 of IAM's 80 symbols. Ours: 0 = any other character (digits, rare punctuation), space,
# a-z, A-Z, and three punctuation marks: 1 + 1 + 52 + 3 = 57.
ALPHABET = "\0 abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,'"
assert len(ALPHABET) == 57

# About 200 common English words: the embedded corpus. Sentences drawn from them, in random order.
WORDS = """the of and to in is was he for it with as his on be at by had are but from or have an they which one you
were her all she there would their we him been has when who will more no if out so said what up its about into than
them can only other new some could time these two may then do first any my now such like our over man me even most
made after also did many before must through back years where much your way well down should because each just those
people how too little state good very make world still own see men work long get here between both life being under
never day same another know while last might us great old year off come since against go came right used take three
states himself few house use during without again place around however home small found thought went say part once
general high upon school every does got united left number course war until always away something fact though water
less public put think almost hand enough far took head yet government system better set told nothing night end why
called didn't eyes find going look asked later knew point next program city business give group toward young days let
room president side social given present several order national possible rather second face per among form important
often things looking early white case John become large big need four within felt along children saw best church ever
least power development light thing seemed family interest want members mind country area others done turned although
open God service certain kind problem began different door thus help sense means whole matter perhaps itself York it's
times law human line above name example action company hands local show whether five history gave today either act
feet across taken past quite anything having seen death experience body word half really week Mr. small, said. night,
""".split()  # noqa: SIM905 (a word list reads better as text)
HELD_OUT_TEXT = 'layer norm writes'  # Sample text for pictures: 'layer', 'norm' and 'writes' are not in WORDS.


def encode_text(text: str) -> np.ndarray:
  """Indices into ALPHABET (0 for any character outside it)."""
  index = {c: i for i, c in enumerate(ALPHABET)}
  return np.array([index.get(c, 0) for c in text], np.int32)


def to_offsets(points: np.ndarray) -> np.ndarray:
  """Absolute (x, y, eos) -> (dx, dy, eos), the first point's offset 0."""
  offsets = points.copy()
  offsets[1:, :2] = points[1:, :2] - points[:-1, :2]
  offsets[0, :2] = 0.0
  return offsets


def offset_statistics(lines: list[tuple[np.ndarray, str]], seq_len: int) -> tuple[list[float], list[float]]:
  """Mean and standard deviation of (dx, dy) over the points a model sees of `lines` (the first `seq_len`)."""
  offsets = np.concatenate([to_offsets(p)[:seq_len, :2] for p, _ in lines]).astype(np.float64)
  std = offsets.std(axis=0)
  return offsets.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()


def encode_split(lines, seq_len: int, max_chars: int, mean, std) -> dict[str, np.ndarray]:
  """The arrays of one split, padded with zeros to `seq_len` points and `max_chars` characters.

  Returns:
    {'points': float32 [N, seq_len, 3] normalized offsets, 'length': int32 [N] points,
     'chars': int32 [N, max_chars] alphabet indices, 'text_length': int32 [N]}.
  """
  n = len(lines)
  out = {
    'points': np.zeros((n, seq_len, 3), np.float32),
    'length': np.zeros(n, np.int32),
    'chars': np.zeros((n, max_chars), np.int32),
    'text_length': np.zeros(n, np.int32),
  }
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  for i, (points, text) in enumerate(lines):
    offsets = to_offsets(points)[:seq_len]
    offsets[:, :2] = (offsets[:, :2] - mean) / std
    out['points'][i, : len(offsets)] = offsets
    out['length'][i] = len(offsets)
    chars = encode_text(text)[:max_chars]
    out['chars'][i, : len(chars)] = chars
    out['text_length'][i] = len(chars)
  return out


def decode_points(points_Tx3: np.ndarray, mean, std) -> np.ndarray:
  """Normalized offsets -> absolute (x, y, eos), starting at the origin: the inverse of `encode_split`'s points."""
  out = np.asarray(points_Tx3, np.float64).copy()
  out[:, :2] = out[:, :2] * np.asarray(std) + np.asarray(mean)
  out[:, :2] = np.cumsum(out[:, :2], axis=0)
  return out


def random_text(rng: np.random.Generator, max_chars: int) -> str:
  """Words of WORDS, in random order, up to a length drawn from [max_chars / 2, max_chars] (at least one word)."""
  target = int(rng.integers(max(1, max_chars // 2), max_chars + 1))
  words = [WORDS[rng.integers(len(WORDS))]]
  while True:
    word = WORDS[rng.integers(len(WORDS))]
    if len(' '.join(words)) + 1 + len(word) > target:
      return ' '.join(words)
    words.append(word)


def hershey_lines(
  num_lines: int, writers: list[hershey.Writer], fonts: dict, seq_len: int, max_chars: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, str]]:
  """`num_lines` lines by writers taken in turn; words are dropped from a line's end until it fits in `seq_len`."""
  lines = []
  for i in range(num_lines):
    writer = writers[i % len(writers)]
    words = random_text(rng, max_chars).split(' ')
    while True:
      points = hershey.render_line(' '.join(words), fonts[writer.font], writer, rng)
      if len(points) <= seq_len or len(words) == 1:
        break
      words = words[:-1]
    lines.append((points[:seq_len], ' '.join(words)))
  return lines


def load_hershey(data_config) -> dict[str, list[tuple[np.ndarray, str]]]:
  """{'train' | 'valid' | 'test': [(points, text)]}: training writers for train, held-out writers for the others."""
  names = tuple(data_config.fonts.split(','))
  hershey.check_fonts(names, data_config.dir)
  fonts = {n: hershey.parse_jhf(hershey.font_path(n, data_config.dir)) for n in names}
  rng = np.random.default_rng(data_config.seed)
  writers = [hershey.random_writer(rng, names) for _ in range(data_config.num_writers)]
  num_train_writers = max(1, round(0.8 * len(writers)))
  train_writers, other_writers = writers[:num_train_writers], writers[num_train_writers:] or writers
  args = dict(fonts=fonts, seq_len=data_config.seq_len, max_chars=data_config.max_chars, rng=rng)
  return {
    'train': hershey_lines(data_config.num_train, train_writers, **args),
    'valid': hershey_lines(data_config.num_valid, other_writers, **args),
    'test': hershey_lines(data_config.num_test, other_writers[::-1], **args),
  }


def check_source(source: str, data_dir: str | None, fonts: str = 'cursive') -> None:
  """Raises DataError, naming the fix, unless `source` can find its data."""
  if source not in SOURCES:
    raise DataError(f'unknown handwriting source {source!r}; choose one of {", ".join(SOURCES)}.')
  if source == 'iam':
    iam.check_iam_dir(data_dir)
  else:
    hershey.check_fonts(tuple(fonts.split(',')), data_dir)


def load_splits(data_config) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """The encoded splits of `config.data` and the statistics the model needs without the data (for task.json)."""
  if data_config.source == 'iam':
    lines = iam.load_iam(data_config.dir, data_config.max_step)
  else:
    lines = load_hershey(data_config)
  mean, std = offset_statistics(lines['train'], data_config.seq_len)
  splits = {k: encode_split(v, data_config.seq_len, data_config.max_chars, mean, std) for k, v in lines.items()}
  metadata = {'alphabet': ALPHABET, 'offset_mean': mean, 'offset_std': std, 'seq_len': data_config.seq_len}
  return splits, metadata
