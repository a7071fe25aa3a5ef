"""What the loop reads batches from: a `Source` of examples addressed by index, and the stacking of steps' batches.

A source is anything with `len(source)` and `source.batch(indices) -> {name: array [len(indices), ...]}`:
`ArraySource` over in-memory or memory-mapped arrays (`np.load(path, mmap_mode='r')`: paper-scale corpora stay on
disk and the OS pages in only the rows a batch touches), or a task's own class that builds batches on the host
(variable-length sequences padded per batch with masks, sentence triples looked up in one corpus, chunks of long
sequences). A source may also give `order(seed, epoch) -> permutation` (e.g. to group examples of similar length
into batches); the default is a uniform permutation. Both are functions of their arguments only, so the batch a step
sees is a function of (seed, step) and a resumed run is bit-identical.

Batches of one dispatch are stacked along a new leading axis; where their shapes differ (per-batch padding), each
is padded with zeros to the largest, so a source that pads must also return a mask that is 0 on padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import jax
import numpy as np
from jax.sharding import NamedSharding

from experiments.loop.schedule import uniform_order


@runtime_checkable
class Source(Protocol):
  def __len__(self) -> int: ...

  def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]: ...


class ArraySource:
  """Examples that are rows of arrays with a common leading dimension (np.ndarray or np.memmap)."""

  def __init__(self, arrays: Mapping[str, np.ndarray], name: str = 'data'):
    sizes = {k: len(v) for k, v in arrays.items()}
    if not sizes or len(set(sizes.values())) != 1:
      raise ValueError(f'Task {name} must be a non-empty dict of arrays with a common leading dimension; got {sizes}.')
    self.arrays = dict(arrays)
    self._size = next(iter(sizes.values()))

  def __len__(self) -> int:
    return self._size

  def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v[indices]) for k, v in self.arrays.items()}


def as_source(data: Source | Mapping[str, np.ndarray], name: str) -> Source:
  """`data` as a Source (a dict of arrays becomes an ArraySource)."""
  if isinstance(data, Mapping):
    return ArraySource(data, name)
  if not isinstance(data, Source):
    raise TypeError(f'Task {name} must be a dict of arrays or a Source (len() and batch(indices)); got {type(data)}.')
  return data


def epoch_order(source: Source, seed: int, epoch: int) -> np.ndarray:
  """The order of the examples in `epoch`: the source's own `order`, else a uniform permutation."""
  order = getattr(source, 'order', None)
  if order is not None:
    return np.asarray(order(seed, epoch))
  return uniform_order(seed, epoch, len(source))


def stack_padded(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Stacks per-step batches along a new axis 0, zero-padding each array to the largest shape among them."""
  out = {}
  for key in batches[0]:
    arrays = [np.asarray(b[key]) for b in batches]
    shape = np.max([a.shape for a in arrays], axis=0)
    if all(a.shape == tuple(shape) for a in arrays):
      out[key] = np.stack(arrays)
      continue
    stacked = np.zeros((len(arrays), *shape), arrays[0].dtype)
    for i, a in enumerate(arrays):
      stacked[(i, *(slice(0, n) for n in a.shape))] = a
    out[key] = stacked
  return out


def local_rows(sharding: NamedSharding, global_shape: tuple[int, ...], axis: int) -> slice:
  """The rows along `axis` of a global array that this process's devices hold (contiguous for a 1-D data mesh)."""
  indices = sharding.addressable_devices_indices_map(global_shape).values()
  starts = [idx[axis].start or 0 for idx in indices]
  stops = [global_shape[axis] if idx[axis].stop is None else idx[axis].stop for idx in indices]
  return slice(min(starts), max(stops))


def put_global(source: Source, indices: np.ndarray, sharding: NamedSharding, axis: int, build) -> dict[str, jax.Array]:
  """Builds the batch of `indices` (global) and places it with `sharding`; each process builds only its own rows.

  Args:
    source: where examples come from.
    indices: global example indices, batch rows along `axis` ([steps, B] for a train chunk, [B] for eval).
    sharding: the batch's sharding (split along `axis` over the data mesh).
    axis: the batch axis of `indices`.
    build: (source, local indices) -> host arrays of the local rows.
  """
  if jax.process_count() == 1:
    return jax.device_put(build(source, indices), sharding)
  rows = local_rows(sharding, indices.shape, axis)
  local = build(source, np.take(indices, np.arange(rows.start, rows.stop), axis=axis))
  global_shape = lambda a: (*a.shape[:axis], indices.shape[axis], *a.shape[axis + 1 :])
  return {k: jax.make_array_from_process_local_data(sharding, a, global_shape(a)) for k, a in local.items()}


def put_mask(mask: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host mask every process holds in full, placed with `sharding` (each process supplies its own shards)."""
  return jax.make_array_from_callback(mask.shape, sharding, lambda index: mask[index])
