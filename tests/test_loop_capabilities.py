"""What the loop offers the experiments beyond MNIST's needs: evaluation in steps, whole-split evaluators, weighted
means, final-only splits, model selection that survives a crash, kept checkpoints, task metadata, batches built on
the host (padded per batch, with masks; memory-mapped arrays) and the optimizers of the paper's code bases.

A linear softmax classifier on 48 examples keeps each run to a second or two.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from experiments import loop
from experiments.loop import best as best_lib
from experiments.loop import checkpoints, metric_writers, optim

NUM_TRAIN, NUM_IN, NUM_CLASSES = 48, 5, 3


class Linear(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.fc = nnx.Linear(NUM_IN, NUM_CLASSES, rngs=rngs)

  def __call__(self, x):
    return self.fc(x)


def loss_fn(model, batch, rng):
  del rng
  nll = optax.softmax_cross_entropy_with_integer_labels(model(batch['x']), batch['y'])
  return jnp.mean(nll), {}


def eval_fn(model, batch, rng):
  del rng
  logits = model(batch['x'])
  return {
    'nll': optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']),
    'error': (jnp.argmax(logits, -1) != batch['y']).astype(jnp.float32),
  }


def make_data(n: int, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, NUM_IN)).astype(np.float32)
  y = np.argmax(x @ np.random.default_rng(0).normal(size=(NUM_IN, NUM_CLASSES)), axis=1).astype(np.int32)
  return {'x': x, 'y': y}


def make_task(**fields) -> loop.Task:
  defaults = dict(
    build_model=Linear,
    loss_fn=loss_fn,
    eval_fn=eval_fn,
    train_data=make_data(NUM_TRAIN, 1),
    eval_data={'valid': make_data(20, 2), 'test': make_data(12, 3)},
  )
  return loop.Task(**{**defaults, **fields})


def make_config(**overrides):
  config = common.base_config()
  config.batch_size = 8  # 6 steps per epoch.
  config.num_epochs = 3
  config.optimizer.learning_rate = 0.1
  config.log_every_steps = 3
  config.checkpoint_every_steps = 6
  config.steps_per_dispatch = 2
  config.eval_batch_size = 8
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def rows_with(workdir: str, key: str) -> list[dict]:
  return [r for r in loop.read_rows(workdir) if key in r]


def numpy_metrics(model, data) -> dict[str, float]:
  logits = np.asarray(model(data['x']), np.float64)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  n = len(data['y'])
  return {'nll': -np.mean(logp[np.arange(n), data['y']]), 'error': np.mean(logits.argmax(1) != data['y'])}


# -- Evaluation cadence ------------------------------------------------------------------------------------------------


def test_eval_every_steps_and_final_only_splits(tmp_path):
  config = make_config(eval_every_steps=4)
  final = loop.train(config, str(tmp_path), make_task(final_only=('test',)))
  valid_rows = rows_with(str(tmp_path), 'eval/valid/error')
  assert [r['step'] for r in valid_rows] == [4, 8, 12, 16, 18]  # Every 4 steps and after the last (18).
  assert [r['epoch'] for r in valid_rows] == [4 / 6, 8 / 6, 2, 16 / 6, 3]
  assert [r['step'] for r in rows_with(str(tmp_path), 'eval/test/error')] == [18]  # Once, at the end.
  model = loop.load_model(str(tmp_path), make_task())
  want = numpy_metrics(model, make_task().eval_data['test'])
  np.testing.assert_allclose(final['eval/test/nll'], want['nll'], rtol=1e-5)


def test_evaluator_sees_the_whole_split_and_weighted_means_weigh(tmp_path):
  valid = make_data(20, 2)
  weights = np.arange(1, 21, dtype=np.float32)
  calls = []

  def whole_split(model, context):
    calls.append((context.step, context.final, context.workdir))
    return numpy_metrics(model, valid)

  def weighted_eval(model, batch, rng):
    values = eval_fn(model, batch, rng)
    return {**values, 'weighted_nll': (values['nll'], batch['w'])}

  task = make_task(
    eval_fn=weighted_eval,
    eval_data={'valid': {**valid, 'w': weights}},
    evaluators={'whole': whole_split},
  )
  final = loop.train(make_config(), str(tmp_path), task)
  assert [c[0] for c in calls] == [6, 12, 18] and not any(c[1] for c in calls) and calls[0][2] == str(tmp_path)
  # The evaluator's numpy metrics over the whole split equal the loop's batched (padded, masked) means.
  np.testing.assert_allclose(final['eval/whole/nll'], final['eval/valid/nll'], rtol=1e-5)
  np.testing.assert_allclose(final['eval/whole/error'], final['eval/valid/error'], atol=1e-7)
  # A (values, weights) metric is sum(w * v) / sum(w) over the split, not a mean of batch means.
  model = loop.load_model(str(tmp_path), task)
  x, y = valid['x'], valid['y']
  logits = np.asarray(model(x), np.float64)
  nll = -(logits - np.log(np.exp(logits).sum(1, keepdims=True)))[np.arange(20), y]
  np.testing.assert_allclose(final['eval/valid/weighted_nll'], np.sum(weights * nll) / np.sum(weights), rtol=1e-5)
  assert not np.isclose(final['eval/valid/weighted_nll'], final['eval/valid/nll'], rtol=1e-3)


# -- Model selection ---------------------------------------------------------------------------------------------------


def selection_config(**overrides):
  # A learning rate high enough to overshoot: validation NLL is not monotone, so best != last.
  return make_config(eval_every_steps=2, best_metric='eval/valid/nll', **{'optimizer.learning_rate': 3.0}, **overrides)


@pytest.fixture(scope='module')
def selected(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('selected'))
  return workdir, loop.train(selection_config(keep_every_steps=2), workdir, make_task(final_only=('test',)))


def test_best_model_is_kept_recorded_and_reported(selected):
  workdir, final = selected
  valid = {r['step']: r['eval/valid/nll'] for r in rows_with(workdir, 'eval/valid/nll') if 'best/step' not in r}
  best_step = min(valid, key=valid.get)
  assert best_step != max(valid), 'the test needs a run whose best model is not its last'
  record = loop.read_best(workdir)
  assert record == {'metric': 'eval/valid/nll', 'mode': 'min', 'value': valid[best_step], 'step': best_step}
  assert final['best/step'] == best_step
  assert final['best/eval/valid/nll'] == valid[best_step]
  best = loop.load_model(workdir, make_task(), which='best')
  kept = loop.load_model(workdir, make_task(), which=best_step)  # keep_every_steps=2 kept every evaluated step.
  for a, b in zip(jax.tree.leaves(nnx.state(best)), jax.tree.leaves(nnx.state(kept)), strict=True):
    np.testing.assert_array_equal(a, b)
  # The test split is evaluated once, on the best model, not the last.
  np.testing.assert_allclose(
    final['best/eval/test/nll'], numpy_metrics(best, make_task().eval_data['test'])['nll'], 1e-5
  )
  assert 'eval/test/nll' not in final
  assert loop.read_status(workdir)['best']['step'] == best_step


def test_kept_checkpoints_survive_beside_the_newest(selected):
  workdir, _ = selected
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert steps == list(range(2, 19, 2))  # Every multiple of keep_every_steps, not just checkpoints_to_keep=3.
  with pytest.raises(FileNotFoundError, match='kept steps'):
    loop.load_model(workdir, make_task(), which=5)


def test_selection_survives_a_crash_and_resume(tmp_path, monkeypatch, selected):
  """Killed after the row of step 10 (last checkpoint at 6): the best record and checkpoint end as uninterrupted."""
  straight_dir, straight_final = selected
  workdir = str(tmp_path)
  original = metric_writers.MetricWriter.write

  def write(self, step, scalars):
    original(self, step, scalars)
    if step == 10:
      raise KeyboardInterrupt  # Stands for a SIGKILL: nothing after the row runs.

  with monkeypatch.context() as m:
    m.setattr(metric_writers.MetricWriter, 'write', write)
    with pytest.raises(KeyboardInterrupt):
      loop.train(selection_config(keep_every_steps=2), workdir, make_task(final_only=('test',)))
  assert loop.read_best(workdir)['step'] <= 10
  final = loop.train(selection_config(keep_every_steps=2), workdir, make_task(final_only=('test',)))
  assert final == straight_final
  assert loop.read_best(workdir) == loop.read_best(straight_dir)
  a = loop.load_model(workdir, make_task(), which='best')
  b = loop.load_model(straight_dir, make_task(), which='best')
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
    np.testing.assert_array_equal(x, y)


# A run of 8 steps that evaluates every step and checkpoints at 3, 6 and 8. Its best steps are 1, 2, 4, 5 (5 stays
# best): two of them (4, 5) fall after checkpoint 3, the step after the best (6) and the last (8) are no best.
CRASH_STEPS = 8


def crash_config():
  return make_config(
    num_train_steps=CRASH_STEPS,
    eval_every_steps=1,
    log_every_steps=1,
    checkpoint_every_steps=3,
    best_metric='eval/valid/nll',
    **{'optimizer.learning_rate': 1.0},
  )


CRASH_TASK = make_task(final_only=('test',))  # One task (one set of functions): every run reuses its compiled steps.


def digests(workdir: str, directory: str) -> dict[int, str]:
  """Step -> the SHA-256 of the whole saved state (parameters and optimizer), for each checkpoint in `directory`."""
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, directory), read_only=True)
  try:
    return {step: checkpointer.meta(step)['digest'] for step in checkpointer.steps()}
  finally:
    checkpointer.close()


def without_timings(rows: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.startswith('perf/')} for r in rows]


@pytest.fixture(scope='module')
def crash_free(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('crash_free'))
  final = loop.train(crash_config(), workdir, CRASH_TASK)
  return workdir, final


def test_the_best_checkpoints_kept_are_those_a_resume_may_roll_back_to(crash_free):
  """Each regular checkpoint's best (where a resume from it rolls back to) and the final best stay; no other."""
  workdir, _ = crash_free
  regular = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  try:
    recorded = {regular.meta(s)['best']['step'] for s in regular.steps()}
  finally:
    regular.close()
  final_best = loop.read_best(workdir)['step']
  assert len(recorded | {final_best}) > 1, 'the test needs a checkpoint whose best is not the final one'
  assert set(digests(workdir, best_lib.BEST_CHECKPOINT_DIR)) == recorded | {final_best}


