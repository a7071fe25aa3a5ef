"""Skip-thoughts (Table 3, Figure 3): text utilities, the corpus and its triples, the downstream readers and metrics
against known answers, the model's loss against a direct computation, and a smoke run of each variant."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx
from norm_checks import assert_normalized_by
from sklearn import model_selection

from configs import skip_thoughts as st_config
from experiments import skip_thoughts as st
from experiments.data import DataError
from experiments.data import text as text_lib
from experiments.skip_thoughts import data as data_lib
from experiments.skip_thoughts import downstream, evaluate, pictures, procedural
from experiments.skip_thoughts.model import SkipThoughts, triple_nll

# -- Text and triples --------------------------------------------------------------------------------------------------


def test_vocab_is_by_frequency_with_eos_and_unk_first():
  vocab = text_lib.build_vocab([['b', 'a', 'c'], ['a', 'c'], ['a', 'd']], max_words=4)
  assert vocab == ['<eos>', '<unk>', 'a', 'c']  # 'c' (2) beats 'b' and 'd' (1); ties would go alphabetically.
  ids = text_lib.word_ids(vocab)
  np.testing.assert_array_equal(text_lib.encode(['a', 'b', 'c'], ids), [2, text_lib.UNK, 3])


def test_length_grouped_order_is_a_permutation_of_homogeneous_batches():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 9, size=500)
  order = text_lib.length_grouped_order(lengths, 16, np.random.default_rng(1))
  assert sorted(order) == list(range(500))
  groups = {int(n): int(np.sum(lengths == n)) // 16 for n in np.unique(lengths)}  # Full batches per length.
  batches = order[: 16 * sum(groups.values())].reshape(-1, 16)
  assert all(len(set(lengths[b])) == 1 for b in batches)
  assert not np.array_equal(order, text_lib.length_grouped_order(lengths, 16, np.random.default_rng(2)))


def _corpus(lengths):
  sentences = [np.arange(1, n + 1, dtype=np.int32) + 10 * i for i, n in enumerate(lengths)]
  return sentences, *text_lib.flatten(sentences)


def test_triples_are_the_neighbours_and_drop_long_sentences():
  lengths = [3, 5, 2, 9, 4, 4, 1, 6]
  sentences, tokens, offsets = _corpus(lengths)
  centres = data_lib.valid_centres(offsets, max_len=6)
  # Brute force: i has both neighbours, and none of the three has >= 6 words.
  want = [i for i in range(1, len(lengths) - 1) if max(lengths[i - 1 : i + 2]) < 6]
  np.testing.assert_array_equal(centres, want)
  source = data_lib.TripleSource(tokens, offsets, centres, batch_size=2, pad_multiple=4)
  batch = source.batch(np.arange(len(centres)))
  assert batch['centre'].shape[1] % 4 == 0
  for row, i in enumerate(centres):
    for role, j in (('prev', i - 1), ('centre', i), ('next', i + 1)):
      n = batch[f'{role}_len'][row]
      assert n == lengths[j] + 1  # The one EOS step.
      np.testing.assert_array_equal(batch[role][row, : n - 1], sentences[j])
      assert np.all(batch[role][row, n - 1 :] == text_lib.EOS)


def test_text_corpus_streams_files_in_sorted_order_into_memory_maps(tmp_path):
  (tmp_path / 'b.txt').write_text('the cat sat .\n\nthe dog ran .\n')
  (tmp_path / 'a.txt').write_text('a first line\n')
  (tmp_path / 'notes.md').write_text('ignored\n')
  tokens, offsets, vocab = data_lib.read_text_corpus(str(tmp_path), 20, str(tmp_path / 'cache'))
  assert isinstance(tokens, np.memmap) and list(offsets) == [0, 3, 7, 11]
  words = [' '.join(vocab[t] for t in tokens[offsets[i] : offsets[i + 1]]) for i in range(3)]
  assert words == ['a first line', 'the cat sat .', 'the dog ran .']
  with pytest.raises(ValueError, match=r'no \*.txt files in'):
    data_lib.check_source('text', str(tmp_path / 'cache'))


def test_procedural_neighbours_share_the_story():
  sentences = procedural.corpus(50, seed=0)
  assert len(sentences) == 250 and max(len(s) for s in sentences) < 30
  animals = {w for pair in procedural.ANIMALS for w in pair}
  first = next(w for w in sentences[0] if w in animals)
  pair = next(p for p in procedural.ANIMALS if first in p)
  # Sentence 4 of the first story is about the same animal, in either of its synonyms.
  assert any(w in pair for w in sentences[3])


# -- Downstream: readers and metrics -----------------------------------------------------------------------------------


def test_sick_reader_and_a_malformed_line_names_the_file(tmp_path):
  path = tmp_path / 'SICK_train.txt'
  procedural.write_sick(str(path), [('a b', 'c d', 4.5), ('e', 'f', 1.0)], 1)
  a, b, scores = downstream.read_sick(str(path))
  assert a == ['a b', 'e'] and b == ['c d', 'f'] and list(scores) == [4.5, 1.0]
  path.write_text(path.read_text() + '3\tonly two columns\n')
  with pytest.raises(DataError, match=r'SICK_train.txt, line 4'):
    downstream.read_sick(str(path))
  with pytest.raises(DataError, match=r'Missing downstream file .*SICK_trial.txt'):
    downstream.read_sick(str(tmp_path / 'SICK_trial.txt'))


def test_score_distribution_has_the_score_as_its_mean():
  scores = np.array([1.0, 2.3, 3.5, 4.99, 5.0])
  dist = downstream.score_distribution(scores)
  np.testing.assert_allclose(dist.sum(1), 1.0)
  np.testing.assert_allclose(dist @ np.arange(1, 6), scores)
  assert np.all(dist >= 0) and np.count_nonzero(dist, axis=1).max() <= 2


def _sick_features(rng, n, informative):
  scores = rng.uniform(1, 5, size=n)
  noise = rng.normal(size=(n, 6))
  x = np.concatenate([scores[:, None], noise], axis=1) if informative else noise
  return x, scores


def test_relatedness_of_a_feature_that_encodes_the_score_is_near_perfect():
  rng = np.random.default_rng(0)
  good = {split: _sick_features(rng, n, True) for split, n in (('train', 400), ('trial', 100), ('test', 300))}
  result = downstream.relatedness_scores(good, cs=(1.0, 100.0))
  assert result['pearson'] > 0.97 and result['spearman'] > 0.97 and result['mse'] < 0.1
  bad = {split: _sick_features(rng, n, False) for split, n in (('train', 400), ('trial', 100), ('test', 300))}
  result = downstream.relatedness_scores(bad, cs=(1.0,))
  assert abs(result['pearson']) < 0.2 and result['mse'] > 1.0


def test_classification_accuracy_near_100_for_the_label_and_chance_for_noise():
  rng = np.random.default_rng(0)
  y = np.repeat([0, 1], 100)
  noise = rng.normal(size=(200, 5))
  cv = {'folds': 5, 'inner_folds': 3, 'cs': (1.0, 4.0)}
  informed = downstream.classification_accuracy(np.concatenate([noise, 3 * y[:, None] - 1.5], 1), y, **cv)
  assert informed['accuracy'] > 98
  chance = downstream.classification_accuracy(noise, y, **cv)
  assert 35 < chance['accuracy'] < 65 and chance['accuracy_std'] > 0


def test_sick_c_is_the_one_with_the_best_trial_pearson_not_test():
  """The trial set here is the training set itself, so it favours the least regularised fit, while the test set (fresh
  pairs, mostly noise features) favours a strong one: the reported scores are those of the trial set's choice."""
  rng = np.random.default_rng(0)

  def pairs(n):
    scores = rng.uniform(1, 5, n)
    return np.concatenate([scores[:, None] + rng.normal(scale=1.5, size=(n, 1)), rng.normal(size=(n, 8))], 1), scores

  train, test = pairs(60), pairs(60)
  features = {'train': train, 'trial': train, 'test': test}
  cs = (0.01, 1.0, 100.0)
  models = [downstream.fit_relatedness(*train, c) for c in cs]
  pearson = lambda model, split: scipy.stats.pearsonr(downstream.expected_score(model, split[0]), split[1])[0]
  by_trial = max(models, key=lambda m: pearson(m, train))
  by_test = max(models, key=lambda m: pearson(m, test))
  assert by_trial.C != by_test.C, 'the test needs trial and test sets that prefer different C'
  result = downstream.relatedness_scores(features, cs=cs)
  np.testing.assert_allclose(result['pearson'], pearson(by_trial, test), rtol=1e-9)
  np.testing.assert_allclose(result['mse'], np.mean((downstream.expected_score(by_trial, test[0]) - test[1]) ** 2))


