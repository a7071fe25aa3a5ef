"""Layer normalization (Ba, Kiros & Hinton 2016) for JAX and Flax NNX.

The pure op `layer_norm`, the modules `LayerNorm` and the baseline `BatchNorm`.
"""

from layernorm.normalization import BatchNorm, LayerNorm, batch_norm_statistics
from layernorm.ops import layer_norm

__all__ = [
  'BatchNorm',
  'LayerNorm',
  'batch_norm_statistics',
  'layer_norm',
]