def test_a_roll_back_restores_the_record_of_the_resumed_step(tmp_path):
  """best.json and the best checkpoints after a resume from step 3: the best as of 3, nothing newer; a best whose
  checkpoint is gone (pruned before a fall-back to an old checkpoint) is dropped rather than named."""
  workdir = str(tmp_path)
  tree = {'w': jnp.arange(3.0)}
  store = best_lib.BestStore(workdir, 'eval/valid/nll', 'min', is_writer=True)
  try:
    store.save(tree, {'value': 2.0, 'step': 2}, keep=set())
    store.save(tree, {'value': 1.0, 'step': 4}, keep={2})  # Checkpoint 3 records best 2: a resume from 3 needs it.
    assert store.steps() == [2, 4] and loop.read_best(workdir)['step'] == 4
    assert store.roll_back({'value': 2.0, 'step': 2}, 3) == {'value': 2.0, 'step': 2}
    assert store.steps() == [2]
    assert loop.read_best(workdir) == {'metric': 'eval/valid/nll', 'mode': 'min', 'value': 2.0, 'step': 2}
    store.save(tree, {'value': 1.0, 'step': 4}, keep=set())  # The re-run saves step 4 again; 2 is no longer needed.
    assert store.steps() == [4]
    assert store.roll_back({'value': 2.0, 'step': 2}, 3) is None
    assert store.steps() == [] and loop.read_best(workdir) is None
  finally:
    store.close()