def test_nested_cv_scores_each_example_once_on_a_fit_that_never_saw_it(monkeypatch):
  """A spy on the grid search: each outer fold fits on the other folds only (its inner folds split those) and scores
  its own examples; every example is scored exactly once, and never by a fit that had it."""
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(60, 4)), np.repeat([0, 1], 30)
  row_id = {row.tobytes(): i for i, row in enumerate(x)}
  ids = lambda rows: [row_id[r.tobytes()] for r in np.asarray(rows)]
  folds = []

  class SpyGridSearch(model_selection.GridSearchCV):
    def fit(self, X, y=None, **kw):
      folds.append({'fit': ids(X)})
      return super().fit(X, y, **kw)

    def score(self, X, y=None):
      folds[-1]['scored'] = ids(X)
      return super().score(X, y)

  monkeypatch.setattr(model_selection, 'GridSearchCV', SpyGridSearch)  # Where the lazy import finds it.
  downstream.classification_accuracy(x, y, folds=5, inner_folds=3, cs=(1.0,))
  assert len(folds) == 5
  for fold in folds:
    assert not set(fold['fit']) & set(fold['scored'])  # No test example reaches the fit.
    assert sorted(fold['fit'] + fold['scored']) == list(range(60))  # The fit has all the other folds' examples.
  assert sorted(i for fold in folds for i in fold['scored']) == list(range(60))  # Each example tested once.


