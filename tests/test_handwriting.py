"""Handwriting synthesis (Figure 5): the mixture and window against direct computations, the readers on files the
tests write (Hershey .jhf fonts, IAM-OnDB XML and transcriptions), a one-step golden update, smoke runs of both
variants, the sampling command, and the CLI's bad-input messages."""

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

import layernorm.single_step
from configs import handwriting as hw_config
from experiments import handwriting, loop
from experiments.handwriting import data, figure5, hershey, iam, model, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A font of three glyphs (' ', '!', '"') in the .jhf layout: '!' a vertical bar and a dot, '"' one diagonal stroke
# whose record wraps onto a second line.
TINY_JHF = '12345  1JZ\n12345  5MWRFRT RRY\n12345  3JZNF\nVM\n'


def write_font(directory, name='tiny', text=TINY_JHF):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, f'{name}.jhf'), 'w') as f:
    f.write(text)
  return os.path.join(directory, f'{name}.jhf')


# ---------------------------------------------------------------------------------------------------------------------
# Mixture density and soft window.


def numpy_mixture_nll(y, target, m):
  """-log p(target) with explicit 2x2 covariances, float64: the textbook bivariate normal and Graves' Bernoulli."""
  y, target = np.asarray(y, np.float64), np.asarray(target, np.float64)
  e_hat = y[0]
  pi_hat, mu1, mu2, s1_hat, s2_hat, rho_hat = (y[1 + i * m : 1 + (i + 1) * m] for i in range(6))
  pi = np.exp(pi_hat - pi_hat.max())
  pi /= pi.sum()
  density = 0.0
  for j in range(m):
    s1, s2, rho = np.exp(s1_hat[j]), np.exp(s2_hat[j]), np.tanh(rho_hat[j])
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    d = target[:2] - np.array([mu1[j], mu2[j]])
    density += pi[j] * np.exp(-0.5 * d @ np.linalg.inv(cov) @ d) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
  e = 1 / (1 + np.exp(e_hat))
  return -np.log(density) - np.log(e if target[2] == 1 else 1 - e)