def crash_points():
  """(step, where): after the best checkpoint (before best.json), after the step's row, after its checkpoint."""
  best_steps, checkpoint_steps = (1, 2, 4, 5), (3, 6, 8)
  points = [(s, 'best checkpoint') for s in best_steps] + [(s, 'row') for s in range(1, CRASH_STEPS + 1)]
  return points + [(s, 'checkpoint') for s in checkpoint_steps]


@pytest.mark.slow
@pytest.mark.parametrize('step,where', crash_points())
def test_a_crash_at_any_step_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, crash_free, step, where):
  """Killed anywhere (the best step, the step after it, the last step): re-running ends bit for bit as uninterrupted.

  A crash after a new best was saved and before that step's regular checkpoint used to make every re-run fail: the
  resumed run found the same step best again and Orbax refused to save checkpoints_best/<step> a second time.
  """
  straight_dir, straight_final = crash_free
  best_steps = sorted(digests(straight_dir, best_lib.BEST_CHECKPOINT_DIR))
  assert loop.read_best(straight_dir)['step'] == 5 and 5 in best_steps, 'the run must keep the best step analysed'
  workdir = str(tmp_path)
  save, write = checkpoints.Checkpointer.save, metric_writers.MetricWriter.write
  wanted_dir = best_lib.BEST_CHECKPOINT_DIR if where == 'best checkpoint' else 'checkpoints'

  def crash_after_save(self, at, tree, meta):
    save(self, at, tree, meta)
    if where != 'row' and at == step and os.path.basename(self.directory) == wanted_dir:
      raise KeyboardInterrupt  # Stands for a SIGKILL: nothing after the save runs.

  def crash_after_row(self, at, scalars):
    write(self, at, scalars)
    if where == 'row' and at == step:
      raise KeyboardInterrupt

  with monkeypatch.context() as m:
    m.setattr(checkpoints.Checkpointer, 'save', crash_after_save)
    m.setattr(metric_writers.MetricWriter, 'write', crash_after_row)
    with pytest.raises(KeyboardInterrupt):
      loop.train(crash_config(), workdir, CRASH_TASK)
  final = loop.train(crash_config(), workdir, CRASH_TASK)
  assert final == straight_final
  assert loop.read_best(workdir) == loop.read_best(straight_dir)
  assert without_timings(loop.read_rows(workdir)) == without_timings(loop.read_rows(straight_dir))
  # Every kept checkpoint, regular and best, holds the same bits at the same steps (final params included).
  assert digests(workdir, 'checkpoints') == digests(straight_dir, 'checkpoints')
  assert digests(workdir, best_lib.BEST_CHECKPOINT_DIR) == digests(straight_dir, best_lib.BEST_CHECKPOINT_DIR)