def _concept_encoder():
  """Bag of concepts: synonyms share a dimension, as do all good and all bad words; the meaning, not the words."""
  concepts = {}
  for group in (procedural.ANIMALS, procedural.PLACES, procedural.OBJECTS):
    for pair in group:
      concepts.update({w: pair[0] for w in pair})
  concepts.update({w: 'good' for w in procedural.GOOD + procedural.LIKE})
  concepts.update({w: 'bad' for w in procedural.BAD + procedural.HATE})
  names = sorted(set(concepts.values()))

  def encode(sentences):
    out = np.zeros((len(sentences), len(names)))
    for row, s in enumerate(sentences):
      for w in s.split():
        if w in concepts:
          out[row, names.index(concepts[w])] = 1.0
    return out

  return encode


def test_evaluate_all_reads_every_standard_file_and_meaning_scores_high(tmp_path):
  procedural.write_eval_dir(str(tmp_path), seed=0, per_class=40, sick_sizes=(300, 60, 200))
  results = downstream.evaluate_all(_concept_encoder(), str(tmp_path), folds=3, inner_folds=2, cs=(1.0, 16.0))
  assert set(results) == {'sick/pearson', 'sick/spearman', 'sick/mse'} | {
    f'{t}/{m}' for t in ('mr', 'cr', 'subj', 'mpqa') for m in ('accuracy', 'accuracy_std', 'majority')
  }
  assert results['mr/majority'] == 50.0  # The procedural sets are balanced: always guessing one class scores 50.
  # SICK's score counts the shared slots of the two meanings: a bag of concepts sees exactly those.
  assert results['sick/pearson'] > 0.9
  # Ignoring 'not' and 'never', it cannot read negated polarity: MPQA stays far from perfect.
  assert results['mpqa/accuracy'] < 85