def test_mixture_nll_matches_a_direct_numpy_computation():
  m = 4
  rng = np.random.default_rng(0)
  y = rng.normal(size=(6, 1 + 6 * m)).astype(np.float32)
  target = np.concatenate([rng.normal(size=(6, 2)), (rng.uniform(size=(6, 1)) < 0.5)], axis=1).astype(np.float32)
  got = model.mixture_nll(jnp.asarray(y), jnp.asarray(target), m)
  want = [numpy_mixture_nll(y[i], target[i], m) for i in range(6)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mixture_nll_stays_finite_for_extreme_outputs():
  m = 3
  y = jnp.asarray(np.random.default_rng(1).normal(scale=200.0, size=(5, 1 + 6 * m)), jnp.float32)
  target = jnp.asarray([[50.0, -50.0, 1.0]] * 5)
  value, grad = jax.jit(jax.value_and_grad(lambda y: model.mixture_nll(y, target, m).sum()))(y)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_window_on_hand_checkable_cases():
  # One Gaussian: alpha = e^0 = 1, beta = e^0 = 1, kappa = 0.5 + e^0 = 1.5 -> phi(u) = exp(-(1.5 - u)^2).
  params = jnp.zeros((1, 3))
  onehot = jax.nn.one_hot(jnp.array([[2, 0, 1]]), 3)  # characters c_1 = 2, c_2 = 0, c_3 = 1.
  w, kappa, phi, _ = model.soft_window(params, jnp.array([[0.5]]), onehot, jnp.array([[1.0, 1.0, 0.0]]))
  e = np.exp(-0.25)
  np.testing.assert_allclose(kappa, [[1.5]], rtol=1e-6)
  np.testing.assert_allclose(phi, [[e, e, 0.0]], rtol=1e-6)  # u = 3 is padding: masked out.
  np.testing.assert_allclose(w, [[e, 0.0, e]], rtol=1e-6)  # phi(1) c_1 + phi(2) c_2.
  # Two Gaussians, alpha = (2, 1), beta = (e, 1), kappa advancing by (1, e): phi sums both terms.
  params = jnp.array([[np.log(2.0), 0.0, 1.0, 0.0, 0.0, 1.0]])
  _, kappa, phi, _ = model.soft_window(
    params, jnp.array([[0.0, 1.0]]), jax.nn.one_hot(jnp.zeros((1, 2), int), 2), jnp.ones((1, 2))
  )
  np.testing.assert_allclose(kappa, [[1.0, 1.0 + np.e]], rtol=1e-6)
  u = np.array([1.0, 2.0])
  want = 2 * np.exp(-np.e * (1.0 - u) ** 2) + np.exp(-((1.0 + np.e - u) ** 2))
  np.testing.assert_allclose(phi[0], want, rtol=1e-5)


def small_synthesis_net(norm='none'):
  sizes = dict(hidden=8, layers=2, window_mixtures=3, output_mixtures=2)
  return model.SynthesisNetwork(5, **sizes, norm=norm, rngs=nnx.Rngs(0))


def test_rms_network_steps_on_the_fused_rms_kernels_where_the_ln_one_has_layer_norms(monkeypatch):
  """Same seed, same weights; each layer's `layernorm.step` runs the fused kernel with RMS norms (seen by a spy on
  the fused path), and the step's output is the cells' own call's, and not the LN network's."""
  ln, rms = small_synthesis_net('ln'), small_synthesis_net('rms')
  assert_normalized_by(ln, 'ln', 6)  # 3 in each of the two LSTMs.
  assert_normalized_by(rms, 'rms', 6)
  for a, b in zip(ln.cells, rms.cells, strict=True):
    np.testing.assert_array_equal(a.dense_i.kernel[...], b.dense_i.kernel[...])
  fused_norms = []
  original = layernorm.single_step.fused_rnn.run

  def spy(kind, fused, *args):
    fused_norms.append(fused[1])
    return original(kind, fused, *args)

  monkeypatch.setattr(layernorm.single_step.fused_rnn, 'run', spy)
  rng = np.random.default_rng(2)
  onehot, mask = jax.nn.one_hot(rng.integers(0, 5, (2, 6)), 5), jnp.ones((2, 6))
  x = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
  y_rms = rms.step(rms.initial_state(2), x, onehot, mask)[1][0]
  assert fused_norms == ['rms', 'rms']
  with monkeypatch.context() as m:  # Every layer through the cell's own call: the same numbers.
    m.setattr(model.layernorm, 'step', lambda cell, carry, x: cell(carry, x))
    np.testing.assert_allclose(rms.step(rms.initial_state(2), x, onehot, mask)[1][0], y_rms, rtol=1e-5, atol=1e-6)
  y_ln = ln.step(ln.initial_state(2), x, onehot, mask)[1][0]
  assert np.max(np.abs(np.asarray(y_ln) - np.asarray(y_rms))) > 1e-3


def test_the_models_kappa_is_the_running_sum_of_exp_kappa_hat(monkeypatch):
  """Step by step through the network: the window's position kappa_t = kappa_{t-1} + exp(kappa^_t) (Graves eq. 51),
  with kappa^_t the window layer's output at t (seen by a spy on `soft_window`), carried from one step to the next."""
  net = small_synthesis_net()
  k = net.window_mixtures
  seen = []
  original = model.soft_window

  def spy(params_Bx3K, kappa_prev_BxK, onehot_BxUxC, mask_BxU):
    seen.append(np.asarray(params_Bx3K[:, 2 * k :], np.float64))
    return original(params_Bx3K, kappa_prev_BxK, onehot_BxUxC, mask_BxU)

  monkeypatch.setattr(model, 'soft_window', spy)
  rng = np.random.default_rng(1)
  onehot = jax.nn.one_hot(rng.integers(0, 5, (2, 6)), 5)
  mask = jnp.ones((2, 6))
  state = net.initial_state(2)
  kappas = []
  for x in rng.normal(size=(5, 2, 3)).astype(np.float32):
    state, (_, _, (_, _, kappa)) = net.step(state, jnp.asarray(x), onehot, mask)
    kappas.append(np.asarray(kappa, np.float64))
  np.testing.assert_allclose(np.stack(kappas), np.cumsum(np.exp(np.stack(seen)), axis=0), rtol=1e-5)


def test_the_window_moves_past_the_first_character():
  """A small random net over 200 points: phi's centre starts at character 1 and ends several characters on (each
  step advances kappa by about exp(-3), the initial bias); a window that forgot kappa would stay at character 1."""
  net = small_synthesis_net()
  rng = np.random.default_rng(0)
  num_points, num_chars = 200, 12
  points = rng.normal(size=(1, num_points, 3)).astype(np.float32)
  chars = rng.integers(0, 5, (1, num_chars))
  _, phi = nnx.jit(lambda net, p, c, n: net(p, c, n))(net, points, chars, jnp.array([num_chars]))
  phi = np.asarray(phi[0], np.float64)
  centre = (phi * np.arange(1, num_chars + 1)).sum(1) / phi.sum(1)
  assert centre[0] < 1.5 and centre[-1] > 3.0, centre[[0, -1]]


def test_paper_sized_network_is_finite_over_500_steps():
  # Built under jit: eager initialisation of the 400-unit matrices takes ~30 s on a loaded 2-core machine.
  net = nnx.jit(lambda: model.SynthesisNetwork(57, hidden=400, norm='ln', rngs=nnx.Rngs(0)))()
  rng = np.random.default_rng(0)
  points = rng.normal(scale=3.0, size=(1, 501, 3)).astype(np.float32)
  points[..., 2] = rng.uniform(size=(1, 501)) < 0.05
  batch = {
    'points': points,
    'length': np.array([501]),
    'chars': rng.integers(0, 57, (1, 60)),
    'text_length': np.array([60]),
  }
  nll, count = jax.jit(lambda b: model.sequence_nll(net, b))(batch)
  assert count[0] == 500 and np.isfinite(nll).all()
  params = sum(p.size for p in jax.tree.leaves(nnx.state(net, nnx.Param)))
  assert 3.5e6 < params < 3.9e6  # Graves' "about 3.7M weights" (ours has LN gains and biases on top).


# ---------------------------------------------------------------------------------------------------------------------
# Readers.


def test_jhf_parser_and_renderer_give_the_glyph_strokes(tmp_path):
  glyphs = hershey.parse_jhf(write_font(str(tmp_path)))
  assert list(glyphs) == [' ', '!', '"']
  strokes, left, right = glyphs['!']
  assert (left, right) == (-5, 5)
  np.testing.assert_array_equal(strokes[0], [[0, 12], [0, -2]])  # 'F' = -12 -> y = 12 (up), 'T' = 2 -> -2.
  np.testing.assert_array_equal(strokes[1], [[0, -7]])
  np.testing.assert_array_equal(glyphs['"'][0][0], [[-4, 12], [4, 5]])  # The wrapped record.
  # A plain writer, step 2: '!' (left bearing -5, so drawn at x = 5) is a 14-unit bar sampled every 2 units (8 points)
  # and a one-point dot; '"' starts at the advance of '!' (10) minus its own left bearing (-8): x = 18, and its
  # 10.6-unit diagonal takes 7 points.
  line = hershey.render_line('!"', glyphs, hershey.Writer(font='tiny', speed=2.0), np.random.default_rng(0))
  assert line.shape == (8 + 1 + 7, 3)
  np.testing.assert_array_equal(np.flatnonzero(line[:, 2]), [7, 8, 15])
  np.testing.assert_allclose(line[:8], np.stack([np.full(8, 5.0), np.linspace(12, -2, 8), np.eye(8)[7]], 1), atol=1e-6)
  np.testing.assert_allclose(line[9, :2], [14, 12], atol=1e-6)
  np.testing.assert_allclose(line[15, :2], [22, 5], atol=1e-6)
  steps = np.linalg.norm(np.diff(line[9:, :2], axis=0), axis=1)
  assert np.all(steps <= 2.0 + 1e-5)
  # Slant shears x by y; a joined writer keeps the pen down from '!' into '"' (one stroke fewer).
  slanted = hershey.render_line('!', glyphs, hershey.Writer(font='tiny', slant=0.5), np.random.default_rng(0))
  np.testing.assert_allclose(slanted[0, :2], [5 + 0.5 * 12, 12.0], atol=1e-6)
  joined = hershey.render_line('!"', glyphs, hershey.Writer(font='tiny', join=1.0), np.random.default_rng(0))
  assert joined[:, 2].sum() == 2


def test_jhf_parser_names_the_file_of_a_cut_record(tmp_path):
  path = write_font(str(tmp_path), 'bad', '12345  9JZRF\n')
  with pytest.raises(ValueError, match=r'bad\.jhf, record 1: 9 vertices announced'):
    hershey.parse_jhf(path)


def test_offsets_and_normalization_round_trip():
  rng = np.random.default_rng(0)
  lines = [
    (np.concatenate([rng.normal(size=(n, 2)).cumsum(0), rng.uniform(size=(n, 1)) < 0.2], 1).astype(np.float32), 'ab')
    for n in (5, 9)
  ]
  mean, std = data.offset_statistics(lines, 20)
  encoded = data.encode_split(lines, 20, 4, mean, std)
  assert encoded['points'].shape == (2, 20, 3) and list(encoded['length']) == [5, 9]
  first = data.decode_points(encoded['points'][0, :5], mean, std)
  np.testing.assert_allclose(first[:, :2], lines[0][0][:, :2] - lines[0][0][0, :2], atol=1e-5)
  valid = np.concatenate([encoded['points'][0, :5], encoded['points'][1, :9]])[:, :2]
  np.testing.assert_allclose(valid.mean(0), 0, atol=1e-6)
  np.testing.assert_allclose(valid.std(0), 1, atol=1e-5)
  assert list(encoded['chars'][0]) == [2, 3, 0, 0] and data.encode_text('A.?')[2] == 0


def write_iam(root, lines_per_form=(2,), extra_text_line=False, bad_xml=False):
  """A miniature IAM-OnDB: forms a01-000u.. with `lines_per_form[k]` lines, in every split file."""
  forms = []
  for k, n in enumerate(lines_per_form):
    form = f'a01-00{k}u'
    forms.append(form)
    stroke_dir = os.path.join(root, 'lineStrokes', 'a01', f'a01-00{k}')
    text_dir = os.path.join(root, 'ascii', 'a01', f'a01-00{k}')
    os.makedirs(stroke_dir, exist_ok=True)
    os.makedirs(text_dir, exist_ok=True)
    texts = [f'line {i} of {form}' for i in range(n + int(extra_text_line))]
    with open(os.path.join(text_dir, f'{form}.txt'), 'w') as f:
      f.write('OCR:\n\nsome ocr text\n\nCSR:\n\n' + '\n'.join(texts) + '\n')
    for i in range(n):
      points = ''.join(f'<Point x="{100 + 10 * j + i}" y="{200 + j}" time="0.{j}"/>' for j in range(3))
      xml = (
        f'<?xml version="1.0"?><WhiteboardCaptureSession><StrokeSet><Stroke colour="black" start_time="0" '
        f'end_time="1">{points}</Stroke><Stroke>{points}<Point x="9999" y="0" time="1"/></Stroke>'
        '</StrokeSet></WhiteboardCaptureSession>'
      )
      with open(os.path.join(stroke_dir, f'{form}-{i + 1:02d}.xml'), 'w') as f:
        f.write(xml[:-30] if bad_xml and i == 0 else xml)
  for name in iam.SPLIT_FILES.values():
    with open(os.path.join(root, name), 'w') as f:
      f.write('\n'.join(forms) + '\n')


def test_iam_reader_on_files_in_the_published_layout(tmp_path):
  write_iam(str(tmp_path), (2, 1))
  splits = iam.load_iam(str(tmp_path), max_step=1_000.0)
  assert [t for _, t in splits['train']] == ['line 0 of a01-000u', 'line 1 of a01-000u', 'line 0 of a01-001u']
  points, _ = splits['train'][1]
  # Two strokes of three points; the 9,999-unit jump inside the second stroke is removed and its pen-up kept.
  assert points.shape == (6, 3)
  np.testing.assert_array_equal(points[:3, :2], [[101, -200], [111, -201], [121, -202]])  # y flipped to point up.
  np.testing.assert_array_equal(points[:, 2], [0, 0, 1, 0, 0, 1])


def test_iam_source_encodes_the_splits_with_training_statistics(tmp_path):
  write_iam(str(tmp_path), (2, 1))
  config = hw_config.get_config('smoke,source=iam')
  config.data.dir = str(tmp_path)
  handwriting.validate(config)
  splits, meta = data.load_splits(config.data)
  assert set(splits) == {'train', 'valid', 'test'} and splits['train']['points'].shape == (3, config.data.seq_len, 3)
  lines = iam.load_iam(str(tmp_path), config.data.max_step)['train']
  np.testing.assert_allclose(meta['offset_mean'], data.offset_statistics(lines, config.data.seq_len)[0])
  assert list(splits['train']['text_length']) == [config.data.max_chars] * 3  # 'line 0 of a01-000u' cut to 8.


def test_iam_reader_names_a_malformed_file_and_a_count_mismatch(tmp_path):
  write_iam(str(tmp_path / 'xml'), (1,), bad_xml=True)
  with pytest.raises(ValueError, match=r'a01-000u-01\.xml: malformed XML'):
    iam.load_iam(str(tmp_path / 'xml'), 1_000.0)
  write_iam(str(tmp_path / 'count'), (2,), extra_text_line=True)
  with pytest.raises(ValueError, match=r'a01-000u\.txt: 3 transcription lines but 2 stroke files'):
    iam.load_iam(str(tmp_path / 'count'), 1_000.0)


# ---------------------------------------------------------------------------------------------------------------------
# Config, training, sampling.


def test_config_variants_follow_the_paper():
  paper = hw_config.get_config('paper,norm=none')
  sizes = {k: paper.model[k] for k in handwriting.task.SIZE_FIELDS}
  assert sizes == {'hidden': 400, 'layers': 3, 'window_mixtures': 10, 'output_mixtures': 20}
  assert (paper.model.norm, paper.data.source, paper.batch_size, paper.data.seq_len) == ('none', 'iam', 8, 500)
  assert hw_config.get_config().data.source == 'hershey' and hw_config.get_config('source=iam').data.source == 'iam'
  points = []
  hw_config.sweep(lambda **kw: points.append(kw))
  assert points == [{'norm': 'none'}, {'norm': 'ln'}, {'norm': 'rms'}]  # RMSNorm beside LN, beyond the paper.


def smoke_config(tmp_path, norm):
  config = hw_config.get_config(f'smoke,norm={norm}')
  font_dir = str(tmp_path / 'fonts')
  for name in config.data.fonts.split(','):  # The tests need no Debian package: one made-up font per face.
    write_font(font_dir, name, TINY_JHF + ''.join('12345  3JZNFVM\n' for _ in range(93)))
  config.data.dir = font_dir
  return config


@pytest.fixture(scope='module')
def smoke_runs(tmp_path_factory):
  """{norm: (workdir, final metrics)} of a smoke run of each variant."""
  runs = {}
  for norm in handwriting.NORMS:
    tmp_path = tmp_path_factory.mktemp(f'hw_{norm}')
    workdir = str(tmp_path / 'run')
    runs[norm] = workdir, handwriting.train_and_evaluate(smoke_config(tmp_path, norm), workdir)
  return runs


@pytest.mark.parametrize('norm', ['none', 'ln', 'rms'])
def test_smoke_run_learns_and_records_what_sampling_needs(smoke_runs, norm):
  workdir, metrics = smoke_runs[norm]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  nlls = [r['eval/valid/nll'] for r in rows if 'eval/valid/nll' in r]
  assert len(losses) >= 3 and np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert len(nlls) >= 2 and nlls[-1] < nlls[0]
  assert metrics['best/step'] > 0
  meta = loop.read_task_metadata(workdir)
  assert meta['alphabet'] == data.ALPHABET and len(meta['offset_std']) == 2
  net, _ = handwriting.load_trained_model(workdir)
  assert net.norm == norm and type(net.cells[0]) is model.CELLS[norm]
  if norm != 'none':
    assert_normalized_by(net, norm, 3 * net.num_layers)


def test_sample_writes_pictures_from_the_workdir_alone(smoke_runs, tmp_path):
  workdir, _ = smoke_runs['ln']
  out = str(tmp_path / 'hw.png')
  assert sample.main(['--workdir', workdir, '--text', 'a b.', '--out', out, '--bias', '1', '--max_points', '30']) == 0
  import matplotlib.image

  assert matplotlib.image.imread(out).ndim == 3 and os.path.isfile(str(tmp_path / 'hw_window.png'))
  net, _ = handwriting.load_trained_model(workdir)
  points, phi = sample.generate(net, data.encode_text('!!'), np.zeros(3, np.float32), 30, 0.0, 0)
  assert points.shape[1] == 3 and phi.shape == (len(points), 2) and set(np.unique(points[:, 2])) <= {0.0, 1.0}


def test_figure5_plots_the_logged_curves(smoke_runs, tmp_path):
  workdir, _ = smoke_runs['none']
  label, curves = figure5.curves(workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert label == 'Baseline'
  assert curves['test'] == (
    [r['step'] for r in rows if 'eval/test/nll' in r],
    [r['eval/test/nll'] for r in rows if 'eval/test/nll' in r],
  )
  out = str(tmp_path / 'fig5.png')
  assert figure5.main([workdir, smoke_runs['ln'][0], '--out', out]) == 0 and os.path.getsize(out) > 0
  assert figure5.main([str(tmp_path / 'missing'), '--out', out]) == 2


def test_one_training_step_is_adam_on_the_loss_of_the_first_batch(tmp_path):
  config = smoke_config(tmp_path, 'ln')
  config.num_train_steps, config.log_every_steps = 1, 1
  task = handwriting.build_task(config)
  init = loop.init_model(config, task)
  graph, params, rest = nnx.split(init, nnx.Param, ...)
  idx = np.random.default_rng([config.seed, 0]).permutation(len(task.train_data['points']))[: config.batch_size]
  batch = {k: jnp.asarray(v[idx]) for k, v in task.train_data.items()}
  loss, grads = jax.jit(jax.value_and_grad(lambda p: handwriting.loss_fn(nnx.merge(graph, p, rest), batch, None)[0]))(
    params
  )
  flat = lambda tree: dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  g, p = flat(grads), flat(params)
  norm = np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64))) for v in g.values()))
  scale = min(1.0, config.optimizer.grad_clip_norm / norm)  # Global-norm clipping, then Adam's first step.
  opt = config.optimizer
  want = {
    k: np.asarray(p[k], np.float64)
    - opt.learning_rate * (scale * np.asarray(v)) / (np.abs(scale * np.asarray(v, np.float64)) + opt.eps)
    for k, v in g.items()
  }
  final = handwriting.train_and_evaluate(config, str(tmp_path / 'run'))
  np.testing.assert_allclose(final['train/loss'], float(loss), rtol=1e-5)
  trained = flat(nnx.split(loop.load_model(str(tmp_path / 'run'), task), nnx.Param, ...)[1])
  for path, value in trained.items():
    np.testing.assert_allclose(value, want[path], rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


# ---------------------------------------------------------------------------------------------------------------------
# Bad input on the command line: exit 2, one "Error:" naming the fix, no traceback.


def run_cli(*args):
  return cli_runner.run([sys.executable, '-m', *args], cwd=REPO, timeout=120)


@pytest.mark.parametrize(
  'args,match',
  [
    (['experiments.handwriting', '--config', 'configs/handwriting.py:smoke,norm=bn'], 'config.model.norm must be'),
    (['experiments.handwriting', '--config', 'configs/handwriting.py:smoke,source=iam'], 'set config.data.dir'),
    (
      ['experiments.handwriting', '--config', 'configs/handwriting.py:smoke', '--config.data.dir=/nonexistent'],
      'python -m scripts.get_data hershey',
    ),
    (['experiments.handwriting.sample', '--text', '', '--out', 'x.png'], '--text is empty'),
  ],
)
def test_cli_rejects_bad_input(tmp_path, args, match):
  args = [*args, '--workdir', str(tmp_path / 'w')]
  result = run_cli(*args)
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr and result.stderr.count('Error:') == 1
  assert match.lower() in result.stderr.lower()
