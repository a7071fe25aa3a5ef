"""Downstream evaluation of frozen sentence vectors (Table 3): SICK relatedness and MR, CR, SUBJ, MPQA.

As the skip-thoughts evaluation code does it (docs/paper.md, section 3), with scikit-learn and scipy doing the fitting:
  SICK        features [|u - v|, u * v] of the two L2-normalized sentence vectors; a softmax regression onto the
              5-point score distribution of Tai et al. (score y puts weight floor(y) + 1 - y on class floor(y) and
              y - floor(y) on the next), fitted as a multinomial LogisticRegression on each pair repeated once per
              class with those weights as sample weights (the soft-label cross-entropy, exactly); the prediction is
              the expected score. The authors stop Adam early on the trial set's Pearson r; here the trial Pearson r
              picks the L2 strength C from a grid instead (the same role: how far the fit may go). Test Pearson r,
              Spearman rho, MSE.
  MR CR SUBJ MPQA  logistic regression on u, nested cross-validation (outer `folds`, inner `inner_folds` choosing C
              in `cs`), data shuffled with seed 1234; the mean test accuracy (%) and its standard deviation over the
              outer folds (Figure 3's error bars).
Words outside the vocabulary are UNK: the authors' vocabulary expansion needs word2vec vectors we cannot download.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from experiments.data import DataError

# scikit-learn and scipy are imported in the functions that fit, not here: importing them takes 1.3 s, which every
# skip-thoughts command (--help, a dry run, a config error, the pictures) would otherwise pay before doing anything.
if TYPE_CHECKING:
  from sklearn.linear_model import LogisticRegression

CLASSIFICATION_FILES = {
  'mr': ('rt-polarity.pos', 'rt-polarity.neg'),
  'cr': ('custrev.pos', 'custrev.neg'),
  'subj': ('plot.tok.gt9.5000', 'quote.tok.gt9.5000'),  # Label 1: objective plot summaries; 0: subjective quotes.
  'mpqa': ('mpqa.pos', 'mpqa.neg'),
}
SICK_FILES = ('SICK_train.txt', 'SICK_trial.txt', 'SICK_test_annotated.txt')
TASKS = ('sick', *CLASSIFICATION_FILES)
MIN_PER_CLASS = 10  # Sentences of each class a classification set needs: 10 outer folds, each with both classes.
DEFAULT_CS = tuple(2.0**k for k in range(9))  # The authors' grid: 2^0 ... 2^8.
Encoder = Callable[[Sequence[str]], np.ndarray]  # sentences -> vectors [N, D]


def task_files(task: str) -> tuple[str, ...]:
  """The standard file names a downstream task reads."""
  return SICK_FILES if task == 'sick' else CLASSIFICATION_FILES[task]


def has_files(directory: str, task: str) -> bool:
  """True when `directory` holds every file of `task` (its real data, when the directory is a SentEval one)."""
  return all(os.path.isfile(os.path.join(directory, name)) for name in task_files(task))


def check_task(directory: str, task: str) -> None:
  """Reads and checks `task`'s files in `directory` (what a run would read), raising DataError naming the problem."""
  if task == 'sick':
    for name in SICK_FILES:
      read_sick(os.path.join(directory, name))
  else:
    read_classification(directory, task)


def _missing(path: str) -> DataError:
  return DataError(
    f'Missing downstream file {path}. Fix: an --eval_dir (config.eval.dir) with the standard files '
    f'({", ".join(SICK_FILES)}, rt-polarity.pos/.neg, custrev.pos/.neg, plot.tok.gt9.5000, quote.tok.gt9.5000, '
    'mpqa.pos/.neg), or leave it unset for the procedural sets.'
  )


def read_lines(path: str) -> list[str]:
  """One sentence per non-empty line, latin-1 (how the MR/CR/SUBJ/MPQA files are encoded)."""
  if not os.path.isfile(path):
    raise _missing(path)
  with open(path, encoding='latin-1') as f:
    lines = [line.strip() for line in f if line.strip()]
  binary = next((i for i, line in enumerate(lines) if '\0' in line), None)
  if binary is not None:
    raise DataError(
      f'{path}: sentence {binary + 1} holds NUL bytes: not a text file. Fix: the file as distributed '
      '(`python -m scripts.get_data senteval` writes MR and CR, checked).'
    )
  return lines


def read_classification(directory: str, task: str) -> tuple[list[str], np.ndarray]:
  """(sentences, labels 1/0) of MR, CR, SUBJ or MPQA from its two files."""
  pos, neg = (read_lines(os.path.join(directory, name)) for name in CLASSIFICATION_FILES[task])
  if not pos or not neg:
    raise DataError(f'{task}: one of {CLASSIFICATION_FILES[task]} in {directory} is empty. Fix: complete files.')
  if min(len(pos), len(neg)) < MIN_PER_CLASS:
    raise DataError(
      f'{task}: {len(pos)} positive and {len(neg)} negative sentences in {directory}; cross-validation needs at '
      f'least {MIN_PER_CLASS} of each. Fix: the complete files (`python -m scripts.get_data senteval` for MR and CR).'
    )
  return pos + neg, np.array([1] * len(pos) + [0] * len(neg))


