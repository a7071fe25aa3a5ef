"""The skip-thoughts model of the authors' public code (docs/paper.md, section 3), with GRU or LN-GRU cells (or,
beyond the paper, RMS-GRU cells: `layernorm.RMSGRUCell`, an RMS norm with a gain where the LN-GRU has its LNs).

One word embedding shared by the encoder and both decoders; the encoder's final state (after the EOS step) is the
sentence vector; the decoders of the previous and the next sentence see it only as their initial state (the public
code's model, not the original paper's, which conditions every step); one output layer over the vocabulary shared
by both decoders. Initialisation as the authors' code: uniform(-0.1, 0.1) embeddings, input kernels and output
layer, block-orthogonal recurrent kernels, zero biases, LN gains 1 and offsets 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import layernorm
from layernorm.cells import block_orthogonal_init, uniform_init

CELLS = {'none': layernorm.GRUCell, 'ln': layernorm.LNGRUCell, 'rms': layernorm.RMSGRUCell}


class SkipThoughts(nnx.Module):
  """Encoder, two decoders, shared embedding and output layer.

  Args:
    vocab_size: words in the vocabulary (0 = EOS, 1 = UNK).
    embed_dim: word embedding size (620 in the paper).
    hidden: GRU size of the encoder and both decoders (2400 in the paper).
    norm: 'none' (GRU), 'ln' (LN-GRU in the encoder and both decoders, as the authors ran it) or 'rms' (RMS-GRU in
      all three).
    loss_chunk: tokens per chunk of the output layer's cross-entropy (see `token_nll`).
  """

  def __init__(self, vocab_size: int, embed_dim: int, hidden: int, norm: str, *, rngs: nnx.Rngs, loss_chunk=512):
    init = uniform_init(0.1)
    cell = lambda: CELLS[norm](
      embed_dim, hidden, kernel_init=init, recurrent_kernel_init=block_orthogonal_init(), rngs=rngs
    )
    self.norm, self.hidden, self.loss_chunk = norm, hidden, loss_chunk
    self.embed = nnx.Embed(vocab_size, embed_dim, embedding_init=init, rngs=rngs)
    self.encoder, self.decoder_prev, self.decoder_next = cell(), cell(), cell()
    self.output = nnx.Linear(hidden, vocab_size, kernel_init=init, rngs=rngs)

  def encode(self, ids_BxT: jax.Array, lengths_B: jax.Array) -> jax.Array:
    """Sentence vectors [B, H]: the encoder's state after each sentence's last step (its EOS)."""
    h0_BxH = jnp.zeros((ids_BxT.shape[0], self.hidden), jnp.float32)
    h_BxH, _ = layernorm.unroll(self.encoder, self.embed(ids_BxT), carry=h0_BxH, seq_lengths=lengths_B)
    return h_BxH

  def decode(self, decoder: nnx.Module, h0_BxH: jax.Array, targets_BxT: jax.Array, lengths_B: jax.Array) -> jax.Array:
    """Decoder states [B, T, H] for teacher-forced `targets`: the input at step t is target t - 1 (zeros at t = 0)."""
    inputs_BxTxE = self.embed(targets_BxT)
    inputs_BxTxE = jnp.concatenate([jnp.zeros_like(inputs_BxTxE[:, :1]), inputs_BxTxE[:, :-1]], axis=1)
    _, states_BxTxH = layernorm.unroll(decoder, inputs_BxTxE, carry=h0_BxH, seq_lengths=lengths_B)
    return states_BxTxH

  def token_nll(self, states_NxH: jax.Array, targets_N: jax.Array) -> jax.Array:
    """-log p(target) [N] under the shared output layer, `loss_chunk` tokens at a time.

    Each chunk's logits are recomputed in the backward pass (`jax.checkpoint` inside a `lax.map`), so no [N, V]
    tensor is kept for it: at paper size the full one would be 64 x 31 x 2 x 20,000 floats (about 317 MB).
    """
    n = states_NxH.shape[0]
    chunk = min(self.loss_chunk, n)
    pad = -n % chunk
    states = jnp.pad(states_NxH, ((0, pad), (0, 0))).reshape(-1, chunk, states_NxH.shape[1])
    targets = jnp.pad(targets_N, (0, pad)).reshape(-1, chunk)
    kernel, bias = self.output.kernel[...], self.output.bias[...]

    @jax.checkpoint
    def one_chunk(args):
      h_CxH, y_C = args
      logits_CxV = h_CxH @ kernel + bias
      return jax.nn.logsumexp(logits_CxV, axis=-1) - jnp.take_along_axis(logits_CxV, y_C[:, None], axis=-1)[:, 0]

    return jax.lax.map(one_chunk, (states, targets)).reshape(-1)[:n]


def sentence_nll(model: SkipThoughts, h_BxH: jax.Array, decoder: nnx.Module, ids_BxT, lengths_B) -> jax.Array:
  """Summed -log p of each target sentence [B] (its words and its EOS step), given the sentence vectors h."""
  states_BxTxH = model.decode(decoder, h_BxH, ids_BxT, lengths_B)
  b, t, h = states_BxTxH.shape
  nll_BxT = model.token_nll(states_BxTxH.reshape(b * t, h), ids_BxT.reshape(b * t)).reshape(b, t)
  mask_BxT = jnp.arange(t)[None, :] < lengths_B[:, None]
  return jnp.sum(jnp.where(mask_BxT, nll_BxT, 0.0), axis=1)


def triple_nll(model: SkipThoughts, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(-log p(prev | centre) [B], -log p(next | centre) [B]), each summed over the target's steps."""
  h_BxH = model.encode(batch['centre'], batch['centre_len'])
  prev = sentence_nll(model, h_BxH, model.decoder_prev, batch['prev'], batch['prev_len'])
  nxt = sentence_nll(model, h_BxH, model.decoder_next, batch['next'], batch['next_len'])
  return prev, nxt
