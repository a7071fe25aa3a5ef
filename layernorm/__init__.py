"""Layer normalization (Ba, Kiros & Hinton 2016) for JAX and Flax NNX.

The pure op `layer_norm`, the module `LayerNorm`, and the baselines `BatchNorm` and `WeightNorm` (`WeightNormLinear`).
`layernorm.invariance` measures the paper's Table 1.
"""

from layernorm.normalization import BatchNorm, LayerNorm, batch_norm_statistics
from layernorm.ops import layer_norm
from layernorm.weight_norm import WeightNorm, WeightNormLinear

__all__ = [
  'BatchNorm',
  'LayerNorm',
  'WeightNorm',
  'WeightNormLinear',
  'batch_norm_statistics',
  'layer_norm',
]