# -- The model ---------------------------------------------------------------------------------------------------------


def _batch(rng, b=3, t=6, vocab=20):
  lengths = {r: rng.integers(2, t + 1, size=b).astype(np.int32) for r in data_lib.ROLES}
  out = {}
  for role in data_lib.ROLES:
    ids = rng.integers(2, vocab, size=(b, t)).astype(np.int32)
    out[role] = np.where(np.arange(t) < lengths[role][:, None] - 1, ids, 0)
    out[f'{role}_len'] = lengths[role]
  return out


@nnx.jit
def _direct_loss(model, batch):
  """The summed NLL with the full [B, T, V] softmax and an explicit mask: the reference for the chunked loss."""
  h = model.encode(batch['centre'], batch['centre_len'])
  total = 0.0
  for decoder, role in ((model.decoder_prev, 'prev'), (model.decoder_next, 'next')):
    states = model.decode(decoder, h, batch[role], batch[role + '_len'])
    logp = jax.nn.log_softmax(states @ model.output.kernel[...] + model.output.bias[...])
    picked = jnp.take_along_axis(logp, batch[role][..., None], axis=-1)[..., 0]
    mask = jnp.arange(batch[role].shape[1])[None] < batch[role + '_len'][:, None]
    total -= jnp.sum(picked * mask)
  return total


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_loss_is_the_masked_sum_of_token_nlls(norm):
  model = SkipThoughts(20, 5, 7, norm, rngs=nnx.Rngs(0), loss_chunk=4)  # Chunks of 4 cut through the tokens.
  batch = _batch(np.random.default_rng(0))
  loss, extra = nnx.jit(st.loss_fn)(model, batch, jax.random.key(0))
  want = _direct_loss(model, batch)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  tokens = batch['prev_len'].sum() + batch['next_len'].sum()
  np.testing.assert_allclose(extra['nll_per_token'], want / tokens, rtol=1e-5)


def test_rms_model_is_the_ln_model_with_rms_norms_in_place_of_its_layer_norms():
  ln, rms = (SkipThoughts(20, 5, 7, norm, rngs=nnx.Rngs(0)) for norm in ('ln', 'rms'))
  assert_normalized_by(ln, 'ln', 12)  # 4 in each of the three GRUs.
  assert_normalized_by(rms, 'rms', 12)
  for name in ('encoder', 'decoder_prev', 'decoder_next'):  # The same weights from the same seed ...
    for dense in ('dense_i', 'dense_h'):
      a, b = (getattr(getattr(m, name), dense).kernel[...] for m in (ln, rms))
      np.testing.assert_array_equal(a, b)
  batch = _batch(np.random.default_rng(0))
  nll = nnx.jit(triple_nll)
  assert np.max(np.abs(nll(ln, batch)[0] - nll(rms, batch)[0])) > 1e-3  # ... and yet another function.


def test_chunked_output_loss_has_the_gradient_of_the_full_softmax():
  model = SkipThoughts(30, 4, 6, 'none', rngs=nnx.Rngs(1), loss_chunk=7)
  states = jax.random.normal(jax.random.key(0), (20, 6))
  targets = jax.random.randint(jax.random.key(1), (20,), 0, 30)
  full = lambda s: -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(model.output(s)), targets[:, None], 1))
  chunked = lambda s: jnp.sum(model.token_nll(s, targets))
  (value, grad), (want, want_grad) = (jax.jit(jax.value_and_grad(f))(states) for f in (chunked, full))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)