def test_best_mode_defaults_from_the_metric_name():
  assert loop.default_best_mode('eval/valid/error') == 'min'
  assert loop.default_best_mode('eval/valid/nll_bound') == 'min'
  assert loop.default_best_mode('eval/retrieval/r_sum') == 'max'
  assert loop.default_best_mode('eval/sick/pearson') == 'max'
  assert loop.default_best_mode('eval/valid/accuracy') == 'max'


def test_a_best_metric_that_is_never_logged_is_a_config_error(tmp_path):
  with pytest.raises(loop.ConfigError, match=r"best_metric='eval/valid/acc'.*eval/valid/nll"):
    loop.train(make_config(best_metric='eval/valid/acc'), str(tmp_path), make_task())
  problems = loop.config_problems(make_config(best_metric='valid/error', best_mode='lowest'))
  assert any('best_mode' in p for p in problems) and any("'eval/<split>/<name>'" in p for p in problems)


# -- Task metadata -----------------------------------------------------------------------------------------------------


def test_task_metadata_is_written_for_scripts(tmp_path):
  loop.train(make_config(num_train_steps=2), str(tmp_path), make_task(metadata={'vocab': ['a', 'b'], 'size': 5}))
  assert loop.read_task_metadata(str(tmp_path)) == {'size': 5, 'vocab': ['a', 'b']}


