"""Generated handwriting for a text, from a trained workdir's best checkpoint, as PNGs.

  python -m experiments.handwriting.sample --workdir runs/hw_ln --text "layer norm writes" --out hw.png [--bias 0.5]

Writes `--out` (the pen trajectory) and `<out>_window.png` (the soft window's weights over the characters through
time). Needs no data set: the alphabet and the offset statistics come from the workdir's task.json. Sampling follows
Graves (2013): a mixture component from softmax(pi^ (1 + bias)), a bivariate Gaussian with sigma = exp(sigma^ - bias),
the pen lifted with probability 1 / (1 + exp(e^)); it stops once the window's weight on the position after the last
character exceeds its weight on every character (not before 5 points per character), or after `--max_points`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import cli_errors
from experiments.handwriting import data, pictures
from experiments.handwriting.model import SynthesisNetwork, split_mixture, window_weights
from experiments.handwriting.task import load_trained_model

MIN_POINTS_PER_CHAR = 5


def sample_point(y: jax.Array, num_mixtures: int, bias: float, rng: jax.Array) -> jax.Array:
  """One point (dx, dy, eos) [B, 3] drawn from the output distribution y [B, 1 + 6M]."""
  p = split_mixture(y, num_mixtures, bias)
  k_pi, k_z, k_eos = jax.random.split(rng, 3)
  j = jax.random.categorical(k_pi, p['log_pi'])[:, None]
  pick = lambda name: jnp.take_along_axis(p[name], j, axis=-1)[:, 0]
  z1, z2 = jax.random.normal(k_z, (2, y.shape[0]))
  rho = jnp.tanh(pick('rho_logit'))
  s1, s2 = jnp.exp(pick('log_s1')), jnp.exp(pick('log_s2'))
  x1 = pick('mu1') + s1 * z1
  x2 = pick('mu2') + s2 * (rho * z1 + jnp.sqrt(1 - rho**2) * z2)
  eos = (jax.random.uniform(k_eos, y.shape[:1]) < jax.nn.sigmoid(-p['eos_logit'])).astype(jnp.float32)
  return jnp.stack([x1, x2, eos], axis=-1)


def generate(
  model: SynthesisNetwork, chars_U: np.ndarray, start_3: np.ndarray, max_points: int, bias: float, seed: int = 0
):
  """Samples up to `max_points` normalized offsets for one text; returns (points [T, 3], phi [T, U]) on the host."""
  chars = jnp.asarray(chars_U)[None]
  onehot = jax.nn.one_hot(chars, model.alphabet_size, dtype=jnp.float32)
  mask = jnp.ones(chars.shape, jnp.float32)
  graphdef, params = nnx.split(model)

  @jax.jit
  def run(params, start, key):
    def body(carry, step_key):
      state, x = carry
      state, (y, phi, (alpha, beta, kappa)) = nnx.merge(graphdef, params).step(state, x, onehot, mask)
      point = sample_point(y, model.output_mixtures, bias, step_key)
      # phi at u = U + 1, just past the text: the end of writing (Graves §5.3).
      end = window_weights(alpha, beta, kappa, chars.shape[1] + 1)[:, -1]
      return (state, point), (point[0], phi[0], end[0])

    keys = jax.random.split(key, max_points)
    return jax.lax.scan(body, (model.initial_state(1), start[None]), keys)[1]

  points, phi, end = jax.device_get(run(params, jnp.asarray(start_3, jnp.float32), jax.random.key(seed)))
  # The end test can hold by chance in the first points (a window that starts past a short text); a pen needs at
  # least a few points per character, so it is only applied from MIN_POINTS_PER_CHAR per character on.
  done = np.flatnonzero((end > phi.max(axis=1)) & (np.arange(len(end)) >= MIN_POINTS_PER_CHAR * len(chars_U)))
  length = int(done[0]) + 1 if len(done) else max_points
  return points[:length], phi[:length]


def write_samples(workdir: str, text: str, out: str, *, bias: float = 0.0, seed: int = 0, max_points: int = 0):
  """Writes the handwriting PNG `out` and the window PNG beside it; returns both paths."""
  model, metadata = load_trained_model(workdir, 'best')
  if metadata['alphabet'] != data.ALPHABET:
    raise ValueError(f"{workdir} was trained with another alphabet than this code's; sample it with that version.")
  mean, std = metadata['offset_mean'], metadata['offset_std']
  start = np.array([-mean[0] / std[0], -mean[1] / std[1], 0.0], np.float32)  # An offset of 0: the start symbol.
  max_points = max_points or 40 * len(text)
  points, phi = generate(model, data.encode_text(text), start, max_points, bias, seed)
  lines = [data.decode_points(np.concatenate([start[None], points]), mean, std)]
  stem, _ = os.path.splitext(out)
  paths = [pictures.plot_lines(lines, out, [f'{text!r} (bias {bias:g}, {len(points)} points)'])]
  paths.append(pictures.plot_window(phi, text, f'{stem}_window.png'))
  return paths


def unwritable_characters(text: str) -> list[str]:
  """The characters of `text` outside the model's alphabet (which `data.encode_text` would write as padding)."""
  return sorted(set(text) - set(data.ALPHABET[1:]), key=text.index)  # ALPHABET[0] is the padding symbol.


@cli_errors.entry_point
def main(argv: list[str] | None = None) -> int:
  parser = cli_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='A run of experiments.handwriting (with best_metric set).')
  parser.add_argument('--text', required=True, help='The text to write.')
  parser.add_argument('--out', required=True, help='The PNG to write; the window goes to <out>_window.png.')
  parser.add_argument('--bias', type=float, default=0.0, help="Graves' sampling bias (0: unbiased; ~1: neater).")
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max_points', type=int, default=0, help='Most points to draw (0: 40 per character).')
  args = parser.parse_args(argv)
  problems = []
  if not args.text.strip():
    problems.append('--text is empty: give the text to write, e.g. --text "hello world".')
  outside = unwritable_characters(args.text)
  if outside:
    problems.append(
      f'--text has characters the model cannot write: {"".join(outside)!r} (its alphabet: letters, space and '
      f'{data.ALPHABET[-3:]!r}). Fix: leave them out or replace them.'
    )
  if not (math.isfinite(args.bias) and args.bias >= 0):
    problems.append(f'--bias must be a number >= 0; got {args.bias}. Fix: e.g. --bias 0.5')
  if args.max_points < 0:
    problems.append(f'--max_points must be >= 0; got {args.max_points}. Fix: e.g. --max_points 600')
  if not args.out.lower().endswith('.png'):
    problems.append(f'--out must name a .png file; got {args.out!r}. Fix: e.g. --out hw.png')
  out_dir = os.path.dirname(args.out) or '.'
  if not os.path.isdir(out_dir):
    problems.append(f'--out {args.out}: the directory {out_dir} does not exist. Fix: mkdir -p {out_dir}.')
  if problems:
    raise cli_errors.CommandError(' '.join(problems))
  try:
    paths = write_samples(args.workdir, args.text, args.out, bias=args.bias, seed=args.seed, max_points=args.max_points)
  except (FileNotFoundError, ValueError) as e:  # No run there, no best checkpoint, or another alphabet.
    raise cli_errors.CommandError(
      f'{e} Fix: --workdir of a run trained by python -m experiments.handwriting --config configs/handwriting.py.',
      cli_errors.EXIT_WORKDIR,
    ) from e
  print('\n'.join(paths))
  return 0


if __name__ == '__main__':
  sys.exit(main())
