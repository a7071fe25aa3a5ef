"""Order-embeddings (Table 2, Figure 1): the metric against a brute-force ranking, the loss against loops, the
encoder under padding, the COCO reader on files written here, the data, a hand-computed training step, a smoke run
and the CLI's errors."""

import json
import os
import sys

import cli_runner
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from norm_checks import assert_normalized_by

from configs import order_embeddings as oe_config
from experiments import loop, order_embeddings
from experiments.data import text
from experiments.order_embeddings import data, evaluate, scenes
from experiments.order_embeddings.model import OrderEmbedding, contrastive_loss, errors, order_violation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------------------
# The metric.


def brute_force_metrics(e: np.ndarray) -> dict[str, float]:
  n = e.shape[1]
  image_ranks = [int(np.flatnonzero(np.argsort(e[i], kind='stable') == i // 5)[0]) for i in range(5 * n)]
  caption_ranks = []
  for j in range(n):
    ranked = list(np.argsort(e[:, j], kind='stable'))
    caption_ranks.append(min(ranked.index(5 * j + k) for k in range(5)))
  out = {}
  for kind, ranks in (('caption', np.array(caption_ranks)), ('image', np.array(image_ranks))):
    for k in (1, 5, 10):
      out[f'{kind}_r{k}'] = 100.0 * np.mean(ranks < k)
    out[f'{kind}_mean_rank'] = np.mean(ranks) + 1
  return out


@pytest.mark.parametrize('ties', [False, True])
def test_retrieval_metrics_match_a_brute_force_ranking(ties):
  rng = np.random.default_rng(1 + ties)
  n = 13
  e = rng.integers(0, 4, size=(5 * n, n)).astype(float) if ties else rng.normal(size=(5 * n, n))
  e[np.arange(5 * n), np.arange(5 * n) // 5] -= 0.7  # Some signal, so recalls are neither 0 nor 100.
  got = order_embeddings.retrieval_metrics(e)
  want = brute_force_metrics(e)
  assert set(got) == set(want)
  for k in want:
    assert got[k] == pytest.approx(want[k]), k
  assert 0 < got['image_r1'] < 100


def test_retrieval_metrics_of_a_perfect_and_a_reversed_matrix():
  n = 20
  perfect = np.ones((5 * n, n))
  perfect[np.arange(5 * n), np.arange(5 * n) // 5] = 0
  m = order_embeddings.retrieval_metrics(perfect)
  assert m['image_r1'] == m['caption_r1'] == 100 and m['image_mean_rank'] == m['caption_mean_rank'] == 1
  m = order_embeddings.retrieval_metrics(1 - perfect)
  assert m['image_r10'] == 0 and m['image_mean_rank'] == n  # Its own image last of n.
  assert m['caption_mean_rank'] == 5 * n - 4  # The best of its 5 captions behind the other 5n - 5.
  with pytest.raises(ValueError, match=r'\[5N, N\]'):
    order_embeddings.retrieval_metrics(np.zeros((6, 2)))


def test_fold_metrics_average_the_folds_of_chunked_errors():
  rng = np.random.default_rng(0)
  s, v = np.abs(rng.normal(size=(5 * 12, 6))), np.abs(rng.normal(size=(12, 6)))
  for model in ('oe', 'sym'):
    full = np.asarray(errors(jnp.asarray(s), jnp.asarray(v), model))
    np.testing.assert_allclose(evaluate.error_matrix(s, v, model), full, rtol=1e-5, atol=1e-6)
    got = evaluate.fold_metrics(s, v, model, fold_size=4)
    folds = [order_embeddings.retrieval_metrics(full[20 * f : 20 * (f + 1), 4 * f : 4 * (f + 1)]) for f in range(3)]
    assert got['folds'] == 3
    for k in evaluate.METRICS:
      assert got[k] == pytest.approx(np.mean([m[k] for m in folds]), rel=1e-6), (model, k)
  assert evaluate.fold_metrics(s, v, 'oe', fold_size=100)['folds'] == 1  # A split smaller than a fold is one fold.


# ---------------------------------------------------------------------------------------------------------------------
# The model and the loss.


def test_order_violation_and_contrastive_loss_against_loops():
  rng = np.random.default_rng(3)
  s, v = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
  e = np.asarray(order_violation(jnp.asarray(s), jnp.asarray(v)))
  for a in range(4):
    for b in range(4):
      assert e[a, b] == pytest.approx(sum(max(0.0, s[a, d] - v[b, d]) ** 2 for d in range(5)), rel=1e-5)
  margin = 0.3
  want = 0.0
  for i in range(4):  # caption i, image i match
    for j in range(4):
      if i != j:
        want += max(0.0, margin - e[i, j] + e[i, i])  # contrastive image j of caption i
        want += max(0.0, margin - e[j, i] + e[i, i])  # contrastive caption j of image i
  assert float(contrastive_loss(jnp.asarray(e), margin)) == pytest.approx(want, rel=1e-5)


def small_model(norm='ln', model='oe', vocab=11, dim=8):
  return OrderEmbedding(vocab, 12, word_dim=5, dim=dim, norm=norm, model=model, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_caption_encoder_returns_the_last_valid_state_under_padding(norm):
  model = small_model(norm)
  rng = np.random.default_rng(0)
  lengths = np.array([3, 6, 1])
  tokens = rng.integers(2, 11, size=(3, 9)).astype(np.int32)  # Junk after each length: must not matter.
  got = np.asarray(model.encode_captions(jnp.asarray(tokens), jnp.asarray(lengths)))
  for b, n in enumerate(lengths):
    h = jnp.zeros((1, 8))
    for t in range(n):  # The cell by hand, over the valid steps only.
      h, _ = model.encoder(h, model.words(jnp.asarray(tokens[b : b + 1, t])))
    h = np.asarray(h[0])
    want = np.abs(h / np.linalg.norm(h))
    np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_rms_encoder_is_the_ln_encoder_with_rms_norms_in_place_of_its_layer_norms():
  ln, rms = small_model('ln'), small_model('rms')
  assert_normalized_by(ln, 'ln', 4)
  assert_normalized_by(rms, 'rms', 4)
  for dense in ('dense_i', 'dense_h'):  # The same weights from the same seed ...
    np.testing.assert_array_equal(getattr(ln.encoder, dense).kernel[...], getattr(rms.encoder, dense).kernel[...])
  tokens = jnp.asarray(np.random.default_rng(0).integers(2, 11, size=(3, 6)), jnp.int32)
  lengths = jnp.asarray([6, 4, 2])
  got = [np.asarray(m.encode_captions(tokens, lengths)) for m in (ln, rms)]
  assert np.max(np.abs(got[0] - got[1])) > 1e-3  # ... and yet another encoder.


def test_sym_keeps_signs_and_oe_is_non_negative():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 12)), jnp.float32)
  v_oe, v_sym = small_model(model='oe').encode_images(x), small_model(model='sym').encode_images(x)
  np.testing.assert_allclose(v_oe, np.abs(v_sym), rtol=1e-6)
  assert (np.asarray(v_sym) < 0).any()
  np.testing.assert_allclose(small_model(model='sym').errors(v_sym, v_sym), -v_sym @ v_sym.T, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Data.


def write_coco(root, num_images=(4, 3, 3), bad_split=None):
  os.makedirs(os.path.join(root, 'images', '10crop'))
  rng = np.random.default_rng(0)
  for split, n in zip(data.SPLITS, num_images, strict=True):
    np.save(os.path.join(root, 'images', '10crop', f'{split}.npy'), rng.random((n, 16)).astype(np.float32))
    lines = [f'a {split} caption number {i} of image {i // 5}' for i in range(5 * n - (split == bad_split))]
    with open(os.path.join(root, f'{split}.txt'), 'w') as f:
      f.write('\n'.join(lines) + '\n')


def test_coco_reader_on_written_files(tmp_path):
  write_coco(str(tmp_path))
  data.check_source('coco', str(tmp_path))
  config = oe_config.get_config('source=coco')
  config.data.dir = str(tmp_path)
  splits = data.load_splits(config.data)
  assert [splits[s].num_images for s in data.SPLITS] == [4, 3, 3]
  assert splits['val'].captions[7] == 'a val caption number 7 of image 1'
  features = np.load(tmp_path / 'images' / '10crop' / 'test.npy')
  np.testing.assert_array_equal(splits['test'].features(np.array([2, 0])), features[[2, 0]])
  vocab = data.vocabulary(splits, dev_images=1)
  assert 'train' in vocab and 'val' in vocab and 'test' not in vocab  # Train + dev words only.
  assert min(vocab.values()) == 2 and vocab['a'] == 2  # By decreasing count; 0 is EOS and 1 unknown.
  assert text.encode_sentences(['a test caption'], vocab)[0].tolist() == [2, text.UNK, vocab['caption']]


def test_coco_reader_names_a_captions_file_without_5_lines_per_image(tmp_path):
  write_coco(str(tmp_path), bad_split='val')
  with pytest.raises(ValueError, match=r'val\.txt has 14 captions for the 3 images.*exactly 5 per image'):
    data.read_coco_split(str(tmp_path), 'val')
  os.remove(tmp_path / 'test.txt')
  with pytest.raises(ValueError, match=r'lacks 1 file\(s\): .*test\.txt.*coco\.zip'):
    data.check_source('coco', str(tmp_path))


def test_training_order_pairs_each_image_once_with_one_of_its_captions():
  split = data.procedural_split(40, seed=5)
  tokens = text.encode_sentences(split.captions, data.text.build_vocabulary(split.captions))
  source = data.TrainSource(split, tokens, pad_multiple=8)
  order = source.order(0, 3)
  assert len(source) == 40 and sorted(order // 5) == list(range(40))
  np.testing.assert_array_equal(order, source.order(0, 3))  # A function of (seed, epoch) alone.
  assert not np.array_equal(order % 5, source.order(0, 4) % 5)
  batch = source.batch(order[:6])
  assert batch['tokens'].shape[1] % 8 == 0
  np.testing.assert_array_equal(batch['lengths'], [len(tokens[i]) + 1 for i in order[:6]])  # + the EOS step.
  np.testing.assert_allclose(batch['image'], split.features(order[:6] // 5))
  assert (batch['tokens'][np.arange(6), batch['lengths'] - 1] == text.EOS).all()


def test_scene_captions_go_from_general_to_specific():
  rng = np.random.default_rng(0)
  for _ in range(30):
    things = scenes.sample_scene(rng)
    caps = scenes.captions(things, rng)
    assert len(caps) == 5 and [len(c.split()) for c in caps] == sorted(len(c.split()) for c in caps)
    full = caps[4]
    assert full.startswith(scenes.COUNTS[len(things)] + ' objects')
    # Every coloured shape a shorter caption names is one the full caption names too.
    for words in (c.split() for c in caps[1:4]):
      for i, w in enumerate(words[:-1]):
        if w in scenes.COLOURS:
          assert f'{w} {words[i + 1]}' in full, (caps, w)
  image = scenes.render(things, rng)
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  f = scenes.RandomConvEncoder()(np.stack([image, image[::-1]]))
  assert f.shape == (2, 4096) and (f >= 0).all()
  np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
  assert not np.allclose(f[0], f[1])


# ---------------------------------------------------------------------------------------------------------------------
# Config and validation.


def test_config_variants_follow_the_paper():
  paper = oe_config.get_config('paper,norm=none')
  assert (paper.model.word_dim, paper.model.dim, paper.model.margin, paper.model.norm) == (300, 1024, 0.05, 'none')
  assert (paper.batch_size, paper.num_epochs, paper.eval_every_steps, paper.data.source) == (128, 100, 300, 'coco')
  assert (paper.eval.dev_images, paper.eval.fold_size) == (1000, 1000)
  opt = paper.optimizer
  assert (opt.learning_rate, opt.grad_clip, opt.grad_clip_norm, opt.bias_correction) == (
    1e-3,
    'per_tensor_norm',
    2,
    False,
  )
  assert paper.best_metric == 'eval/val/image_r_sum' and paper.best_mode == 'max'
  assert oe_config.get_config('model=sym').model.margin == 0.2
  assert oe_config.get_config().data.source == 'procedural'
  points = []
  oe_config.sweep(lambda **kw: points.append(kw))
  assert points == [
    {'model': 'sym', 'norm': 'none'},
    {'model': 'oe', 'norm': 'none'},
    {'model': 'oe', 'norm': 'ln'},
    {'model': 'oe', 'norm': 'rms'},  # Beyond the paper: RMSNorm beside LN.
  ]


@pytest.mark.parametrize(
  'override,match',
  [
    ({'model.norm': 'bn'}, r'config.model.norm must be one of none, ln'),
    ({'model.model': 'cos'}, r'config.model.model must be one of oe, sym'),
    ({'model.dim': 0}, r'config.model.dim must be a positive int'),
    ({'eval.fold_size': 0}, r'config.eval.fold_size must be a positive int'),
    ({'data.num_train': 10}, r'smaller than one batch'),
    ({'data.source': 'coco', 'data.dir': '/nonexistent/coco'}, r'config.data \(source=.coco.*coco\.zip'),
  ],
)
def test_validate_rejects_bad_values(override, match):
  config = oe_config.get_config('smoke')
  for key, value in override.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  with pytest.raises(ValueError, match=match):
    order_embeddings.validate(config)


@pytest.mark.parametrize(
  'args,match',
  [
    (['--config=configs/order_embeddings.py:smoke,model=cos'], 'config.model.model must be one of oe, sym'),
    (['--config=configs/order_embeddings.py:smoke,source=coco'], 'set config.data.dir'),
  ],
)
def test_cli_bad_input_exits_2_with_one_error_and_no_traceback(tmp_path, args, match):
  cmd = [sys.executable, '-m', 'experiments.order_embeddings', *args, f'--workdir={tmp_path / "w"}']
  result = cli_runner.run(cmd, cwd=ROOT, timeout=120)
  assert result.returncode == 2
  assert result.stderr.count('Error:') == 1 and match in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'w').exists()


# ---------------------------------------------------------------------------------------------------------------------
# One training step by hand, and a smoke run.


def plain_loss(p: dict, batch: dict, margin: float) -> jax.Array:
  """The LN-GRU order-embedding loss in plain jnp from the parameters alone (eq. 26-28), without the library."""

  def ln(x, g, b):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * g + b

  hidden = p['wh'].shape[0]
  tokens, lengths = batch['tokens'], batch['lengths']

  def step(h, t):
    xw, uh = p['emb'][tokens[:, t]] @ p['wx'], h @ p['wh']
    gates = jax.nn.sigmoid(ln(xw[:, : 2 * hidden], *p['ln_ig']) + ln(uh[:, : 2 * hidden], *p['ln_hg']))
    r, z = gates[:, :hidden], gates[:, hidden:]
    n = jnp.tanh(ln(xw[:, 2 * hidden :], *p['ln_ic']) + r * ln(uh[:, 2 * hidden :], *p['ln_hc']))
    return jnp.where((t < lengths)[:, None], (1 - z) * n + z * h, h), None  # Past its length: the state stays.

  h, _ = jax.lax.scan(step, jnp.zeros((len(tokens), hidden)), jnp.arange(tokens.shape[1]))
  s = jnp.abs(h / jnp.linalg.norm(h, axis=1, keepdims=True))
  v = batch['image'] @ p['wi'] + p['bi']
  v = jnp.abs(v / jnp.linalg.norm(v, axis=1, keepdims=True))
  e = jnp.sum(jnp.maximum(0.0, s[:, None, :] - v[None, :, :]) ** 2, axis=-1)  # [caption, image]
  match = jnp.diagonal(e)
  other = 1.0 - jnp.eye(len(e))
  # Caption i against contrastive image j (e[i, j]); image i against contrastive caption j (e[j, i]).
  return jnp.sum(
    other * (jnp.maximum(0.0, margin - e + match[:, None]) + jnp.maximum(0.0, margin - e.T + match[:, None]))
  )


def test_one_training_step_matches_a_hand_computation(tmp_path):
  config = oe_config.get_config('smoke,norm=ln')
  config.batch_size = 6
  config.num_train_steps = 1
  config.log_every_steps = 1
  config.data.num_val = config.data.num_test = config.eval.dev_images = config.eval.fold_size = 8  # Quick evals.
  task = order_embeddings.build_task(config)
  m = loop.init_model(config, task)
  params = {
    'emb': m.words.embedding[...],
    'wx': m.encoder.dense_i.kernel[...],
    'wh': m.encoder.dense_h.kernel[...],
    'ln_ig': (m.encoder.ln_i_gates.scale[...], m.encoder.ln_i_gates.bias[...]),
    'ln_hg': (m.encoder.ln_h_gates.scale[...], m.encoder.ln_h_gates.bias[...]),
    'ln_ic': (m.encoder.ln_i_cand.scale[...], m.encoder.ln_i_cand.bias[...]),
    'ln_hc': (m.encoder.ln_h_cand.scale[...], m.encoder.ln_h_cand.bias[...]),
    'wi': m.image.kernel[...],
    'bi': m.image.bias[...],
  }
  batch = task.train_data.batch(task.train_data.order(config.seed, 0)[: config.batch_size])
  loss, grads = jax.jit(jax.value_and_grad(plain_loss), static_argnums=2)(params, batch, config.model.margin)
  final = order_embeddings.train_and_evaluate(config, str(tmp_path))
  assert final['train/loss'] == pytest.approx(float(loss), rel=1e-5)

  # The order-embedding code's update: each gradient tensor clipped to norm 2, then its Adam's first step, which is
  # lr * sqrt(0.999) / 0.9 * 0.1 / sqrt(0.001) = 3.5 lr times the sign of the gradient where |g| >> eps (bias-corrected
  # Adam would take lr). Where |g| is within ~1000 eps, float32 rounding of g moves that ratio: those are not compared
  # (two float32 computations of these gradients, the hand scan and unroll's fused GRU, differ by up to ~4e-6).
  opt = config.optimizer
  trained = loop.load_model(str(tmp_path), task, which='latest')
  got = {
    'emb': trained.words.embedding,
    'wx': trained.encoder.dense_i.kernel,
    'wi': trained.image.kernel,
    'ln_ig': (trained.encoder.ln_i_gates.scale, trained.encoder.ln_i_gates.bias),
  }
  factor = np.sqrt(1 - (1 - opt.b2)) / (1 - (1 - opt.b1))
  for key, value in got.items():
    for p, g, new in zip(*(jax.tree.leaves(x[key]) for x in (params, grads, {key: value})), strict=True):
      g = np.asarray(g, np.float64)
      g = g * min(1.0, opt.grad_clip_norm / np.linalg.norm(g))
      m1, v1 = (1 - opt.b1) * g, (1 - opt.b2) * g**2
      want = np.asarray(p, np.float64) - opt.learning_rate * factor * m1 / (np.sqrt(v1) + opt.eps)
      clear = np.abs(g) > 1e-5
      assert clear.mean() > 0.5, key
      np.testing.assert_allclose(new[...][clear], want[clear], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('oe_smoke'))
  return workdir, order_embeddings.train_and_evaluate(oe_config.get_config('smoke'), workdir)


def test_smoke_run_selects_on_validation_and_tests_in_folds(smoke_run):
  workdir, final = smoke_run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  val = [(r['step'], r['eval/val/image_r_sum']) for r in rows if 'eval/val/image_r_sum' in r]
  assert losses[-1] < losses[0]
  assert [s for s, _ in val] == [8, 16]
  assert not any('eval/test/image_r1' in r for r in rows)  # The test split only at the end, on the best model.
  best_step = max(val, key=lambda sv: (sv[1], -sv[0]))[0]
  assert final['best/step'] == best_step
  assert final['best/eval/test/folds'] == 2  # 96 test images in folds of 48.
  for k in evaluate.METRICS:
    assert np.isfinite(final[f'best/eval/test/{k}'])
  assert os.path.getsize(os.path.join(workdir, 'retrieval.png')) > 1000
  model, vocab = order_embeddings.load_trained_model(workdir)
  assert model.model == 'oe' and vocab['a'] == 2
  assert_normalized_by(model, 'ln', 4)


def test_rms_smoke_run_trains_an_rms_gru_encoder(tmp_path):
  workdir = str(tmp_path)
  final = order_embeddings.train_and_evaluate(oe_config.get_config('smoke,norm=rms'), workdir)
  losses = [r['train/loss'] for r in loop.read_rows(workdir) if 'train/loss' in r]
  assert losses[-1] < losses[0]
  assert all(np.isfinite(final[f'best/eval/test/{k}']) for k in evaluate.METRICS)
  model, _ = order_embeddings.load_trained_model(workdir)
  assert_normalized_by(model, 'rms', 4)