def test_draw_model_loads_from_its_workdir_without_the_data(tmp_path, monkeypatch):
  from configs import draw as draw_config
  from experiments import draw

  config = draw_config.get_config('smoke')
  config.num_train_steps = 1
  draw.train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(draw.task, 'load_splits', lambda *a: pytest.fail('the data set was read'))
  model = draw.load_trained_model(str(tmp_path))
  assert model.image_shape == (8, 8)


# -- Batches built on the host -----------------------------------------------------------------------------------------


class PaddedSequences:
  """Variable-length sequences, padded per batch to the batch's longest, with a 0/1 mask: a host-built Source."""

  def __init__(self, seed: int, n: int):
    rng = np.random.default_rng(seed)
    self.lengths = rng.integers(1, 7, n)
    self.tokens = [rng.normal(size=(length, NUM_IN)).astype(np.float32) for length in self.lengths]
    self.labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    self.seen_shapes = []

  def __len__(self):
    return len(self.lengths)

  def order(self, seed, epoch):
    # Batches of similar length: a seeded shuffle, then a stable sort by length within blocks of 16.
    perm = np.random.default_rng([seed, epoch]).permutation(len(self))
    blocks = [sorted(perm[i : i + 16], key=lambda j: self.lengths[j]) for i in range(0, len(perm), 16)]
    return np.concatenate(blocks)

  def batch(self, indices):
    width = max(self.lengths[i] for i in indices)
    x = np.zeros((len(indices), width, NUM_IN), np.float32)
    mask = np.zeros((len(indices), width), np.float32)
    for row, i in enumerate(indices):
      x[row, : self.lengths[i]] = self.tokens[i]
      mask[row, : self.lengths[i]] = 1
    self.seen_shapes.append(x.shape)
    return {'x': x, 'mask': mask, 'y': self.labels[indices]}


def sequence_loss(model, batch, rng):
  del rng
  pooled = jnp.sum(batch['x'] * batch['mask'][..., None], 1) / jnp.sum(batch['mask'], 1, keepdims=True)
  nll = optax.softmax_cross_entropy_with_integer_labels(model(pooled), batch['y'])
  return jnp.mean(nll), {'tokens': jnp.sum(batch['mask'])}


def sequence_eval(model, batch, rng):
  del rng
  pooled = jnp.sum(batch['x'] * batch['mask'][..., None], 1) / jnp.sum(batch['mask'], 1, keepdims=True)
  nll = optax.softmax_cross_entropy_with_integer_labels(model(pooled), batch['y'])
  return {'nll': nll}


