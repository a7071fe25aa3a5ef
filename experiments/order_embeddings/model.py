"""Order-embeddings (Vendrov et al. 2016) with a GRU or layer-normalized GRU sentence encoder (paper section 6.1).

Captions: 300-d word embeddings -> GRU (eq. 23-25) or LN-GRU (eq. 26-28) of `dim` units from a zero state; the
sentence vector is the state after the last valid step (the caption and one end-of-sentence step); beyond the paper,
the RMS-GRU (`layernorm.RMSGRUCell`: an RMS norm with a gain where the LN-GRU has its LNs) too. Images: a linear
map of the 4,096-d features to `dim`. Both are L2-normalized, then (order-embeddings, 'oe') made non-negative by an
absolute value, or (the symmetric baseline, 'sym') left as they are.

Errors (lower = better match), between captions s and images v:
  'oe'   the order violation E(s, v) = ||max(0, s - v)||^2: zero when the caption is above the image in the
         reversed product order (an abstraction of it)
  'sym'  -s . v, the negative cosine
The loss is the authors' contrastive hinge: every contrastive image of each caption and every contrastive caption of
each image, max(0, margin - E(contrast) + E(match)), summed over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import layernorm
from layernorm.cells import block_orthogonal_init, uniform_init

MODELS = ('oe', 'sym')
CELLS = {'none': layernorm.GRUCell, 'ln': layernorm.LNGRUCell, 'rms': layernorm.RMSGRUCell}


def l2_normalize(x_BxD: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (the authors divide by the norm alone; the floor only keeps 0 rows finite)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x_BxD), axis=-1, keepdims=True))
  return x_BxD / jnp.maximum(norm, 1e-12)


def order_violation(s_AxD: jax.Array, v_BxD: jax.Array) -> jax.Array:
  """E[a, b] = ||max(0, s_a - v_b)||^2: [A, B]."""
  return jnp.sum(jnp.square(jnp.maximum(0.0, s_AxD[:, None, :] - v_BxD[None, :, :])), axis=-1)


def errors(s_AxD: jax.Array, v_BxD: jax.Array, model: str) -> jax.Array:
  """The caption-image error matrix [A, B] of `model` ('oe' or 'sym'); lower is a better match."""
  if model == 'oe':
    return order_violation(s_AxD, v_BxD)
  return -s_AxD @ v_BxD.T


def contrastive_loss(errors_BxB: jax.Array, margin: float) -> jax.Array:
  """The summed hinge over contrastive pairs; rows are captions, columns images, the diagonal the matching pairs.

  Column j holds image j against every caption (its contrastive captions), row i caption i against every image.
  """
  match_B = jnp.diagonal(errors_BxB)
  per_image = jnp.maximum(0.0, margin - errors_BxB + match_B[None, :])  # contrastive captions of image j
  per_caption = jnp.maximum(0.0, margin - errors_BxB + match_B[:, None])  # contrastive images of caption i
  off_diagonal = 1.0 - jnp.eye(errors_BxB.shape[0], dtype=errors_BxB.dtype)
  return jnp.sum((per_image + per_caption) * off_diagonal)


class OrderEmbedding(nnx.Module):
  """The two encoders into one `dim`-d space.

  Args:
    vocab_size: word ids 0..vocab_size-1 (0 end-of-sentence, 1 unknown).
    image_features: size of the image features (4,096).
    word_dim: word embedding size (300).
    dim: GRU units = embedding size (1,024).
    norm: 'none' (GRU), 'ln' (LN-GRU) or 'rms' (RMS-GRU).
    model: 'oe' (absolute values, order violation) or 'sym' (cosine).
    rngs: for the initialisation, the authors': words and GRU input matrices uniform(-0.1, 0.1), recurrent
      matrices orthogonal per gate, the image map Xavier-uniform, biases 0, LN gains 1 and offsets 0.
  """

  def __init__(
    self, vocab_size: int, image_features: int, *, word_dim: int, dim: int, norm: str, model: str, rngs: nnx.Rngs
  ):
    if norm not in CELLS:
      raise ValueError(f'norm must be one of {", ".join(CELLS)}; got {norm!r}.')
    if model not in MODELS:
      raise ValueError(f'model must be one of {", ".join(MODELS)}; got {model!r}.')
    self.model = model
    self.words = nnx.Embed(vocab_size, word_dim, embedding_init=uniform_init(0.1), rngs=rngs)
    self.encoder = CELLS[norm](
      word_dim, dim, kernel_init=uniform_init(0.1), recurrent_kernel_init=block_orthogonal_init(), rngs=rngs
    )
    self.image = nnx.Linear(image_features, dim, kernel_init=nnx.initializers.xavier_uniform(), rngs=rngs)

  def _finish(self, x_BxD: jax.Array) -> jax.Array:
    x_BxD = l2_normalize(x_BxD)
    return jnp.abs(x_BxD) if self.model == 'oe' else x_BxD

  def encode_captions(self, tokens_BxT: jax.Array, lengths_B: jax.Array) -> jax.Array:
    """Caption embeddings [B, dim]; `lengths` counts the steps to read (words + the end-of-sentence step)."""
    x_BxTxW = self.words(tokens_BxT)
    h_BxD, _ = layernorm.unroll(self.encoder, x_BxTxW, seq_lengths=lengths_B)
    return self._finish(h_BxD)

  def encode_images(self, features_BxF: jax.Array) -> jax.Array:
    """Image embeddings [B, dim]."""
    return self._finish(self.image(features_BxF.astype(jnp.float32)))

  def errors(self, s_AxD: jax.Array, v_BxD: jax.Array) -> jax.Array:
    return errors(s_AxD, v_BxD, self.model)
