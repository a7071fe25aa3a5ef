"""Lines of text rendered as pen trajectories from Hershey stroke fonts, with per-writer variation.

The fonts (`.jhf` files) come from `python -m scripts.get_data hershey` (into ~/.cache/layernorm/data/hershey), or
from Debian's `hershey-fonts-data` package where it is installed (`/usr/share/hershey-fonts/`). A `.jhf` file holds
one glyph per record, ASCII 32..127 in order: a 5-character glyph number, a 3-character vertex count (the left/right
bearing pair included), then two characters per vertex, each coordinate `ord(c) - ord('R')` (y grows downwards);
the vertex ' R' lifts the pen. Long records may wrap onto the following lines.

`render_line` turns a text into the internal format every source shares (`experiments.handwriting.data`): absolute
points (x, y, end_of_stroke) with y upwards, densely resampled along each stroke as a pen would record them.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from experiments.data import DataError, home

FONT_DIR = '/usr/share/hershey-fonts'  # Debian's hershey-fonts-data, where installed.
FONT_HINT = (
  'Fetch the Hershey stroke fonts with `python -m scripts.get_data hershey` (no root needed; they land in '
  f'{home("hershey")}), or set config.data.dir to a directory of .jhf files.'
)
FIRST_CHAR = 32  # A .jhf file of an ASCII face starts at ' '.

Glyph = tuple[list[np.ndarray], float, float]  # (strokes as [n, 2] arrays, left bearing, right bearing)


def parse_jhf(path: str) -> dict[str, Glyph]:
  """Reads a `.jhf` font into {character: (strokes, left, right)}; y points up (the file's y negated).

  Raises:
    DataError: a record that is cut short or has a non-numeric header; names the file and the record.
  """
  with open(path, encoding='latin-1') as f:
    lines = [line.rstrip('\r\n') for line in f]
  glyphs, i, index = {}, 0, 0
  while i < len(lines):
    record = lines[i]
    i += 1
    if not record.strip():
      continue
    try:
      count = int(record[5:8])
    except ValueError:
      raise DataError(f'{path}, record {index + 1}: no vertex count in columns 6-8 ({record[:8]!r}).') from None
    while len(record) < 8 + 2 * count and i < len(lines):  # A record wrapped onto the next lines.
      record += lines[i]
      i += 1
    body = record[8 : 8 + 2 * count]
    if len(body) != 2 * count or count < 1:
      raise DataError(f'{path}, record {index + 1}: {count} vertices announced, {len(body) // 2} found. {FONT_HINT}')
    values = [ord(c) - ord('R') for c in body]
    left, right = values[0], values[1]
    strokes, current = [], []
    for k in range(2, len(values), 2):
      if body[k : k + 2] == ' R':
        if current:
          strokes.append(np.array(current, np.float32))
        current = []
      else:
        current.append((values[k], -values[k + 1]))
    if current:
      strokes.append(np.array(current, np.float32))
    glyphs[chr(FIRST_CHAR + index)] = (strokes, float(left), float(right))
    index += 1
  if not glyphs:
    raise DataError(f'{path}: no glyphs. {FONT_HINT}')
  return glyphs


def default_font_dir() -> str:
  """Where fonts are read without config.data.dir: `get_data hershey`'s directory, else Debian's if it has them."""
  fetched = home('hershey')
  return FONT_DIR if not os.path.isdir(fetched) and os.path.isdir(FONT_DIR) else fetched


def font_path(name: str, font_dir: str | None) -> str:
  return os.path.join(font_dir or default_font_dir(), f'{name}.jhf')


def check_fonts(names: tuple[str, ...], font_dir: str | None) -> None:
  """Raises ValueError, naming the fix, unless every font file exists."""
  missing = [font_path(n, font_dir) for n in names if not os.path.isfile(font_path(n, font_dir))]
  if missing:
    raise DataError(f'missing Hershey font file(s): {", ".join(missing)}. {FONT_HINT}')


@dataclasses.dataclass(frozen=True)
class Writer:
  """One writer's style. Units are the font's (capital letters are about 21 units tall)."""

  font: str
  slant: float = 0.0  # x += slant * y (a shear; > 0 leans right).
  scale: float = 1.0
  aspect: float = 1.0  # Width / height.
  spacing: float = 0.0  # Extra space between letters.
  jitter: float = 0.0  # Standard deviation of the pen's noise, per recorded point.
  speed: float = 2.0  # Distance between successive recorded points along a stroke.
  join: float = 0.0  # Probability that the pen stays down from one letter to the next within a word.
  wobble: float = 0.0  # Amplitude of a slow drift of the baseline.


def random_writer(rng: np.random.Generator, fonts: tuple[str, ...]) -> Writer:
  """A writer drawn from the ranges the embedded data set uses."""
  return Writer(
    font=fonts[rng.integers(len(fonts))],
    slant=rng.uniform(-0.15, 0.45),
    scale=rng.uniform(0.8, 1.25),
    aspect=rng.uniform(0.85, 1.2),
    spacing=rng.uniform(-1.5, 3.0),
    jitter=rng.uniform(0.05, 0.35),
    speed=rng.uniform(2.4, 3.6),
    join=rng.uniform(0.0, 1.0),
    wobble=rng.uniform(0.0, 2.0),
  )


def resample(stroke: np.ndarray, step: float) -> np.ndarray:
  """Points every `step` units along the polyline `stroke` [n, 2], both ends kept; a dot stays one point."""
  lengths = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
  total = float(lengths.sum())
  if len(stroke) < 2 or total == 0.0:
    return stroke[:1].copy()
  distance = np.concatenate([[0.0], np.cumsum(lengths)])
  positions = np.linspace(0.0, total, max(2, int(np.ceil(total / step)) + 1))
  return np.stack([np.interp(positions, distance, stroke[:, d]) for d in range(2)], axis=1).astype(np.float32)


def render_line(text: str, glyphs: dict[str, Glyph], writer: Writer, rng: np.random.Generator) -> np.ndarray:
  """The pen trajectory of `text` written by `writer`.

  Args:
    text: characters of the font (others are written as spaces).
    glyphs: the writer's font, from `parse_jhf`.
    writer: the style.
    rng: noise of this line (jitter, joins).

  Returns:
    float32 [N, 3]: absolute (x, y) with y up, and 1 on the last point of each stroke (the pen lifts after it).
  """
  strokes, pen_x, previous_word_letter = [], 0.0, False
  for ch in text:
    glyph_strokes, left, right = glyphs.get(ch, glyphs[' '])
    offset = pen_x - left
    letter = [np.asarray(s) + np.array([offset, 0.0], np.float32) for s in glyph_strokes]
    if letter and previous_word_letter and strokes and rng.uniform() < writer.join:
      strokes[-1] = np.concatenate([strokes[-1], letter[0]])  # The pen stays down into the next letter.
      letter = letter[1:]
    strokes.extend(letter)
    previous_word_letter = ch != ' ' and bool(glyph_strokes)
    pen_x += right - left + writer.spacing
  if not strokes:
    raise ValueError(f'render_line: {text!r} has no visible character.')
  points = []
  for stroke in strokes:
    xy = stroke * (writer.scale * writer.aspect, writer.scale)
    xy[:, 0] += writer.slant * xy[:, 1]
    xy = resample(xy, writer.speed)
    eos = np.zeros((len(xy), 1), np.float32)
    eos[-1] = 1.0
    points.append(np.concatenate([xy, eos], axis=1))
  line = np.concatenate(points).astype(np.float32)
  width = max(float(line[:, 0].max()), 1.0)
  line[:, 1] += writer.wobble * np.sin(2 * np.pi * line[:, 0] / width + rng.uniform(0, 2 * np.pi))
  line[:, :2] += rng.normal(0.0, writer.jitter, size=(len(line), 2)).astype(np.float32)
  return line