def test_host_built_padded_batches_with_masks(tmp_path):
  source = PaddedSequences(0, NUM_TRAIN)
  task = make_task(loss_fn=sequence_loss, eval_fn=sequence_eval, train_data=source, eval_data={})
  config = make_config(num_epochs=1, log_every_steps=1, steps_per_dispatch=2)
  loop.train(config, str(tmp_path), task)
  order = source.order(config.seed, 0)
  batches = [order[i * 8 : (i + 1) * 8] for i in range(6)]
  # Each step saw its own batch's padding; the stacked dispatch padded the shorter batch's arrays with zeros.
  assert source.seen_shapes == [(8, max(source.lengths[b]), NUM_IN) for b in batches]
  tokens = [r['train/tokens'] for r in rows_with(str(tmp_path), 'train/tokens')]
  assert tokens == [float(sum(source.lengths[b])) for b in batches]  # Zero padding never counts as a token.
  # Padding to the global maximum instead (an ArraySource of pre-padded arrays) trains the same model.
  width = max(source.lengths)
  padded = source.batch(np.arange(NUM_TRAIN))
  padded = {
    k: v if v.ndim == 1 else np.pad(v, [(0, 0), (0, width - v.shape[1])] + [(0, 0)] * (v.ndim - 2))
    for k, v in padded.items()
  }

  class SameOrder(loop.ArraySource):
    order = source.order

  other = str(tmp_path / 'prepadded')
  loop.train(
    config, other, make_task(loss_fn=sequence_loss, eval_fn=sequence_eval, train_data=SameOrder(padded), eval_data={})
  )
  for a, b in zip(
    jax.tree.leaves(nnx.state(loop.load_model(str(tmp_path), task))),
    jax.tree.leaves(nnx.state(loop.load_model(other, task))),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_memory_mapped_arrays_train_as_in_memory_ones(tmp_path):
  data = make_data(NUM_TRAIN, 1)
  for name, array in data.items():
    np.save(tmp_path / f'{name}.npy', array)
  mapped = {name: np.load(tmp_path / f'{name}.npy', mmap_mode='r') for name in data}
  assert isinstance(mapped['x'], np.memmap)
  a = loop.train(make_config(num_epochs=1), str(tmp_path / 'a'), make_task(train_data=loop.ArraySource(mapped)))
  b = loop.train(make_config(num_epochs=1), str(tmp_path / 'b'), make_task(train_data=data))
  assert a == b


# -- Optimizers --------------------------------------------------------------------------------------------------------


def opt_config(**fields):
  opt = common.base_config().optimizer
  opt.update(fields)
  assert not optim.optimizer_problems(opt), optim.optimizer_problems(opt)
  return opt


GRADS = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([[0.5, 0.0], [0.0, 0.5]])}  # Norms 5 and sqrt(0.5).
PARAMS = jax.tree.map(jnp.zeros_like, GRADS)


def first_update(opt) -> dict:
  tx = optim.make_optimizer(opt, 10)
  return tx.update(GRADS, tx.init(PARAMS), PARAMS)[0]


def test_per_tensor_clipping_scales_each_tensor_on_its_own():
  clip = optim.clip_per_tensor_norm(2.0)
  out, _ = clip.update(GRADS, clip.init(PARAMS))
  np.testing.assert_allclose(out['a'], np.array([3.0, 4.0]) * 2 / 5, rtol=1e-6)  # Norm 5 -> 2.
  np.testing.assert_allclose(out['b'], GRADS['b'], rtol=1e-6)  # Norm 0.71 <= 2: untouched.
  glob = optax.clip_by_global_norm(2.0)
  out, _ = glob.update(GRADS, glob.init(PARAMS))
  total = np.sqrt(25 + 0.5)
  np.testing.assert_allclose(out['b'], np.asarray(GRADS['b']) * 2 / total, rtol=1e-6)  # Global: b shrinks too.


def test_attentive_reader_clipping_rule():
  # n = global norm = sqrt(25.5) = 5.05; c = 2: n > c^2 = 4, so every gradient times c / sqrt(n).
  clip = optim.clip_attentive_reader(2.0)
  out, _ = clip.update(GRADS, clip.init(PARAMS))
  n = np.sqrt(25.5)
  np.testing.assert_allclose(out['a'], np.array([3.0, 4.0]) * 2 / np.sqrt(n), rtol=1e-6)
  clip = optim.clip_attentive_reader(3.0)  # n = 5.05 <= 9: untouched.
  np.testing.assert_allclose(clip.update(GRADS, clip.init(PARAMS))[0]['a'], GRADS['a'])


def test_make_optimizer_chains_the_configured_clipping():
  for mode, clip in [('per_tensor_norm', optim.clip_per_tensor_norm), ('global_norm', optax.clip_by_global_norm)]:
    opt = opt_config(grad_clip=mode, grad_clip_norm=2.0, bias_correction=False)
    clipped, _ = clip(2.0).update(GRADS, clip(2.0).init(PARAMS))
    want, _ = optim.scale_by_theano_adam(0.9, 0.999, 1e-8).update(
      clipped, optim.scale_by_theano_adam(0.9, 0.999, 1e-8).init(PARAMS)
    )
    got = first_update(opt)
    for k in GRADS:
      np.testing.assert_allclose(got[k], -1e-3 * np.asarray(want[k]), rtol=1e-6)


