"""The IAM On-Line Handwriting Database (Liwicki & Bunke 2005) in its published layout.

Under one directory (`config.data.dir`):
  lineStrokes/a01/a01-000/a01-000u-01.xml   one text line's pen trajectory: StrokeSet > Stroke > Point(x, y, time)
  ascii/a01/a01-000/a01-000u.txt            the form's transcription: the lines after the `CSR:` header
  trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt   form ids (a01-000u), one a line
The i-th transcription line of a form belongs to its i-th stroke file in sorted order. The reader returns points in
the internal format of `experiments.handwriting.data`: absolute (x, y) with y up (IAM's y grows downwards), and the
end-of-stroke bit on each stroke's last point.
"""

from __future__ import annotations

import glob
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from experiments.data import DataError

SPLIT_FILES = {'train': 'trainset.txt', 'valid': 'testset_v.txt', 'test': 'testset_f.txt'}
IAM_HINT = (
  'source=iam reads the IAM On-Line Handwriting Database (https://fki.tic.heia-fr.ch/databases/'
  'iam-on-line-handwriting-database, registration required): set config.data.dir to the directory holding '
  'lineStrokes/, ascii/ and trainset.txt, testset_v.txt, testset_f.txt.'
)


def read_stroke_file(path: str) -> np.ndarray:
  """One lineStrokes XML file as float32 [N, 3] (x, y up, end_of_stroke).

  Raises:
    DataError: malformed XML, no StrokeSet, a Point without integer x/y, or no points; names the file.
  """
  try:
    root = ET.parse(path).getroot()
  except ET.ParseError as e:
    raise DataError(f'{path}: malformed XML ({e}). Re-extract lineStrokes from the IAM-OnDB archive.') from None
  stroke_set = root if root.tag == 'StrokeSet' else root.find('.//StrokeSet')
  if stroke_set is None:
    raise DataError(f'{path}: no StrokeSet element; is this an IAM-OnDB lineStrokes file?')
  points = []
  for stroke in stroke_set.iter('Stroke'):
    xy = []
    for point in stroke.iter('Point'):
      try:
        xy.append((float(int(point.get('x'))), -float(int(point.get('y')))))
      except (TypeError, ValueError):
        raise DataError(f'{path}: a Point without integer x and y attributes ({point.attrib}).') from None
    if xy:
      eos = np.zeros((len(xy), 1), np.float32)
      eos[-1] = 1.0
      points.append(np.concatenate([np.array(xy, np.float32), eos], axis=1))
  if not points:
    raise DataError(f'{path}: no Point elements.')
  return np.concatenate(points)


def read_transcription(path: str) -> list[str]:
  """The text lines of one ascii/*.txt file: those after the `CSR:` header, blank lines skipped."""
  with open(path, encoding='latin-1') as f:
    lines = [line.rstrip('\r\n') for line in f]
  try:
    start = next(i for i, line in enumerate(lines) if line.strip().startswith('CSR:'))
  except StopIteration:
    raise DataError(f'{path}: no "CSR:" header; is this an IAM-OnDB ascii transcription?') from None
  return [line.strip() for line in lines[start + 1 :] if line.strip()]


def form_dirs(form_id: str) -> tuple[str, str]:
  """('a01', 'a01-000') for the form id 'a01-000u'."""
  match = re.match(r'([A-Za-z0-9]+)-([0-9]+)', form_id)
  if not match:
    raise DataError(f'{form_id!r} is not an IAM-OnDB form id such as a01-000u.')
  return match.group(1), match.group(0)


def read_form(data_dir: str, form_id: str) -> list[tuple[np.ndarray, str]]:
  """[(points, text)] for each line of one form."""
  top, mid = form_dirs(form_id)
  text_path = os.path.join(data_dir, 'ascii', top, mid, f'{form_id}.txt')
  if not os.path.isfile(text_path):
    raise DataError(f'{text_path} is missing (listed in a split file). {IAM_HINT}')
  texts = read_transcription(text_path)
  stroke_paths = sorted(glob.glob(os.path.join(data_dir, 'lineStrokes', top, mid, f'{form_id}-*.xml')))
  if len(stroke_paths) != len(texts):
    raise DataError(
      f'{text_path}: {len(texts)} transcription lines but {len(stroke_paths)} stroke files '
      f'lineStrokes/{top}/{mid}/{form_id}-*.xml; the two must match line for line (re-extract the form).'
    )
  return [(read_stroke_file(p), t) for p, t in zip(stroke_paths, texts, strict=True)]


def read_split_ids(data_dir: str, split: str) -> list[str]:
  """The form ids a split file lists, one a line (a01-000u)."""
  path = os.path.join(data_dir, SPLIT_FILES[split])
  with open(path, encoding='latin-1') as f:  # Any bytes read; a form id that is not one is named by form_dirs.
    return [line.strip() for line in f if line.strip()]


def check_iam_dir(data_dir: str | None) -> None:
  """Raises DataError, naming the fix, unless `data_dir` has the IAM-OnDB layout."""
  if data_dir is None:
    raise DataError(f'set config.data.dir. {IAM_HINT}')
  if not os.path.isdir(data_dir):
    raise DataError(f'data_dir {data_dir!r} is not a directory. {IAM_HINT}')
  needed = ['lineStrokes', 'ascii', *SPLIT_FILES.values()]
  missing = [n for n in needed if not os.path.exists(os.path.join(data_dir, n))]
  if missing:
    raise DataError(f'{data_dir} lacks {", ".join(missing)}. {IAM_HINT}')


def remove_long_steps(points: np.ndarray, max_step: float) -> np.ndarray:
  """Drops points inside a stroke that jump more than `max_step` from the previous point (recording errors).

  A stroke's first point may jump any distance (the pen moved in the air); a dropped point's end-of-stroke bit moves
  to the point before it, so strokes stay strokes.
  """
  points = points.copy()
  keep = np.ones(len(points), bool)
  previous = 0
  for i in range(1, len(points)):
    starts_stroke = points[previous, 2] == 1.0
    if not starts_stroke and np.hypot(*(points[i, :2] - points[previous, :2])) > max_step:
      keep[i] = False
      if points[i, 2] == 1.0:
        points[previous, 2] = 1.0
      continue
    previous = i
  return points[keep]


def load_iam(data_dir: str, max_step: float) -> dict[str, list[tuple[np.ndarray, str]]]:
  """{'train' | 'valid' | 'test': [(points, text)]} from the split files (train, testset_v, testset_f)."""
  check_iam_dir(data_dir)
  splits = {}
  for split in SPLIT_FILES:
    lines = []
    for form_id in read_split_ids(data_dir, split):
      lines.extend((remove_long_steps(p, max_step), t) for p, t in read_form(data_dir, form_id))
    if not lines:
      raise DataError(f'{os.path.join(data_dir, SPLIT_FILES[split])} lists no form. {IAM_HINT}')
    splits[split] = lines
  return splits
