"""A procedural stand-in for BookCorpus and for the five downstream sets, written in the real files' formats.

Stories. Each has a character (an animal), a place, an object and a mood (+ or -), and five sentences in order:
going somewhere, finding the object there, an opinion of it, taking it away, a feeling. Every concept has two
synonyms drawn independently per sentence, and the mood is said either plainly ("was happy") or negated ("was not
sad"), so the words of a sentence do not give its neighbours away; its meaning does. Stories follow each other
without a break, as books do in BookCorpus.

Downstream sets, with labels that are functions of meaning:
  MR, CR, MPQA  polarity of opinion sentences / review sentences / short phrases. Half are negated, so that a linear
                model on word counts cannot separate them ("not good" vs "good", "not bad" vs "bad" is an XOR).
  SUBJ          plot-like factual sentences (label 1) vs opinions (label 0).
  SICK          pairs of "finding" sentences whose meanings (character, place, object, mood) share k of 4 slots;
                relatedness 1 + k plus uniform noise in [-0.4, 0.4], clipped to [1, 5].
"""

from __future__ import annotations

import os

import numpy as np

ANIMALS = [('cat', 'kitten'), ('dog', 'puppy'), ('fox', 'vixen'), ('bird', 'sparrow'), ('horse', 'pony')]
ANIMALS += [('mouse', 'rat'), ('bear', 'cub'), ('wolf', 'hound')]
PLACES = [('park', 'garden'), ('river', 'stream'), ('market', 'shop'), ('forest', 'woods'), ('house', 'home')]
PLACES += [('beach', 'shore'), ('school', 'classroom'), ('city', 'town')]
OBJECTS = [('ball', 'toy'), ('apple', 'pear'), ('book', 'novel'), ('hat', 'cap'), ('box', 'crate')]
OBJECTS += [('cake', 'pie'), ('coin', 'penny'), ('kite', 'balloon')]
GOOD = ('good', 'happy', 'lovely', 'great', 'nice', 'fine')
BAD = ('bad', 'sad', 'awful', 'terrible', 'poor', 'grim')
LIKE, HATE = ('liked', 'loved'), ('hated', 'disliked')


def _pick(rng, options):
  return options[rng.integers(len(options))]


def _word(rng, concept: tuple[str, str]) -> str:
  return concept[rng.integers(2)]


def _mood_phrase(rng, mood: int) -> str:
  """'happy' for mood +1, or 'not sad': the mood said plainly or as the negated opposite."""
  if rng.random() < 0.5:
    return _pick(rng, GOOD if mood > 0 else BAD)
  return 'not ' + _pick(rng, BAD if mood > 0 else GOOD)


def _meaning(rng) -> dict:
  return {
    'animal': int(rng.integers(len(ANIMALS))),
    'place': int(rng.integers(len(PLACES))),
    'object': int(rng.integers(len(OBJECTS))),
    'mood': int(rng.choice([-1, 1])),
  }


def finding_sentence(rng, m: dict) -> str:
  a, p, o = _word(rng, ANIMALS[m['animal']]), _word(rng, PLACES[m['place']]), _word(rng, OBJECTS[m['object']])
  adj = _pick(rng, GOOD if m['mood'] > 0 else BAD)
  return f'at the {p} the {a} found a {adj} {o} .'


def opinion_sentence(rng, m: dict) -> str:
  o = _word(rng, OBJECTS[m['object']])
  if rng.random() < 0.5:
    return f'i think the {o} was {_mood_phrase(rng, m["mood"])} .'
  verb = _pick(rng, LIKE if m['mood'] > 0 else HATE)
  if rng.random() < 0.5:
    return f'the {_word(rng, ANIMALS[m["animal"]])} {verb} the {o} .'
  opposite = _pick(rng, HATE if m['mood'] > 0 else LIKE)
  return f'the {_word(rng, ANIMALS[m["animal"]])} never {opposite} the {o} .'


def story(rng) -> list[str]:
  m = _meaning(rng)
  a = lambda: _word(rng, ANIMALS[m['animal']])
  other_place = _word(rng, PLACES[(m['place'] + 1 + rng.integers(len(PLACES) - 1)) % len(PLACES)])
  return [
    f'one day the {a()} went to the {_word(rng, PLACES[m["place"]])} .',
    finding_sentence(rng, m),
    opinion_sentence(rng, m),
    f'the {a()} took the {_word(rng, OBJECTS[m["object"]])} to the {other_place} .',
    f'the {a()} felt {_mood_phrase(rng, m["mood"])} .',
  ]