def test_adam_without_bias_correction_matches_the_theano_code_by_hand():
  opt = opt_config(bias_correction=False, learning_rate=0.01)
  tx = optim.make_optimizer(opt, 100)
  params = {'w': jnp.array([1.0, -2.0, 0.5])}
  state = tx.init(params)
  grads_seq = [np.array([0.3, -1.0, 2.0]), np.array([0.1, 0.4, -0.2]), np.array([-0.5, 0.2, 0.0])]
  # The order-embedding code: b1 = 0.1, b2 = 0.001 (as 1 - decay), m = b1 g + (1 - b1) m, v = b2 g^2 + (1 - b2) v,
  # lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), p -= lr_t m / (sqrt(v) + eps).
  p, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
  for t, g in enumerate(grads_seq, start=1):
    m = 0.1 * g + 0.9 * m
    v = 0.001 * g**2 + 0.999 * v
    lr_t = 0.01 * np.sqrt(1 - 0.001**t) / (1 - 0.1**t)
    p = p - lr_t * m / (np.sqrt(v) + 1e-8)
    updates, state = tx.update({'w': jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params['w'], p, rtol=1e-5)
  # Bias-corrected Adam differs from it (its first step is lr * sign(g)).
  adam = optim.make_optimizer(opt_config(learning_rate=0.01), 100)
  first = adam.update({'w': jnp.asarray(grads_seq[0])}, adam.init(params), params)[0]['w']
  np.testing.assert_allclose(first, -0.01 * np.sign(grads_seq[0]), rtol=1e-5)


def test_schedules_warm_up_and_decay():
  cosine = optim.learning_rate_schedule(opt_config(schedule='cosine', warmup_steps=10, learning_rate=1.0), 110)
  np.testing.assert_allclose(
    [cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)], [0, 0.5, 1, 0.5, 0], atol=1e-6
  )
  linear = optim.learning_rate_schedule(opt_config(schedule='linear_decay', learning_rate=2.0), 100)
  np.testing.assert_allclose([linear(0), linear(50), linear(100)], [2.0, 1.0, 0.0], atol=1e-6)


def test_optimizer_fields_are_validated_with_fixes():
  fields = {'grad_clip': 'per_tensor', 'bias_correction': 'no', 'schedule': 'step'}
  opt = ml_collections.ConfigDict({**common.base_config().optimizer.to_dict(), **fields})
  problems = optim.optimizer_problems(opt)
  assert any('grad_clip must be one of none, global_norm, per_tensor_norm, attentive_reader' in p for p in problems)
  assert any('bias_correction must be true or false' in p for p in problems)
  assert any('schedule must be one of constant, cosine, linear_decay' in p for p in problems)
  opt = common.base_config().optimizer
  opt.grad_clip = 'global_norm'  # ... with the default threshold of 0.
  assert 'needs a positive grad_clip_norm' in optim.optimizer_problems(opt)[0]


def test_the_jit_cache_tells_nested_optimizer_fields_apart(tmp_path):
  """Two runs in one process that differ only in nested optimizer fields must not share compiled steps."""
  base = loop.train(make_config(num_epochs=1), str(tmp_path / 'a'), make_task())
  clipped = loop.train(
    make_config(num_epochs=1, **{'optimizer.grad_clip': 'per_tensor_norm', 'optimizer.grad_clip_norm': 1e-3}),
    str(tmp_path / 'b'),
    make_task(),
  )
  plain = loop.train(
    make_config(num_epochs=1, **{'optimizer.bias_correction': False}), str(tmp_path / 'c'), make_task()
  )
  assert base['train/loss'] != clipped['train/loss'] != plain['train/loss'] != base['train/loss']
  with open(tmp_path / 'b' / 'config.json') as f:
    assert json.load(f)['optimizer']['grad_clip'] == 'per_tensor_norm'
