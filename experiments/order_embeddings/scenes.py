"""Procedural image-caption data: rendered scenes of shapes, each with 5 captions at 5 levels of detail.

A scene holds 2-4 objects, each a shape (circle, square, triangle, diamond, cross) of a colour (8) and a size (small,
large) at a position, drawn on a 32x32 RGB canvas with a random dark background, colour jitter and pixel noise. Its
captions go from general to specific, so that a short caption is implied by (is an abstraction of) a longer one:
the partial order order-embeddings model.

  level 1  one attribute of one object             'a red object', 'a circle'
  level 2  one object, colour and shape (+ size)   'a large red circle'
  level 3  two objects                             'a red circle and a small blue square'
  level 4  two objects and their relation          'a red circle left of a blue square'
  level 5  the object count, every object and      'three objects : a small red circle at the top left , ...'
           its region of the canvas

A level-1 caption fits about a third of all scenes, a level-5 caption (nearly) one: image retrieval R@1 cannot reach
100 %, as on COCO, where many captions are generic. Everything is a function of the seed alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SIDE = 32
SHAPES = ('circle', 'square', 'triangle', 'diamond', 'cross')
COLOURS = {
  'red': (0.9, 0.1, 0.1),
  'green': (0.1, 0.75, 0.2),
  'blue': (0.15, 0.3, 0.95),
  'yellow': (0.95, 0.9, 0.1),
  'purple': (0.6, 0.2, 0.8),
  'orange': (1.0, 0.55, 0.0),
  'white': (0.95, 0.95, 0.95),
  'cyan': (0.1, 0.85, 0.9),
}
SIZES = {'small': 3.2, 'large': 5.6}  # Half-extent in pixels.
COUNTS = {2: 'two', 3: 'three', 4: 'four'}
CAPTIONS_PER_IMAGE = 5
_COLOUR_JITTER = 0.08
_NOISE = 0.03


@dataclasses.dataclass(frozen=True)
class Thing:
  shape: str
  colour: str
  size: str
  x: float  # Centre, pixels from the left.
  y: float  # Centre, pixels from the top.


def _mask(thing: Thing, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
  r = SIZES[thing.size]
  dx, dy = xx - thing.x, yy - thing.y
  ax, ay = np.abs(dx), np.abs(dy)
  if thing.shape == 'circle':
    return dx * dx + dy * dy <= r * r
  if thing.shape == 'square':
    return np.maximum(ax, ay) <= 0.85 * r
  if thing.shape == 'diamond':
    return ax + ay <= 1.15 * r
  if thing.shape == 'triangle':  # Apex up.
    return (dy >= -r) & (dy <= 0.8 * r) & (ax <= 0.6 * (dy + r))
  return ((ax <= 0.35 * r) & (ay <= r)) | ((ay <= 0.35 * r) & (ax <= r))  # cross


def sample_scene(rng: np.random.Generator) -> list[Thing]:
  """2-4 objects with random attributes, placed so that no two overlap much (rejection sampling)."""
  count = int(rng.integers(2, 5))
  things: list[Thing] = []
  while len(things) < count:
    size = ('small', 'large')[int(rng.integers(2))]
    r = SIZES[size]
    for _ in range(50):
      x, y = rng.uniform(r + 0.5, SIDE - r - 0.5, size=2)
      if all((x - t.x) ** 2 + (y - t.y) ** 2 >= (r + SIZES[t.size] - 1) ** 2 for t in things):
        break
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    things.append(Thing(shape, colour, size, float(x), float(y)))
  return things


def render(things: list[Thing], rng: np.random.Generator) -> np.ndarray:
  """The scene as uint8 RGB [32, 32, 3]: later objects are drawn over earlier ones."""
  yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) + 0.5
  canvas = np.empty((SIDE, SIDE, 3), np.float32)
  canvas[:] = rng.uniform(0.0, 0.25) + rng.uniform(-0.05, 0.05, size=3)
  for thing in things:
    colour = np.asarray(COLOURS[thing.colour]) + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, size=3)
    canvas[_mask(thing, yy, xx)] = colour
  canvas += rng.normal(0.0, _NOISE, size=canvas.shape)
  return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)


def _region(thing: Thing) -> str:
  third = SIDE / 3
  col = 'left' if thing.x < third else ('right' if thing.x > 2 * third else '')
  row = 'top' if thing.y < third else ('bottom' if thing.y > 2 * third else '')
  if row and col:
    return f'at the {row} {col}'
  if row:
    return f'at the {row}'
  return f'on the {col}' if col else 'in the middle'


def _relation(a: Thing, b: Thing) -> str:
  """Where `a` is relative to `b`, along the axis on which they are further apart (y grows downwards)."""
  dx, dy = b.x - a.x, b.y - a.y
  if abs(dx) >= abs(dy):
    return 'left of' if dx > 0 else 'right of'
  return 'above' if dy > 0 else 'below'


def _phrase(thing: Thing, size: bool) -> str:
  return f'a {thing.size} {thing.colour} {thing.shape}' if size else f'a {thing.colour} {thing.shape}'


def captions(things: list[Thing], rng: np.random.Generator) -> list[str]:
  """The scene's 5 captions, level 1 (most general) to level 5 (every object); see the module docstring."""
  order = rng.permutation(len(things))
  a, b = things[order[0]], things[order[1]]
  with_size = lambda: bool(rng.integers(2))
  one_attribute = f'a {a.colour} object' if rng.integers(2) else f'a {a.shape}'
  everything = ' , '.join(f'{_phrase(t, True)} {_region(t)}' for t in things)
  single = _phrase(a, with_size())
  pair = (_phrase(a, with_size()), _phrase(b, with_size()))  # Level 4 adds the relation to level 3's phrases.
  return [
    one_attribute,
    single,
    f'{pair[0]} and {pair[1]}',
    f'{pair[0]} {_relation(a, b)} {pair[1]}',
    f'{COUNTS[len(things)]} objects : {everything}',
  ]