def corpus(num_stories: int, seed: int) -> list[list[str]]:
  """Tokenized sentences of `num_stories` stories in reading order."""
  rng = np.random.default_rng([seed, 11])
  return [s.split() for _ in range(num_stories) for s in story(rng)]


# -- Downstream sets --------------------------------------------------------------------------------------------------


def _polar_sets(rng, n: int, make) -> tuple[list[str], list[str]]:
  pos = [make(rng, {**_meaning(rng), 'mood': 1}) for _ in range(n)]
  neg = [make(rng, {**_meaning(rng), 'mood': -1}) for _ in range(n)]
  return pos, neg


def _review(rng, m: dict) -> str:
  o = _word(rng, OBJECTS[m['object']])
  return f'the {o} was {_mood_phrase(rng, m["mood"])} .' if rng.random() < 0.5 else opinion_sentence(rng, m)


def _phrase(rng, m: dict) -> str:
  """A short fragment, as MPQA's: 'happy', 'not sad kitten', 'very awful', 'the pie felt not good'."""
  phrase, kind = _mood_phrase(rng, m['mood']), rng.integers(4)
  if kind == 1:
    return f'{phrase} {_word(rng, ANIMALS[m["animal"]])}'
  if kind == 2:
    return f'very {phrase}' if not phrase.startswith('not') else f'{phrase} at all'
  if kind == 3:
    return f'the {_word(rng, OBJECTS[m["object"]])} felt {phrase}'
  return phrase


def _factual(rng, m: dict) -> str:
  a, p = _word(rng, ANIMALS[m['animal']]), _word(rng, PLACES[m['place']])
  o = _word(rng, OBJECTS[m['object']])
  return f'one day the {a} went to the {p} .' if rng.random() < 0.5 else f'the {a} took the {o} to the {p} .'


def sick_pairs(rng, n: int) -> list[tuple[str, str, float]]:
  pairs = []
  for _ in range(n):
    a, k = _meaning(rng), int(rng.integers(5))
    b = dict(a)
    for slot in rng.permutation(list(a))[: 4 - k]:
      if slot == 'mood':
        b['mood'] = -a['mood']
      else:
        size = len({'animal': ANIMALS, 'place': PLACES, 'object': OBJECTS}[slot])
        b[slot] = int((a[slot] + 1 + rng.integers(size - 1)) % size)
    score = float(np.clip(1 + k + rng.uniform(-0.4, 0.4), 1, 5))
    pairs.append((finding_sentence(rng, a), finding_sentence(rng, b), round(score, 2)))
  return pairs


def write_sick(path: str, pairs: list[tuple[str, str, float]], first_id: int) -> None:
  """SICK's tab-separated format: a header, then pair id, sentence A, sentence B, relatedness, entailment."""
  with open(path, 'w') as f:
    f.write('pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n')
    for i, (a, b, score) in enumerate(pairs):
      f.write(f'{first_id + i}\t{a}\t{b}\t{score}\tNEUTRAL\n')


def _write_lines(path: str, lines: list[str]) -> None:
  with open(path, 'w', encoding='latin-1') as f:
    f.writelines(line + '\n' for line in lines)


def write_eval_dir(directory: str, seed: int, per_class: int = 300, sick_sizes=(1000, 200, 1000)) -> str:
  """Writes the procedural downstream sets into `directory` under the standard file names; returns it."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng([seed, 23])
  for names, make in [
    (('rt-polarity.pos', 'rt-polarity.neg'), opinion_sentence),
    (('custrev.pos', 'custrev.neg'), _review),
    (('mpqa.pos', 'mpqa.neg'), _phrase),
  ]:
    for name, lines in zip(names, _polar_sets(rng, per_class, make), strict=True):
      _write_lines(os.path.join(directory, name), lines)
  objective = [_factual(rng, _meaning(rng)) for _ in range(per_class)]
  subjective = [opinion_sentence(rng, _meaning(rng)) for _ in range(per_class)]
  _write_lines(os.path.join(directory, 'plot.tok.gt9.5000'), objective)
  _write_lines(os.path.join(directory, 'quote.tok.gt9.5000'), subjective)
  first = 1
  for name, size in zip(('SICK_train.txt', 'SICK_trial.txt', 'SICK_test_annotated.txt'), sick_sizes, strict=True):
    write_sick(os.path.join(directory, name), sick_pairs(rng, size), first)
    first += size
  return directory