def read_sick(path: str) -> tuple[list[str], list[str], np.ndarray]:
  """(sentences A, sentences B, relatedness scores) of a SICK file: tab-separated, a header, score in column 4."""
  if not os.path.isfile(path):
    raise _missing(path)
  a, b, scores = [], [], []
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      if number == 1 or not line.strip():
        continue
      cols = line.rstrip('\n').split('\t')
      try:
        score = float(cols[3])
        if not 1.0 <= score <= 5.0:
          raise ValueError
      except (IndexError, ValueError):
        raise DataError(
          f'{path}, line {number}: expected tab-separated pair_ID, sentence_A, sentence_B, relatedness_score '
          f'(1 to 5), ...; got {line.strip()[:80]!r}. Fix: the SICK file as distributed.'
        ) from None
      a.append(cols[1])
      b.append(cols[2])
      scores.append(score)
  if not scores:
    raise DataError(f'{path} holds no sentence pairs. Fix: the SICK file as distributed.')
  return a, b, np.array(scores)


def score_distribution(scores: np.ndarray, num_classes: int = 5) -> np.ndarray:
  """Tai et al.'s encoding of scores in [1, K] as distributions over classes 1..K [N, K]."""
  scores = np.asarray(scores, np.float64)
  low = np.clip(np.floor(scores), 1, num_classes - 1).astype(int)  # A score of exactly K goes to class K.
  dist = np.zeros((len(scores), num_classes))
  dist[np.arange(len(scores)), low - 1] = low + 1 - scores
  dist[np.arange(len(scores)), low] = scores - low
  return dist


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
  return np.concatenate([np.abs(u - v), u * v], axis=1)


def fit_relatedness(train_x, train_scores, c: float) -> LogisticRegression:
  """The softmax regression onto score distributions: each pair repeated per class, weighted by its probability."""
  dist = score_distribution(train_scores)
  n, k = dist.shape
  x = np.repeat(train_x, k, axis=0)
  y = np.tile(np.arange(1, k + 1), n)
  weights = dist.reshape(-1)
  keep = weights > 0
  from sklearn.linear_model import LogisticRegression  # Lazy: see the imports.

  model = LogisticRegression(C=c, max_iter=1000)
  return model.fit(x[keep], y[keep], sample_weight=weights[keep])


def expected_score(model: LogisticRegression, x: np.ndarray) -> np.ndarray:
  return model.predict_proba(x) @ model.classes_.astype(np.float64)


def relatedness_scores(features: dict, cs: Sequence[float] = DEFAULT_CS) -> dict[str, float]:
  """SICK test {pearson, spearman, mse} of the regression whose C has the best trial Pearson r.

  Args:
    features: {'train' | 'trial' | 'test': (pair features [N, F], scores [N])}.
  """
  import scipy.stats  # Lazy: see the imports.

  best = None
  for c in cs:
    model = fit_relatedness(*features['train'], c)
    r = scipy.stats.pearsonr(expected_score(model, features['trial'][0]), features['trial'][1])[0]
    if best is None or r > best[0]:
      best = (r, model)
  test_x, test_y = features['test']
  predicted = expected_score(best[1], test_x)
  return {
    'pearson': float(scipy.stats.pearsonr(predicted, test_y)[0]),
    'spearman': float(scipy.stats.spearmanr(predicted, test_y)[0]),
    'mse': float(np.mean((predicted - test_y) ** 2)),
  }


def classification_accuracy(
  x: np.ndarray, y: np.ndarray, *, folds: int = 10, inner_folds: int = 10, cs: Sequence[float] = DEFAULT_CS
) -> dict[str, float]:
  """Nested cross-validated logistic regression: {'accuracy': mean % over the outer folds, 'accuracy_std': their sd,
  'majority': the larger class's share in % (what always guessing it scores: 50 on MR, 59 on the real CR here)}."""
  from sklearn.linear_model import LogisticRegression  # Lazy: see the imports.
  from sklearn.model_selection import GridSearchCV, StratifiedKFold

  order = np.random.default_rng(1234).permutation(len(y))
  x, y = x[order], y[order]
  accuracies = []
  for train, test in StratifiedKFold(folds, shuffle=True, random_state=1234).split(x, y):
    inner = StratifiedKFold(inner_folds, shuffle=True, random_state=1234)
    search = GridSearchCV(LogisticRegression(solver='liblinear'), {'C': list(cs)}, cv=inner)
    search.fit(x[train], y[train])
    accuracies.append(100.0 * search.score(x[test], y[test]))
  majority = 100.0 * max(np.mean(y), 1.0 - np.mean(y))
  return {'accuracy': float(np.mean(accuracies)), 'accuracy_std': float(np.std(accuracies)), 'majority': majority}


def normalized(vectors: np.ndarray) -> np.ndarray:
  return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def evaluate_all(encode: Encoder, directory: str, tasks: Sequence[str] = TASKS, **cv) -> dict[str, float]:
  """{'sick/pearson', ..., 'mr/accuracy', 'mr/accuracy_std', ...} of the sentence encoder `encode` on `directory`.

  Args:
    encode: raw sentences -> vectors [N, D] (normalized here).
    cv: `folds`, `inner_folds`, `cs` for the classification tasks (`cs` also for SICK).
  """
  results = {}
  for task in tasks:
    if task == 'sick':
      features = {}
      for split, name in zip(('train', 'trial', 'test'), SICK_FILES, strict=True):
        a, b, scores = read_sick(os.path.join(directory, name))
        features[split] = (pair_features(normalized(encode(a)), normalized(encode(b))), scores)
      values = relatedness_scores(features, cv.get('cs', DEFAULT_CS))
    else:
      sentences, labels = read_classification(directory, task)
      values = classification_accuracy(normalized(encode(sentences)), labels, **cv)
    results.update({f'{task}/{k}': v for k, v in values.items()})
  return results