def generate(num_images: int, seed: int) -> tuple[np.ndarray, list[str]]:
  """`num_images` scenes from `seed`: (uint8 RGB [N, 32, 32, 3], captions [5N], those of image i at 5i..5i+4)."""
  rng = np.random.default_rng(seed)
  images = np.empty((num_images, SIDE, SIDE, 3), np.uint8)
  texts: list[str] = []
  for i in range(num_images):
    things = sample_scene(rng)
    images[i] = render(things, rng)
    texts.extend(captions(things, rng))
  return images, texts


# ----------------------------------------------------------------------------------------------------------------------
# The fixed image encoder: a random convolution, the stand-in for VGG-19's fc7.

PATCH = 4
CHANNELS = 64  # (32 / 4)^2 positions x 64 channels = 4,096 features, VGG fc7's size.
FEATURES = (SIDE // PATCH) ** 2 * CHANNELS


@dataclasses.dataclass(frozen=True)
class RandomConvEncoder:
  """A fixed random convolution (4x4 kernels, stride 4, 64 channels, ReLU) over centred pixels, then L2-normalized.

  Like the authors' fc7 features: non-negative, 4,096-d, unit L2 norm; a function of `seed` alone. Linear read-outs
  of it carry colour and position well and shape only in part, so the image encoder has something to learn.
  """

  seed: int = 0

  def weights(self) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([self.seed, 4096])
    fan_in = PATCH * PATCH * 3
    kernel = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=(fan_in, CHANNELS)).astype(np.float32)
    bias = rng.normal(0.0, 0.1, size=CHANNELS).astype(np.float32)
    return kernel, bias

  def __call__(self, images_NxHxWx3: np.ndarray) -> np.ndarray:
    kernel, bias = self.weights()
    n = len(images_NxHxWx3)
    x = images_NxHxWx3.astype(np.float32) / 255.0 - 0.5
    g = SIDE // PATCH
    patches = x.reshape(n, g, PATCH, g, PATCH, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, -1)
    features = np.maximum(patches @ kernel + bias, 0.0).reshape(n, FEATURES)
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norm, 1e-12)
