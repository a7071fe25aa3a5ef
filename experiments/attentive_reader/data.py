"""Cloze question answering data for the attentive reader (paper section 2, Figure 2).

Sources (`config.data.source`):
  'procedural' (default): a generated cloze set with the CNN task's structure (below); needs nothing.
  'questions': DeepMind's rc-data layout under `config.data.dir`: `questions/{training,validation,test}/*.question`,
               one question per file in blocks separated by blank lines (URL; the passage on one line; the query with
               `@placeholder`; the answer `@entityN`; one `@entityN:Name` line per entity). The vocabulary is built
               from the training passages and queries (words seen `min_count` times, every entity marker). With
               `top_sentences` N > 0, each passage keeps its N sentences sharing the most distinct query words (ties:
               earlier first; original order kept): our stand-in for Cooijmans et al.'s unpublished "top4"
               heuristic. The parsed corpus is cached (`cache_dir`, default `<dir>/.ar_cache`), keyed by the file
               list, sizes and options, so 380k files are read once.
  'top4':      the pickles of Cooijmans et al. in `config.data.dir`: `dict.pkl` (token -> id),
               `train4_{pass,qs,ans}.pkl` and `valid4_{pass,qs,ans}.pkl`
               (lists of id lists ending with EOS; answers one-id lists).

The procedural passages: `facts` sentences "[filler] @entityA verb [filler] @entityB [filler] ." over a few anonymized
entities drawn afresh for each passage, and one filler sentence that mentions an entity. The query restates one fact
with a synonym of its verb and one entity replaced by @placeholder. Each passage has a distractor fact with the
query's known entity in the same role but another verb, and one with the same verb and another entity, so neither the
entity nor the verb alone finds the answer, and a query-only model stays at chance (the entity ids are random per
passage).

Every split is a `QASplit`; `QASource` serves it to the loop as padded batches
{passage [B, T], passage_length [B], query [B, Tq], query_length [B], answer [B]}.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle

import numpy as np

from experiments.attentive_reader.vocab import RESERVED, Ragged, build_vocabulary, count_words, encode
from experiments.data import DataError

SOURCES = ('procedural', 'questions', 'top4')
PLACEHOLDER = '@placeholder'
ENTITY_MARK = '@entity'
QUESTION_SPLITS = {'train': 'training', 'valid': 'validation', 'test': 'test'}
TOP4_FILES = ('dict.pkl', *(f'{s}4_{p}.pkl' for s in ('train', 'valid') for p in ('pass', 'qs', 'ans')))
QUESTIONS_HINT = (
  "Get DeepMind's CNN questions (github.com/google-deepmind/rc-data, or the packaged cnn.tgz) on a machine with "
  'internet and point --config.data.dir at the folder holding questions/; offline, use source=procedural.'
)
TOP4_HINT = 'source=top4 reads the pickles of top4.zip (Cooijmans et al.); offline, use source=procedural.'
_CACHE_VERSION = 1

VERBS = (
  ('met', 'saw'),
  ('praised', 'lauded'),
  ('sued', 'charged'),
  ('visited', 'toured'),
  ('hired', 'employed'),
  ('beat', 'defeated'),
  ('called', 'phoned'),
  ('thanked', 'credited'),
  ('followed', 'tracked'),
  ('warned', 'cautioned'),
  ('joined', 'backed'),
  ('helped', 'aided'),
)
_FILLER_TEXT = 'the a on in at yesterday monday reportedly officials said later again also first after talks news week'
FILLERS = (*_FILLER_TEXT.split(), 'police', 'group', 'city', 'report', 'today')


@dataclasses.dataclass
class QASplit:
  passages: Ragged
  queries: Ragged
  answers: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    return len(self.answers)


@dataclasses.dataclass
class QAData:
  splits: dict[str, QASplit]
  vocab: list[str]  # id -> word; 0 is padding

  @property
  def entity_ids(self) -> np.ndarray:
    return np.array([i for i, w in enumerate(self.vocab) if ENTITY_MARK in w], np.int32)


class QASource:
  """A split as the loop's `Source`, padded to few shapes (each new shape costs a compilation of the step).

  `pad_multiple` 0 pads every batch to the split's longest passage and query (one shape: short corpora like the
  procedural one); k > 0 pads each batch to its own longest, rounded up to a multiple of k (long, varied passages).
  """

  def __init__(self, split: QASplit, pad_multiple: int = 0):
    self.split = split
    self.pad_multiple = pad_multiple
    self._longest = (int(split.passages.lengths.max(initial=1)), int(split.queries.lengths.max(initial=1)))

  def _length(self, ragged: Ragged, indices: np.ndarray, longest: int) -> int:
    if self.pad_multiple == 0:
      return longest
    k = self.pad_multiple
    return max(1, -(-int(ragged.lengths[indices].max(initial=1)) // k) * k)

  def __len__(self) -> int:
    return len(self.split)

  def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices)
    p, q = self.split.passages, self.split.queries
    passage, passage_length = p.padded(indices, self._length(p, indices, self._longest[0]))
    query, query_length = q.padded(indices, self._length(q, indices, self._longest[1]))
    return {
      'passage': passage,
      'passage_length': passage_length,
      'query': query,
      'query_length': query_length,
      'answer': self.split.answers[indices].astype(np.int32),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Procedural cloze data.


def procedural_vocab(num_entities: int) -> list[str]:
  verbs = [v for pair in VERBS for v in pair]
  return [*RESERVED, PLACEHOLDER, '.', *(f'{ENTITY_MARK}{i}' for i in range(num_entities)), *verbs, *FILLERS]


def _fillers(rng: np.random.Generator, most: int) -> list[str]:
  return list(rng.choice(FILLERS, rng.integers(0, most + 1)))


def _procedural_example(rng, num_entities, entities_per_passage, facts):
  """(passage words, query words, answer word) of one generated question."""
  ents = [f'{ENTITY_MARK}{i}' for i in rng.choice(num_entities, entities_per_passage, replace=False)]
  verbs = rng.choice(len(VERBS), facts, replace=False)
  a, b, c, d = rng.choice(entities_per_passage, 4, replace=False)
  ask_object = rng.random() < 0.5
  # Fact 0 is asked about; fact 1 shares its known entity (same role, other verb); fact 2 its verb (other entity).
  known, answer = (ents[a], ents[b]) if ask_object else (ents[b], ents[a])
  triples = [(ents[a], verbs[0], ents[b])]
  triples.append((ents[a], verbs[1], ents[c]) if ask_object else (ents[c], verbs[1], ents[b]))
  triples.append((ents[d], verbs[0], ents[c]) if ask_object else (ents[c], verbs[0], ents[d]))
  for k in range(3, facts):
    s, o = rng.choice(entities_per_passage, 2, replace=False)
    triples.append((ents[s], verbs[k], ents[o]))
  sentences = [
    [*_fillers(rng, 2), s, VERBS[v][rng.integers(2)], *_fillers(rng, 2), o, *_fillers(rng, 1), '.']
    for s, v, o in triples
  ]
  sentences.append([*_fillers(rng, 3), ents[rng.integers(entities_per_passage)], *_fillers(rng, 3), '.'])
  order = rng.permutation(len(sentences))
  passage = [w for i in order for w in sentences[i]]
  verb = VERBS[verbs[0]][rng.integers(2)]
  query = [known, verb, PLACEHOLDER] if ask_object else [PLACEHOLDER, verb, known]
  return passage, [*_fillers(rng, 1), *query], answer


def procedural(sizes: dict[str, int], *, seed: int, num_entities: int, entities_per_passage: int, facts: int) -> QAData:
  """Generated splits {name: QASplit} of `sizes[name]` questions each, a function of `seed` only."""
  if facts < 3 or entities_per_passage < 4 or num_entities < entities_per_passage or facts > len(VERBS):
    raise DataError(
      f'procedural data needs facts in [3, {len(VERBS)}], entities_per_passage >= 4 and num_entities >= '
      f'entities_per_passage; got facts={facts}, entities_per_passage={entities_per_passage}, '
      f'num_entities={num_entities}.'
    )
  vocab = procedural_vocab(num_entities)
  index = {w: i for i, w in enumerate(vocab)}
  splits = {}
  for k, (name, size) in enumerate(sizes.items()):
    rng = np.random.default_rng([seed, k])
    examples = [_procedural_example(rng, num_entities, entities_per_passage, facts) for _ in range(size)]
    splits[name] = QASplit(
      Ragged.from_lists([encode(p, index) for p, _, _ in examples]),
      Ragged.from_lists([encode(q, index) for _, q, _ in examples]),
      np.array([index[a] for _, _, a in examples], np.int32),
    )
  return QAData(splits, vocab)


# ----------------------------------------------------------------------------------------------------------------------
# DeepMind's .question files.


def parse_question(path: str) -> tuple[list[str], list[str], str]:
  """(passage words, query words, answer) of one .question file; DataError naming the file if it is malformed."""
  try:
    with open(path, encoding='utf-8') as f:
      blocks = f.read().strip().split('\n\n')
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: cannot read this question file ({e}). {QUESTIONS_HINT}') from None
  if len(blocks) < 4:
    raise DataError(
      f'{path}: expected blocks separated by blank lines (URL, passage, query, answer, entities); found '
      f'{len(blocks)} block(s): truncated or not a .question file. {QUESTIONS_HINT}'
    )
  passage, query, answer = blocks[1].split(), blocks[2].split(), blocks[3].strip()
  if PLACEHOLDER not in query or not answer.startswith(ENTITY_MARK) or not passage:
    raise DataError(
      f'{path}: the query (block 3) must contain {PLACEHOLDER} and the answer (block 4) be an {ENTITY_MARK}N '
      f'token; got query {" ".join(query)[:80]!r}, answer {answer[:40]!r}. {QUESTIONS_HINT}'
    )
  return passage, query, answer


_STOP_TEXT = "the a an of to in and on at for is was by with from that it as . , ' \" -- `` ''"
_STOP = frozenset(_STOP_TEXT.split())


def top_sentences(passage: list[str], query: list[str], n: int) -> list[str]:
  """The `n` sentences of `passage` sharing the most distinct non-stopword query words, in their original order."""
  sentences, current = [], []
  for w in passage:
    current.append(w)
    if w in ('.', '!', '?'):
      sentences.append(current)
      current = []
  if current:
    sentences.append(current)
  if len(sentences) <= n:
    return passage
  keys = set(query) - _STOP - {PLACEHOLDER}
  scores = [-len(keys.intersection(s)) for s in sentences]
  keep = sorted(np.argsort(scores, kind='stable')[:n])
  return [w for i in keep for w in sentences[i]]


def _question_files(data_dir: str) -> dict[str, list[str]]:
  files = {}
  for split, folder in QUESTION_SPLITS.items():
    path = os.path.join(data_dir, 'questions', folder)
    if os.path.isdir(path):
      files[split] = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith('.question'))
  return files


def _cache_key(files: dict[str, list[str]], options: dict) -> str:
  digest = hashlib.sha1(json.dumps([_CACHE_VERSION, options]).encode())
  for split in sorted(files):
    for path in files[split]:
      digest.update(f'{split}/{os.path.basename(path)}:{os.path.getsize(path)}\n'.encode())
  return digest.hexdigest()[:16]


def _read_questions(files, top_n: int, min_count: int) -> QAData:
  parsed = {}
  for split, paths in files.items():
    examples = [parse_question(p) for p in paths]
    if top_n > 0:
      examples = [(top_sentences(p, q, top_n), q, a) for p, q, a in examples]
    parsed[split] = examples
  train = parsed['train']
  counts = count_words((*p, *q) for p, q, _ in train)
  entities = {w for w in counts if ENTITY_MARK in w} | {a for ex in parsed.values() for _, _, a in ex}
  vocab = build_vocabulary(counts, min_count=min_count, always=entities | {PLACEHOLDER})
  index = {w: i for i, w in enumerate(vocab)}
  splits = {
    name: QASplit(
      Ragged.from_lists([encode(p, index) for p, _, _ in ex]),
      Ragged.from_lists([encode(q, index) for _, q, _ in ex]),
      np.array([index[a] for _, _, a in ex], np.int32),
    )
    for name, ex in parsed.items()
  }
  return QAData(splits, vocab)


def _save_cache(path: str, data: QAData) -> None:
  arrays = {}
  for name, s in data.splits.items():
    arrays.update({f'{name}.p.tok': s.passages.tokens, f'{name}.p.off': s.passages.offsets})
    arrays.update({f'{name}.q.tok': s.queries.tokens, f'{name}.q.off': s.queries.offsets, f'{name}.ans': s.answers})
  arrays['vocab'] = np.array(json.dumps(data.vocab))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # Atomic: a reader never sees half a cache.


def _load_cache(path: str) -> QAData:
  z = np.load(path)
  names = sorted({k.split('.')[0] for k in z.files if k != 'vocab'})
  splits = {
    n: QASplit(Ragged(z[f'{n}.p.tok'], z[f'{n}.p.off']), Ragged(z[f'{n}.q.tok'], z[f'{n}.q.off']), z[f'{n}.ans'].copy())
    for n in names
  }
  return QAData(splits, json.loads(str(z['vocab'])))


def load_questions(data_dir: str, *, top_n: int = 0, min_count: int = 2, cache_dir: str | None = None) -> QAData:
  """The rc-data questions under `data_dir` (train, valid and, if present, test), cached after the first read."""
  check_source('questions', data_dir)
  files = _question_files(data_dir)
  key = _cache_key(files, {'top_n': top_n, 'min_count': min_count})
  path = os.path.join(cache_dir or os.path.join(data_dir, '.ar_cache'), f'questions-{key}.npz')
  if os.path.isfile(path):
    return _load_cache(path)
  data = _read_questions(files, top_n, min_count)
  # A read-only data dir: the run still works, it only re-reads the files next time (set data.cache_dir).
  with contextlib.suppress(OSError):
    _save_cache(path, data)
  return data


# ----------------------------------------------------------------------------------------------------------------------
# Cooijmans et al.'s top4 pickles.


def _load_pickle(path: str):
  try:
    with open(path, 'rb') as f:
      return pickle.load(f, encoding='latin1')  # Written by Python 2.
  except Exception as e:  # Any unpickling failure means the same thing to the user.
    message = f'{path}: cannot unpickle ({type(e).__name__}: {e}); the file is truncated or corrupt. {TOP4_HINT}'
    raise DataError(message) from None


def load_top4(data_dir: str) -> QAData:
  """The top4 pickles: train and valid splits; the EOS id ending each passage and question is dropped."""
  check_source('top4', data_dir)
  words = _load_pickle(os.path.join(data_dir, 'dict.pkl'))
  if not isinstance(words, dict) or not words:
    raise DataError(f'{os.path.join(data_dir, "dict.pkl")}: expected a dict token -> id. {TOP4_HINT}')
  vocab = [f'<id{i}>' for i in range(max(words.values()) + 1)]
  for w, i in words.items():
    vocab[i] = w
  vocab[0] = RESERVED[0]
  splits = {}
  for split in ('train', 'valid'):
    p, q, a = (_load_pickle(os.path.join(data_dir, f'{split}4_{k}.pkl')) for k in ('pass', 'qs', 'ans'))
    if not len(p) == len(q) == len(a):
      raise DataError(f'{data_dir}: {split}4_*.pkl hold {len(p)}, {len(q)}, {len(a)} examples; expected equal counts.')
    drop_eos = lambda seqs: [list(s)[:-1] for s in seqs]  # As the code's prepare_data: the last token is EOS.
    splits[split] = QASplit(
      Ragged.from_lists(drop_eos(p)), Ragged.from_lists(drop_eos(q)), np.array([x[0] for x in a], np.int32)
    )
  return QAData(splits, vocab)


def check_source(source: str, data_dir: str | None = None) -> None:
  """Raises DataError, naming the fix, unless the data of `source` can be found."""
  if source not in SOURCES:
    raise DataError(f'Unknown attentive reader source {source!r}; choose one of {", ".join(SOURCES)}.')
  if source == 'procedural':
    return
  hint = QUESTIONS_HINT if source == 'questions' else TOP4_HINT
  if data_dir is None:
    raise DataError(f'source={source} reads files from a directory: set --config.data.dir. {hint}')
  data_dir = os.path.expanduser(os.path.expandvars(data_dir))
  if not os.path.isdir(data_dir):
    raise DataError(f'data dir {data_dir!r} is not a directory. {hint}')
  if source == 'top4':
    missing = [n for n in TOP4_FILES if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
      raise DataError(f'{data_dir} lacks {", ".join(missing)}. {hint}')
    return
  files = _question_files(data_dir)
  for split in ('train', 'valid'):
    if not files.get(split):
      folder = os.path.join(data_dir, 'questions', QUESTION_SPLITS[split])
      raise DataError(f'{folder} holds no .question files. {hint}')
