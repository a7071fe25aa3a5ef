"""The LN-LSTM attentive reader written in PyTorch as its users would write it: the comparison of issue 13.

PyTorch has no layer-normalized LSTM, so the cell is an `nn.LSTMCell`-style module with `nn.LayerNorm` on the two
fused gate blocks and on the cell (appendix eq. 20-22, as `layernorm.LNLSTMCell`: LN(W_x x) + LN(W_h h) + b, each
LN over the whole 4H block, h = sigmoid(o) * tanh(LN(c)) with c carried un-normalized), run by a Python loop over
time steps that keeps the carry of finished (padded) examples. The reader around it is
`experiments/attentive_reader/model.py`'s, term for term: one embedding table, passage and question LSTMs with
learned initial h, attention with the document-question similarity term, the output layer with the mean-of-passage
term, dropout 0.5, logits over the whole vocabulary; the training step is `task.loss_fn` (a fresh entity
permutation per minibatch, mean cross-entropy) and the loop's optimizer: the reader code's clipping rule
(`experiments/loop/optim.py`'s `clip_attentive_reader`) then Adam.

`from_jax(model)` builds it with the weights of a JAX `AttentiveReader` (norm='ln'), so that both sides of the
benchmark start from the same parameters and tests can check that the two compute the same logits.

torch is not in requirements.txt (see benchmarks/requirements.txt); nothing in layernorm/ or experiments/ imports
this module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LNLSTMCell(nn.Module):
  """The LN-LSTM cell (eq. 20-22) in flax's gate order (i, f, g, o), which is also `nn.LSTMCell`'s."""

  def __init__(self, in_features: int, hidden_features: int, *, ln_gain: float = 1.0, eps: float = 1e-5):
    super().__init__()
    h = hidden_features
    self.dense_i = nn.Linear(in_features, 4 * h, bias=False)
    self.dense_h = nn.Linear(h, 4 * h, bias=False)
    self.bias = nn.Parameter(torch.zeros(4 * h))
    self.ln_i = nn.LayerNorm(4 * h, eps=eps)
    self.ln_h = nn.LayerNorm(4 * h, eps=eps)
    self.ln_c = nn.LayerNorm(h, eps=eps)
    with torch.no_grad():
      for ln in (self.ln_i, self.ln_h, self.ln_c):
        ln.weight.fill_(ln_gain)

  def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    c, h = state
    gates = self.ln_i(self.dense_i(x)) + self.ln_h(self.dense_h(h)) + self.bias
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
    return c, h


def unroll(
  cell: LNLSTMCell, x_BxTxD: torch.Tensor, h0_H: torch.Tensor, lengths_B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
  """The per-step loop: (last valid h [B, H], outputs [B, T, H], zero at padded steps)."""
  batch, steps, _ = x_BxTxD.shape
  h = h0_H.expand(batch, -1)
  c = torch.zeros_like(h)
  outputs = []
  for t in range(steps):
    new_c, new_h = cell(x_BxTxD[:, t], (c, h))
    valid = (t < lengths_B)[:, None]
    c = torch.where(valid, new_c, c)
    h = torch.where(valid, new_h, h)
    outputs.append(torch.where(valid, new_h, torch.zeros_like(new_h)))
  return h, torch.stack(outputs, dim=1)


class AttentiveReader(nn.Module):
  """The LN-LSTM reader of `experiments/attentive_reader/model.py` (see that docstring for the equations)."""

  def __init__(self, vocab_size: int, dim: int, *, ln_gain: float = 1.0, dropout_rate: float = 0.5):
    super().__init__()
    self.dropout_rate = dropout_rate
    self.embed = nn.Embedding(vocab_size, dim)
    self.passage_cell = LNLSTMCell(dim, dim, ln_gain=ln_gain)
    self.query_cell = LNLSTMCell(dim, dim, ln_gain=ln_gain)
    self.passage_h0 = nn.Parameter(torch.zeros(dim))
    self.query_h0 = nn.Parameter(torch.zeros(dim))
    self.att_d = nn.Linear(dim, dim)
    self.att_q = nn.Linear(dim, dim, bias=False)
    self.sim = nn.Linear(dim, dim, bias=False)
    self.att_w = nn.Parameter(torch.empty(dim).uniform_(-(dim**-0.5), dim**-0.5))
    self.out_r = nn.Linear(dim, dim, bias=False)
    self.out_q = nn.Linear(dim, dim, bias=False)
    self.out_m = nn.Linear(dim, dim, bias=False)
    self.out_bias = nn.Parameter(torch.zeros(dim))
    self.logits = nn.Linear(dim, vocab_size)

  def forward(self, passage, passage_length, query, query_length) -> torch.Tensor:
    """Logits over the vocabulary [B, V]; dropout when the module is in training mode."""
    drop = lambda x: F.dropout(x, self.dropout_rate, self.training)
    q, _ = unroll(self.query_cell, drop(self.embed(query)), self.query_h0, query_length)
    _, d = unroll(self.passage_cell, drop(self.embed(passage)), self.passage_h0, passage_length)
    mask = torch.arange(passage.shape[1])[None, :] < passage_length[:, None]
    d = d * mask[..., None]
    sim = torch.einsum('bth,bh->bt', self.sim(d), self.sim(q))
    m = torch.tanh(self.att_d(d) + self.att_q(q)[:, None, :] + sim[..., None])
    score = (m @ self.att_w).masked_fill(~mask, -1e30)
    alpha = torch.softmax(score, dim=-1) * mask
    r = torch.einsum('bt,bth->bh', alpha, d)
    mean = d.sum(1) / passage_length.clamp_min(1)[:, None].float()
    g = drop(torch.tanh(self.out_r(r) + self.out_q(q) + self.out_m(mean) + self.out_bias))
    return self.logits(g)


def permute_entities(batch: dict[str, torch.Tensor], entity_ids: torch.Tensor, vocab_size: int) -> dict:
  """The batch with every entity id i replaced by perm(i), one random permutation per minibatch (as task.py)."""
  table = torch.arange(vocab_size)
  table[entity_ids] = entity_ids[torch.randperm(len(entity_ids))]
  return {**batch, **{k: table[batch[k]] for k in ('passage', 'query', 'answer')}}


def loss_fn(model: AttentiveReader, batch: dict[str, torch.Tensor]) -> torch.Tensor:
  """Mean -log p(answer) over the batch (dropout as the model's mode says)."""
  logits = model(batch['passage'], batch['passage_length'], batch['query'], batch['query_length'])
  return F.cross_entropy(logits, batch['answer'])


def clip_attentive_reader_(params, c: float) -> None:
  """The reader code's rule in place: n = global L2 norm of the gradients; if n > c^2, every gradient times c/sqrt(n).

  Written with `torch.where` rather than a Python `if`, so that it neither syncs nor breaks a compiled graph.
  """
  grads = [p.grad for p in params if p.grad is not None]
  n = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
  factor = torch.where(n > c * c, c / n.clamp_min(1e-30).sqrt(), torch.ones_like(n))
  torch._foreach_mul_(grads, factor)


def to_torch_batch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
  """A numpy batch of `QASource.batch` as int64 tensors (what `nn.Embedding` and `cross_entropy` take)."""
  return {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()}


def from_jax(jax_model, *, dropout_rate: float = 0.5) -> AttentiveReader:
  """A torch reader with the weights of a JAX `experiments.attentive_reader.model.AttentiveReader` (norm='ln')."""
  if jax_model.norm != 'ln' or jax_model.query_only:
    raise ValueError(
      f'from_jax copies the LN-LSTM reader with its passage; got norm={jax_model.norm!r}, '
      f'query_only={jax_model.query_only}.'
    )
  a = lambda v: torch.from_numpy(np.array(v[...], np.float32))
  vocab_size, dim = jax_model.embed.embedding[...].shape
  model = AttentiveReader(vocab_size, dim, dropout_rate=dropout_rate)
  with torch.no_grad():
    model.embed.weight.copy_(a(jax_model.embed.embedding))
    for name in ('passage_cell', 'query_cell'):
      src, dst = getattr(jax_model, name), getattr(model, name)
      dst.dense_i.weight.copy_(a(src.dense_i.kernel).T)
      dst.dense_h.weight.copy_(a(src.dense_h.kernel).T)
      dst.bias.copy_(a(src.bias))
      for ln in ('ln_i', 'ln_h', 'ln_c'):
        getattr(dst, ln).weight.copy_(a(getattr(src, ln).scale))
        getattr(dst, ln).bias.copy_(a(getattr(src, ln).bias))
    for name in ('passage_h0', 'query_h0', 'att_w', 'out_bias'):
      getattr(model, name).copy_(a(getattr(jax_model, name)))
    for name in ('att_d', 'att_q', 'sim', 'out_r', 'out_q', 'out_m', 'logits'):
      src, dst = getattr(jax_model, name), getattr(model, name)
      dst.weight.copy_(a(src.kernel).T)
      if dst.bias is not None:
        dst.bias.copy_(a(src.bias))
  return model


class TrainStep:
  """One training step (forward, backward, clipping, Adam) on a fixed batch; `compile` picks the execution mode.

  Args:
    model: the reader (trained in place).
    batch: int64 tensors passage, passage_length, query, query_length, answer.
    entity_ids: the entity ids permuted per minibatch.
    learning_rate, clip: the config's Adam learning rate and clipping threshold (b1, b2, eps are torch's defaults,
      which are the config's: 0.9, 0.999, 1e-8).
    compile: 'eager'; 'compile' (`torch.compile` of the loss, whose backward AOTAutograd compiles too, and of the
      clipping + optimizer step, as PyTorch's "compiling the optimizer" recipe does); 'script' (TorchScript of the
      LN-LSTM cell, the fastrnns way; the rest eager).
  """

  def __init__(self, model, batch, entity_ids, *, learning_rate: float, clip: float, compile: str = 'eager'):
    self.model = model.train()
    self.batch = batch
    self.entity_ids = torch.as_tensor(np.asarray(entity_ids, np.int64))
    self.vocab_size = model.logits.out_features
    self.params = list(model.parameters())
    self.optimizer = torch.optim.Adam(self.params, lr=learning_rate)
    self.clip = clip
    loss = lambda b: loss_fn(self.model, b)
    update = self._update
    if compile == 'compile':
      loss, update = torch.compile(loss), torch.compile(update)
    elif compile == 'script':
      model.passage_cell = torch.jit.script(model.passage_cell)
      model.query_cell = torch.jit.script(model.query_cell)
    elif compile != 'eager':
      raise ValueError(f'compile must be eager, compile or script; got {compile!r}.')
    self._loss, self._update_fn = loss, update

  def _update(self):
    clip_attentive_reader_(self.params, self.clip)
    self.optimizer.step()

  def __call__(self) -> torch.Tensor:
    self.optimizer.zero_grad(set_to_none=True)
    # Outside the compiled loss: inductor 2.13's randperm-index pattern fails on `ids[torch.randperm(n)]`
    # ("Not all inputs to pattern found in match.kwargs ... slice_shape").
    batch = permute_entities(self.batch, self.entity_ids, self.vocab_size)
    loss = self._loss(batch)
    loss.backward()
    self._update_fn()
    return loss.detach()
