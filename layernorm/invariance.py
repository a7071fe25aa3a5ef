"""Table 1 of the paper (§5.1), measured: which transformations leave a normalized layer's output unchanged.

One layer of H units with D inputs and a batch of N training cases, in the paper's notation (W is H x D, row i is
unit i's incoming weight vector w_i):

    a = W x,        h_i = f(g_i / sigma_i * (a_i - mu_i) + b_i)

    batch norm:  mu_i, sigma_i = mean and std of a_i over the N cases of the batch (one pair per unit)
    weight norm: mu_i = 0, sigma_i = ||w_i||
    layer norm:  mu, sigma = mean and std of a over the H units (one pair per case)
    RMS norm:    mu = 0, sigma = sqrt(mean of a^2 over the H units) (one per case; Zhang & Sennrich 2019)

Each transformation of Table 1 is applied to (W, x) and the outputs are compared before and after. We compare the
argument of f: if it is unchanged so is h for any f, and for a strictly monotone f a changed argument is a changed h.
Everything is computed with the library's own `BatchNorm` (training mode: statistics of the transformed batch),
`WeightNormLinear`, `layer_norm` and `rms_norm`, with random gains g and biases b, since the invariances hold for
any of them.

RMS norm is not in the paper: its row is measured beside the row its own paper's analysis predicts (Zhang & Sennrich
2019, Table 1), not beside Ba et al.'s, and the 18 cells of the paper's table are counted apart from its 6.

Why each "No" is a no (and what the measurement must get right to see it):
  - Weight matrix re-centering, W' = W + 1 gamma^T, adds gamma to every row w_i, so a_i moves by gamma^T x_n: the
    same for every unit of a case (layer norm removes it with mu) but different from case to case. Batch norm
    subtracts only the batch average of the shift, so the rest, gamma^T (x_n - mean x), remains; weight norm sees
    new directions w_i + gamma. The other reading of the dimensions, W + gamma 1^T (gamma_i added to every weight
    of unit i), moves a_i by gamma_i sum_j x_nj, which no method removes: layer norm would wrongly look variant.
  - Weight vector re-scaling changes one a_i only, so mu and sigma of the layer change: layer norm is not
    invariant, batch and weight norm (one mu_i, sigma_i per unit) are.
  - Dataset re-scaling scales a but not ||w_i||, so weight norm's outputs scale; dataset re-centering adds the
    per-unit constant w_i^T gamma, which batch norm removes with mu_i and layer norm (one mu per case) cannot.
  - Single training case re-scaling moves the batch statistics (batch norm: every case's output changes) and
    scales that case's a (weight norm); layer norm's per-case statistics absorb it.
  - RMS norm keeps layer norm's per-case sigma and drops its mu, so it keeps every scale invariance of layer norm
    (weight matrix, dataset, single case) and loses the one that rests on mu: weight matrix re-centering's per-case
    shift gamma^T x_n is no longer removed. Weight vector re-scaling and dataset re-centering stay variant for the
    reasons layer norm's do.
All scalings use delta > 0: a negative factor flips the sign of the normalized output.

The paper's formulas have no epsilon; the library adds `eps` to the variance, which breaks the exact scale
invariances by about eps / (2 sigma^2) (RMS norm: eps / (2 mean(a^2)), no larger since mean(a^2) >= sigma^2). We
measure with eps = 1e-9, while every sigma^2 here is above 1e-3 (a is about unit-variance and the scalings stay within
[1/4, 4]), so the eps error stays below 1e-6 relative, at the level of float32 rounding. With the library default
1e-5 the same error reaches about 1e-3 for some draws, too close to the tolerance for a clean verdict.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from layernorm.normalization import BatchNorm
from layernorm.ops import layer_norm, rms_norm
from layernorm.weight_norm import WeightNormLinear

INVARIANT = 'Invariant'
NOT_INVARIANT = 'No'
UNCLEAR = 'Unclear'

# A cell is "Invariant" when no output moves by more than INVARIANT_TOL (relative), "No" when some output moves by
# more than CHANGED_MIN in every draw. Measured values sit far from both: invariant cells at float32 rounding
# (< 1e-6), changed cells above 0.1 (see `scripts/invariance_table.py`, which prints them).
INVARIANT_TOL = 1e-4
CHANGED_MIN = 1e-2

MEASURE_EPS = 1e-9

# The paper's three rows, then the rows measured beyond it (each beside its own paper's prediction, not Ba et al.'s).
METHODS = ('batch_norm', 'weight_norm', 'layer_norm')
EXTENSION_METHODS = ('rms_norm',)
ALL_METHODS = METHODS + EXTENSION_METHODS
METHOD_TITLES = {
  'batch_norm': 'Batch norm',
  'weight_norm': 'Weight norm',
  'layer_norm': 'Layer norm',
  'rms_norm': 'RMS norm',
}


@dataclasses.dataclass(frozen=True)
class Layer:
  """One normalized layer, a batch for it, and the random parameters of every transformation.

  Attributes:
    W_HxD: weights, row i is unit i's incoming weight vector w_i (the paper's W; the kernel of `nnx.Linear` is W.T).
    x_NxD: the batch, one training case per row.
    gain_H: the gain g.
    bias_H: the bias b.
    delta: the factor of every re-scaling; positive, in [1/4, 1/2] or [2, 4].
    gamma_weights_D: the vector added to every w_i by weight matrix re-centering.
    gamma_data_D: the vector added to every case by dataset re-centering.
    unit: the unit whose weight vector weight vector re-scaling scales.
    case: the case that single training case re-scaling scales.
  """

  W_HxD: np.ndarray
  x_NxD: np.ndarray
  gain_H: np.ndarray
  bias_H: np.ndarray
  delta: float
  gamma_weights_D: np.ndarray
  gamma_data_D: np.ndarray
  unit: int
  case: int


def random_layer(seed: int, *, num_cases: int = 8, in_features: int = 6, units: int = 5) -> Layer:
  """A random layer whose summed inputs have roughly unit variance, so eps is negligible and changes are O(1).

  The weights are N(0, 1/D), so a = W x is about unit-variance for unit-variance x; the re-centering vectors are
  drawn at the scale of what they shift (a weight vector, a training case), so a non-invariant method sees an O(1)
  change. The scale factor stays away from 1 so that a non-invariance cannot hide in a tiny change.
  """
  rng = np.random.default_rng(seed)
  n, d, h = num_cases, in_features, units
  f32 = np.float32
  log_delta = rng.uniform(np.log(2.0), np.log(4.0)) * rng.choice([-1.0, 1.0])
  return Layer(
    W_HxD=rng.normal(0.0, 1.0 / np.sqrt(d), (h, d)).astype(f32),
    x_NxD=rng.normal(0.0, 1.0, (n, d)).astype(f32),
    gain_H=rng.uniform(0.5, 1.5, h).astype(f32),
    bias_H=rng.normal(0.0, 0.3, h).astype(f32),
    delta=float(np.exp(log_delta)),
    gamma_weights_D=rng.normal(0.0, 1.0 / np.sqrt(d), d).astype(f32),
    gamma_data_D=rng.normal(0.0, 1.0, d).astype(f32),
    unit=int(rng.integers(h)),
    case=int(rng.integers(n)),
  )


# --- The six transformations of Table 1, each (W, x) -> (W', x') -------------------------------------------------


def _weight_matrix_rescaling(p: Layer) -> tuple[np.ndarray, np.ndarray]:
  return p.delta * p.W_HxD, p.x_NxD


def _weight_matrix_recentering(p: Layer) -> tuple[np.ndarray, np.ndarray]:
  # Eq. 6: W' = W + 1 gamma^T with 1 of length H, so the same gamma is added to every row w_i (every unit's
  # incoming weights). Unit i's summed input becomes a_i + gamma^T x: one shift per case, shared by all units.
  ones_H = np.ones((p.W_HxD.shape[0], 1), p.W_HxD.dtype)
  return p.W_HxD + ones_H * p.gamma_weights_D[None, :], p.x_NxD


def _weight_vector_rescaling(p: Layer) -> tuple[np.ndarray, np.ndarray]:
  W = p.W_HxD.copy()
  W[p.unit] *= p.delta
  return W, p.x_NxD


def _dataset_rescaling(p: Layer) -> tuple[np.ndarray, np.ndarray]:
  return p.W_HxD, p.delta * p.x_NxD


def _dataset_recentering(p: Layer) -> tuple[np.ndarray, np.ndarray]:
  return p.W_HxD, p.x_NxD + p.gamma_data_D[None, :]


def _single_case_rescaling(p: Layer) -> tuple[np.ndarray, np.ndarray]:
  x = p.x_NxD.copy()
  x[p.case] *= p.delta
  return p.W_HxD, x


@dataclasses.dataclass(frozen=True)
class Transformation:
  name: str
  title: str
  formula: str
  apply: Callable[[Layer], tuple[np.ndarray, np.ndarray]]


TRANSFORMATIONS = (
  Transformation('weight_matrix_rescaling', 'Weight matrix re-scaling', "W' = δ W", _weight_matrix_rescaling),
  Transformation(
    'weight_matrix_recentering',
    'Weight matrix re-centering',
    "W' = W + 1 γᵀ (γ added to every w_i)",
    _weight_matrix_recentering,
  ),
  Transformation(
    'weight_vector_rescaling', 'Weight vector re-scaling', "w_i' = δ w_i, one unit i", _weight_vector_rescaling
  ),
  Transformation('dataset_rescaling', 'Dataset re-scaling', "x_n' = δ x_n, every case n", _dataset_rescaling),
  Transformation('dataset_recentering', 'Dataset re-centering', "x_n' = x_n + γ, every case n", _dataset_recentering),
  Transformation(
    'single_case_rescaling', 'Single training case re-scaling', "x_n' = δ x_n, one case n", _single_case_rescaling
  ),
)

# Table 1 of the paper, row by row in the order of METHODS and columns in the order of TRANSFORMATIONS.
PAPER_TABLE_1 = {
  'batch_norm': (INVARIANT, NOT_INVARIANT, INVARIANT, INVARIANT, INVARIANT, NOT_INVARIANT),
  'weight_norm': (INVARIANT, NOT_INVARIANT, INVARIANT, NOT_INVARIANT, NOT_INVARIANT, NOT_INVARIANT),
  'layer_norm': (INVARIANT, INVARIANT, NOT_INVARIANT, INVARIANT, NOT_INVARIANT, INVARIANT),
}


# The rows beyond the paper, as their own papers predict them. RMS norm: Table 1 of Zhang & Sennrich (2019),
# "Root Mean Square Layer Normalization": invariant to weight matrix, dataset and single case re-scaling, not to
# re-centering the weight matrix or the dataset, nor to re-scaling one weight vector.
PREDICTED_TABLE_1 = {
  'rms_norm': (INVARIANT, NOT_INVARIANT, NOT_INVARIANT, INVARIANT, NOT_INVARIANT, INVARIANT),
}
PREDICTION_SOURCES = {'rms_norm': 'Zhang & Sennrich (2019), Table 1'}


def paper_verdict(method: str, transformation: str) -> str:
  """The expected entry, 'Invariant' or 'No': the paper's Table 1, or for a row beyond it, its own paper's."""
  names = [t.name for t in TRANSFORMATIONS]
  row = PAPER_TABLE_1[method] if method in PAPER_TABLE_1 else PREDICTED_TABLE_1[method]
  return row[names.index(transformation)]


# --- The four normalized layers -------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=('method', 'eps'))
def _normalized_layer(method: str, W_HxD: jax.Array, x_NxD: jax.Array, gain_H, bias_H, eps: float) -> jax.Array:
  # Jitted whole (module construction included) so each method compiles once: op-by-op dispatch of the same code
  # costs seconds of compilation on first use, which would make the demo slow.
  h, d = W_HxD.shape
  if method == 'layer_norm':
    return layer_norm(x_NxD @ W_HxD.T, gain_H, bias_H, eps=eps)
  if method == 'rms_norm':  # The RMSNorm paper's eq. 4 keeps the bias b; the library's op has only the gain.
    return rms_norm(x_NxD @ W_HxD.T, gain_H, eps=eps) + bias_H
  if method == 'batch_norm':
    bn = BatchNorm(h, eps=eps)
    bn.scale[...] = gain_H
    bn.bias[...] = bias_H
    return bn(x_NxD @ W_HxD.T)
  wn = WeightNormLinear(d, h, rngs=nnx.Rngs(0))
  wn.direction[...] = W_HxD.T  # The paper's w_i is column i of the (in, out) kernel.
  wn.scale[...] = gain_H
  wn.bias[...] = bias_H
  return wn(x_NxD)


def normalized_layer(
  method: str, W_HxD: np.ndarray, x_NxD: np.ndarray, gain_H: np.ndarray, bias_H: np.ndarray, *, eps: float = MEASURE_EPS
) -> np.ndarray:
  """g / sigma * (a - mu) + b for a = W x and the method's mu and sigma; returns an (N, H) array.

  Args:
    method: 'batch_norm' (training mode, statistics of this batch), 'weight_norm', 'layer_norm' or 'rms_norm'
      (mu = 0, sigma the root mean square of a).
    W_HxD: the weights, one row per unit.
    x_NxD: the batch.
    gain_H: the gain g.
    bias_H: the bias b.
    eps: added to the variance by batch and layer norm, to the mean square by RMS norm.
  """
  if method not in ALL_METHODS:
    raise ValueError(f'unknown normalization method {method!r}; expected one of {ALL_METHODS}.')
  args = (jnp.asarray(a, jnp.float32) for a in (W_HxD, x_NxD, gain_H, bias_H))
  return np.asarray(_normalized_layer(method, *args, eps=float(eps)))


def relative_change(before_NxH: np.ndarray, after_NxH: np.ndarray) -> float:
  """The largest relative change of any training case's output vector: max_n ||y'_n - y_n|| / ||y_n||."""
  before = np.asarray(before_NxH, np.float64)
  after = np.asarray(after_NxH, np.float64)
  return float(np.max(np.linalg.norm(after - before, axis=-1) / np.linalg.norm(before, axis=-1)))


def measure(method: str, transformation: Transformation, layer: Layer, *, eps: float = MEASURE_EPS) -> float:
  """Relative change of the layer's outputs when `transformation` is applied to its weights or data."""
  before = normalized_layer(method, layer.W_HxD, layer.x_NxD, layer.gain_H, layer.bias_H, eps=eps)
  W, x = transformation.apply(layer)
  after = normalized_layer(method, W, x, layer.gain_H, layer.bias_H, eps=eps)
  return relative_change(before, after)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One measured cell of Table 1: the relative changes over all random layers, and the verdict they give.

  `paper` is the expected verdict: the paper's, or for a row beyond it (`EXTENSION_METHODS`) its own paper's.
  """

  method: str
  transformation: Transformation
  changes: tuple[float, ...]

  @property
  def verdict(self) -> str:
    if max(self.changes) < INVARIANT_TOL:
      return INVARIANT
    if min(self.changes) > CHANGED_MIN:
      return NOT_INVARIANT
    return UNCLEAR

  @property
  def paper(self) -> str:
    return paper_verdict(self.method, self.transformation.name)

  @property
  def agrees(self) -> bool:
    return self.verdict == self.paper


def measure_table(
  seeds: Sequence[int] = range(5), *, eps: float = MEASURE_EPS, methods: Sequence[str] = METHODS
) -> list[Cell]:
  """Table 1's cells, each measured on one random layer per seed (the same layers for every cell).

  The default `methods` give the paper's 18 cells; `ALL_METHODS` adds the 6 of the RMS norm row.
  """
  layers = [random_layer(s) for s in seeds]
  return [
    Cell(method, t, tuple(measure(method, t, layer, eps=eps) for layer in layers))
    for method in methods
    for t in TRANSFORMATIONS
  ]
