"""The attentive reader (Figure 2): config variants, the three readers on files the tests write, the procedural data
against a brute-force solver, the entity permutation, masking, BN-LSTM's per-step statistics, and smoke runs."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from norm_checks import assert_normalized_by

from configs import attentive_reader as ar_config
from experiments import attentive_reader as ar
from experiments import loop
from experiments.attentive_reader import data as qa
from experiments.data import DataError
from layernorm import RMSLSTMCell, RMSNorm

VERB_CLASS = {v: k for k, pair in enumerate(qa.VERBS) for v in pair}


def solve(passage: list[str], query: list[str]) -> set[str]:
  """Brute force: the entities that, put for @placeholder, restate a fact of the passage (synonymous verbs equal)."""
  facts, sentence = set(), []
  for w in passage:
    sentence.append(w)
    if w == '.':
      ents = [x for x in sentence if x.startswith(qa.ENTITY_MARK)]
      verbs = [VERB_CLASS[x] for x in sentence if x in VERB_CLASS]
      if len(ents) == 2 and len(verbs) == 1:
        facts.add((ents[0], verbs[0], ents[1]))
      sentence = []
  q = [w for w in query if w.startswith(qa.ENTITY_MARK) or w in VERB_CLASS or w == qa.PLACEHOLDER]
  verb = VERB_CLASS[q[1]]
  if q[0] == qa.PLACEHOLDER:
    return {s for s, v, o in facts if v == verb and o == q[2]}
  return {o for s, v, o in facts if v == verb and s == q[0]}


def small_data(n=64, seed=0):
  return qa.procedural({'train': n, 'valid': 16}, seed=seed, num_entities=12, entities_per_passage=5, facts=4)


def words(data, ids):
  return [data.vocab[i] for i in ids]


def test_config_variants_follow_the_paper():
  paper = ar_config.get_config('paper,norm=bn')
  assert (paper.model.dim, paper.batch_size, paper.optimizer.learning_rate) == (240, 64, 8e-5)
  assert (paper.optimizer.grad_clip, paper.optimizer.grad_clip_norm, paper.model.dropout) == (
    'attentive_reader',
    10,
    0.5,
  )
  assert (paper.eval_every_steps, paper.best_metric, paper.data.source, paper.model.bn_gamma) == (
    1000,
    'eval/valid/error',
    'top4',
    0.1,
  )
  assert ar_config.get_config('ln_gain=0.1').model.ln_gain_init == 0.1
  assert ar_config.get_config().data.source == 'procedural'
  points = []
  ar_config.sweep(lambda **kw: points.append(kw))
  assert [p['norm'] for p in points] == ['none', 'bn', 'bn_everywhere', 'ln', 'rms']  # RMSNorm: beyond the paper.
  with pytest.raises(ValueError, match='smoke and paper'):
    ar_config.get_config('smoke,paper')


def test_procedural_answers_are_unique_and_need_both_entity_and_verb():
  data = small_data(200)
  split = data.splits['train']
  for i in range(len(split)):
    passage, query = words(data, split.passages[i]), words(data, split.queries[i])
    answer = data.vocab[split.answers[i]]
    assert solve(passage, query) == {answer}
    assert qa.PLACEHOLDER in query and answer in passage and answer not in query
    known = next(w for w in query if w.startswith(qa.ENTITY_MARK))
    # The known entity alone and the verb alone each match a distractor fact too.
    assert sum(s.count(known) for s in [passage]) >= 2
  again = small_data(200)
  np.testing.assert_array_equal(again.splits['train'].passages.tokens, split.passages.tokens)


def test_entity_permutation_keeps_answers_consistent_with_passages():
  data = small_data(32)
  batch = qa.QASource(data.splits['train']).batch(np.arange(32))
  permuted = ar.permute_entities(batch, data.entity_ids, len(data.vocab), jax.random.key(7))
  permuted = jax.tree.map(np.asarray, permuted)
  entity = np.isin(batch['passage'], data.entity_ids)
  assert (permuted['passage'][~entity] == batch['passage'][~entity]).all()  # Words and padding are untouched.
  assert (permuted['passage'][entity] != batch['passage'][entity]).any()
  for i in range(32):
    passage = words(data, permuted['passage'][i, : batch['passage_length'][i]])
    query = words(data, permuted['query'][i, : batch['query_length'][i]])
    assert solve(passage, query) == {data.vocab[permuted['answer'][i]]}
    # One bijection per minibatch: the same original entity maps to the same new one in every example.
    pairs = set(zip(batch['passage'][i][entity[i]], permuted['passage'][i][entity[i]], strict=True))
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})


def model_and_batch(norm, *, n=8, dim=8, query_only=False):
  data = small_data(n)
  config = ar_config.get_config(f'smoke,norm={norm}')
  config.model.query_only = query_only
  config.model.dim = dim
  model = ar.build_model(config.model, len(data.vocab), 60, nnx.Rngs(0))
  return model, qa.QASource(data.splits['train']).batch(np.arange(n)), data


@pytest.mark.parametrize('norm', ar.NORMS)
def test_attention_is_zero_on_padding_and_padding_changes_nothing(norm):
  model, batch, _ = model_and_batch(norm)
  model.eval()
  logits, alpha = model(batch)
  mask = np.arange(batch['passage'].shape[1])[None] < batch['passage_length'][:, None]
  assert (np.asarray(alpha)[~mask] == 0).all()
  np.testing.assert_allclose(np.asarray(alpha).sum(1), 1.0, rtol=1e-5)
  longer = dict(
    batch, passage=np.pad(batch['passage'], ((0, 0), (0, 7))), query=np.pad(batch['query'], ((0, 0), (0, 3)))
  )
  logits2, alpha2 = model(longer)
  np.testing.assert_allclose(logits2, logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(alpha2)[:, : alpha.shape[1]], alpha, rtol=1e-5, atol=1e-7)


def test_rms_reader_is_the_ln_reader_with_rms_norms_in_place_of_its_layer_norms():
  (ln, batch, _), (rms, _, _) = model_and_batch('ln'), model_and_batch('rms')
  assert_normalized_by(ln, 'ln', 6)  # 3 in each of the two LSTMs.
  assert_normalized_by(rms, 'rms', 6)
  assert type(rms.passage_cell) is type(rms.query_cell) is RMSLSTMCell
  for a, b in zip(jax.tree.leaves(nnx.state(ln.embed)), jax.tree.leaves(nnx.state(rms.embed)), strict=True):
    np.testing.assert_array_equal(a, b)  # The same weights from the same seed ...
  np.testing.assert_array_equal(ln.passage_cell.dense_h.kernel[...], rms.passage_cell.dense_h.kernel[...])
  ln.eval(), rms.eval()
  assert np.max(np.abs(np.asarray(ln(batch)[0]) - np.asarray(rms(batch)[0]))) > 1e-4  # ... and yet another reader.
  config = ar_config.get_config('smoke,norm=rms,ln_gain=0.1')
  small = ar.build_model(config.model, 20, 60, nnx.Rngs(0))
  assert all(np.all(m.scale[...] == np.float32(0.1)) for _, m in nnx.iter_graph(small) if isinstance(m, RMSNorm))


def test_query_only_reader_ignores_the_passage():
  model, batch, _ = model_and_batch('ln', query_only=True)
  model.eval()
  other = dict(batch, passage=np.roll(batch['passage'], 3, axis=0), passage_length=np.roll(batch['passage_length'], 3))
  np.testing.assert_allclose(model(other)[0], model(batch)[0], rtol=1e-6)
  full, _, _ = model_and_batch('ln')
  full.eval()
  assert not np.allclose(full(other)[0], full(batch)[0], rtol=1e-4)


def test_bn_lstm_normalizes_each_step_with_its_own_batch_statistics():
  model, batch, _ = model_and_batch('bn', n=8)
  cell = model.passage_cell
  e = model.embed(jnp.asarray(batch['passage']))
  model(batch)  # Training mode, no dropout: the running means move 1% towards each step's batch mean.
  steps = int(batch['passage_length'].min())
  want = np.stack([0.01 * np.asarray(cell.dense_i(e[:, t])).mean(0) for t in range(steps)])
  np.testing.assert_allclose(cell.bn_i.mean[...][:steps], want, rtol=1e-4, atol=1e-7)
  assert not np.allclose(want[0], want[1])  # Per step, not one shared statistic.
  # Training: an example's output depends on the rest of its batch. Evaluation (population statistics): it does not.
  half = jax.tree.map(lambda a: a[:4], batch)
  assert not np.allclose(model(half)[0], model(batch)[0][:4], atol=1e-5)
  model.eval()
  np.testing.assert_allclose(model(half)[0], model(batch)[0][:4], rtol=1e-5, atol=1e-6)


def test_loss_and_eval_are_the_softmax_over_the_vocabulary():
  model, batch, data = model_and_batch('none')
  loss_fn = lambda m, b, k: ar.loss_fn(m, b, k, entity_ids=np.zeros(0, np.int32), vocab_size=len(data.vocab))
  model.eval()
  logits, _ = model(batch)
  want = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), batch['answer'][:, None], 1)[:, 0]
  values = ar.eval_fn(model, batch, None)
  np.testing.assert_allclose(values['nll'], want, rtol=1e-5)
  np.testing.assert_array_equal(values['error'], np.asarray(logits).argmax(-1) != batch['answer'])
  model.train()
  loss_a, _ = loss_fn(model, batch, jax.random.key(0))
  loss_b, _ = loss_fn(model, batch, jax.random.key(1))
  assert float(loss_a) != float(loss_b)  # Dropout draws from the step key.


# ----------------------------------------------------------------------------------------------------------------------
# Readers of the paper's formats, on files written here.


def write_question(path, passage, query, answer, entities=('@entity0:Ann',)):
  with open(path, 'w') as f:
    f.write('\n\n'.join(['http://example.com/x', passage, query, answer, '\n'.join(entities)]) + '\n')


def question_tree(root):
  texts = [
    (
      '@entity0 met @entity1 in paris . rain fell . @entity1 called @entity2 .',
      '@placeholder met @entity1',
      '@entity0',
    ),
    ('@entity3 sued @entity0 . the court met . @entity3 won .', '@entity3 sued @placeholder', '@entity0'),
    ('@entity1 met @entity0 . the sun met @entity1 .', '@placeholder met @entity0', '@entity1'),
  ]
  for folder in ('training', 'validation'):
    os.makedirs(root / 'questions' / folder)
    for k, (p, q, a) in enumerate(texts):
      write_question(root / 'questions' / folder / f'{k:040x}.question', p, q, a)
  return texts


def test_question_reader_builds_vocabulary_and_caches(tmp_path, monkeypatch):
  texts = question_tree(tmp_path)
  data = qa.load_questions(str(tmp_path), top_n=0, min_count=2)
  train = data.splits['train']
  assert words(data, train.passages[0]) == [w if w in data.vocab else '<unk>' for w in texts[0][0].split()]
  assert 'paris' not in data.vocab and 'met' in data.vocab  # Seen once vs. several times in training.
  assert [data.vocab[a] for a in train.answers] == [a for _, _, a in texts]
  assert {'@entity0', '@entity1', '@entity2', '@entity3'} <= set(data.vocab)
  monkeypatch.setattr(qa, 'parse_question', lambda path: pytest.fail('the cache was not used'))
  cached = qa.load_questions(str(tmp_path), top_n=0, min_count=2)
  np.testing.assert_array_equal(cached.splits['valid'].passages.tokens, data.splits['valid'].passages.tokens)
  assert cached.vocab == data.vocab


def test_top_sentences_keeps_the_most_query_like_sentences_in_order():
  passage = ['a', 'b', '.', 'x', 'met', 'y', '.', 'c', 'd', '.', 'met', 'y', 'z', '.', 'e', '.']
  assert qa.top_sentences(passage, ['@placeholder', 'met', 'y'], 2) == ['x', 'met', 'y', '.', 'met', 'y', 'z', '.']
  assert qa.top_sentences(passage, ['q'], 9) == passage


@pytest.mark.parametrize(
  'content', ['http://example.com\n\n@entity0 met .\n', '', 'u\n\np\n\nno placeholder\n\n@entity0\n']
)
def test_a_malformed_question_file_is_named(tmp_path, content):
  question_tree(tmp_path)
  bad = tmp_path / 'questions' / 'training' / 'bad.question'
  bad.write_text(content)
  with pytest.raises(DataError, match=r'bad\.question'):
    qa.load_questions(str(tmp_path))


def test_top4_reader_drops_eos_and_reads_answers(tmp_path):
  vocab = {'<eos>': 1, '<unk>': 2, 'met': 4, '@entity0': 5, '@entity1': 6, '@placeholder': 7}
  passages, queries, answers = [[5, 4, 6, 1], [6, 4, 5, 1]], [[7, 4, 6, 1], [6, 4, 7, 1]], [[5], [5]]
  for name, obj in [('dict', vocab), ('train4_pass', passages), ('train4_qs', queries), ('train4_ans', answers)]:
    (tmp_path / f'{name}.pkl').write_bytes(pickle.dumps(obj, protocol=2))
  for name, obj in [('valid4_pass', passages), ('valid4_qs', queries), ('valid4_ans', answers)]:
    (tmp_path / f'{name}.pkl').write_bytes(pickle.dumps(obj, protocol=2))
  data = qa.load_top4(str(tmp_path))
  assert list(data.splits['train'].passages[0]) == [5, 4, 6]
  assert list(data.splits['valid'].queries[1]) == [6, 4, 7]
  assert list(data.splits['train'].answers) == [5, 5]
  assert list(data.entity_ids) == [5, 6]
  (tmp_path / 'valid4_qs.pkl').write_bytes(pickle.dumps(queries)[:10])
  with pytest.raises(DataError, match=r'valid4_qs\.pkl'):
    qa.load_top4(str(tmp_path))


def test_validate_names_the_fix(tmp_path):
  config = ar_config.get_config('smoke')
  with config.unlocked():
    config.model.norm = 'gn'
    config.data.source = 'top4'
    config.data.dir = str(tmp_path)
  with pytest.raises(ValueError, match=r'(?s)model.norm must be one of none, bn, bn_everywhere, ln.*lacks dict.pkl'):
    ar.validate(config)


# ----------------------------------------------------------------------------------------------------------------------
# Smoke runs through the loop.


def test_smoke_run_logs_validation_error_and_selects_the_best(tmp_path):
  # LN here; the BN-everywhere variant runs through the loop in tests/test_experiment_steps.py.
  config = ar_config.get_config('smoke,norm=ln')
  final = ar.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= final['best/eval/valid/error'] <= 1.0 and final['best/step'] in (2, 4)
  model, vocab = ar.load_trained_model(str(tmp_path))
  assert isinstance(model, ar.AttentiveReader) and len(vocab) == model.logits.out_features


def test_rms_smoke_run_learns_with_rms_lstms(tmp_path):
  config = ar_config.get_config('smoke,norm=rms')
  config.num_train_steps = 24  # The smoke run's 4 steps are too few for the loss to fall beyond the batches' noise.
  final = ar.train_and_evaluate(config, str(tmp_path))
  losses = [r['train/loss'] for r in loop.read_rows(str(tmp_path)) if 'train/loss' in r]
  assert 0.0 <= final['best/eval/valid/error'] <= 1.0 and len(losses) == 12
  # Seed 0, 2-core CPU: 4.26 nats over the first three logs, 4.03 over the last three.
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
  model, _ = ar.load_trained_model(str(tmp_path))
  assert_normalized_by(model, 'rms', 6)


@pytest.mark.parametrize('rate', [0.5, 0.25, 0.3])
def test_dropout_keeps_each_unit_independently_with_probability_one_minus_rate(rate):
  from experiments.attentive_reader.model import dropout, keep_mask

  n = 400_000
  keep = np.asarray(keep_mask(jax.random.key(0), rate, (n,)))
  # Within 4.5 standard errors of 1 - rate; neighbours (the bytes of one random word, at 0.5 and 0.25) uncorrelated.
  assert abs(keep.mean() - (1 - rate)) < 4.5 * np.sqrt(rate * (1 - rate) / n)
  pairs = keep.reshape(-1, 2).astype(float)
  assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 4.5 / np.sqrt(n / 2)
  assert not np.array_equal(keep, np.asarray(keep_mask(jax.random.key(1), rate, (n,))))
  x = jnp.ones((n,))
  y = np.asarray(dropout(x, rate, jax.random.key(0)))
  np.testing.assert_allclose(y[keep], 1 / (1 - rate), rtol=1e-6)
  assert not np.any(y[~keep])