def test_decoders_see_the_centre_sentence_only_through_their_initial_state():
  model = SkipThoughts(20, 5, 7, 'ln', rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  batch, other = _batch(rng), _batch(rng)
  swapped = {**batch, 'centre': other['centre'], 'centre_len': other['centre_len']}
  nll = nnx.jit(triple_nll)
  assert not np.allclose(nll(model, batch)[0], nll(model, swapped)[0])  # The centre matters ...
  h = model.encode(batch['centre'], batch['centre_len'])
  model.encode = lambda ids, lengths: h  # ... but only through the vector the encoder hands the decoders.
  np.testing.assert_array_equal(triple_nll(model, batch)[1], triple_nll(model, swapped)[1])


# -- Config, validation, runs ------------------------------------------------------------------------------------------


def test_config_variants_follow_the_paper():
  paper = st_config.get_config('paper,norm=none')
  assert (paper.model.embed_dim, paper.model.hidden, paper.data.vocab_size, paper.batch_size) == (620, 2400, 20_000, 64)
  opt = paper.optimizer
  assert (opt.learning_rate, opt.bias_correction, opt.grad_clip, opt.grad_clip_norm) == (2e-4, False, 'global_norm', 5)
  assert (paper.num_train_steps, paper.eval.every_steps, paper.keep_every_steps) == (1_000_000, 50_000, 50_000)
  assert paper.data.source == 'text' and paper.data.max_len == 30 and paper.eval.inner_folds == 10
  assert st_config.get_config().data.source == 'procedural'
  points = []
  st_config.sweep(lambda **kw: points.append(kw))
  assert points == [{'norm': 'none'}, {'norm': 'ln'}, {'norm': 'rms'}]  # RMSNorm beside LN, beyond the paper.


@pytest.mark.parametrize(
  'override,match',
  [
    ({'model.norm': 'bn'}, r'config.model.norm must be one of none, ln'),
    ({'data.source': 'text'}, r'source=text reads \*.txt files'),
    ({'eval.tasks': ('sick', 'trec')}, r"config.eval.tasks has unknown \['trec'\]"),
    ({'eval.every_steps': 3}, r'config.eval.every_steps=3 differs'),
  ],
)
def test_validate_rejects_bad_values(override, match):
  config = st_config.get_config('smoke')
  with config.unlocked():
    for key, value in override.items():
      section, leaf = key.split('.')
      config[section][leaf] = value
  with pytest.raises(ValueError, match=match):
    st.validate(config)


@pytest.fixture(scope='module', params=['none', 'ln', 'rms'])
def smoke_run(request, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp(f'st_{request.param}'))
  config = st_config.get_config(f'smoke,norm={request.param}')
  return workdir, st.train_and_evaluate(config, workdir)


def test_smoke_run_learns_and_logs_the_downstream_scores(smoke_run):
  workdir, final = smoke_run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  losses = [r['train/nll_per_token'] for r in rows if 'train/nll_per_token' in r]
  assert losses[-1] < losses[0]  # A vocabulary of ~80 words: log(80) = 4.4 nats to start from.
  evals = [r for r in rows if 'eval/downstream/sick/pearson' in r]
  assert [r['step'] for r in evals] == [4, 8]
  assert np.isfinite(final['best/eval/downstream/mr/accuracy'])
  assert -1 <= final['best/eval/downstream/sick/pearson'] <= 1
  model, _ = st.load_trained_model(workdir)
  if model.norm != 'none':  # The run trained the cells its norm names: 4 norms in each of the three GRUs.
    assert_normalized_by(model, model.norm, 12)


def test_evaluate_command_and_figure_from_the_workdir(smoke_run, tmp_path, capsys):
  workdir, final = smoke_run
  assert evaluate.main(['--workdir', workdir, '--checkpoint', 'best']) == 0
  row = capsys.readouterr().out.strip().splitlines()[-1]
  # The standalone evaluation of the best checkpoint repeats the run's own final one.
  assert f'{final["best/eval/downstream/sick/pearson"]:.3f}' in row and row.count('|') == 9
  assert evaluate.main(['--workdir', workdir, '--checkpoint', '4']) == 0
  assert evaluate.main(['--workdir', str(tmp_path / 'none')]) == 3
  assert 'Error:' in capsys.readouterr().err
  out = pictures.plot([workdir], str(tmp_path / 'fig3.png'))
  assert os.path.getsize(out) > 10_000
