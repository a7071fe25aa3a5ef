"""Layer normalization (Ba, Kiros & Hinton 2016) for JAX and Flax NNX.

The pure op `layer_norm`, the modules `LayerNorm` and the baseline `BatchNorm`, the recurrent cells of the paper's
appendix (with the recurrent batch-norm baseline) and `unroll`, which runs a cell over a sequence.
"""

from layernorm.cells import BNLSTMCell, DRAWLSTMCell, GRUCell, LNGRUCell, LNLSTMCell, LSTMCell
from layernorm.normalization import BatchNorm, LayerNorm, batch_norm_statistics
from layernorm.ops import layer_norm
from layernorm.recurrent import unroll

__all__ = [
  'BNLSTMCell',
  'BatchNorm',
  'DRAWLSTMCell',
  'GRUCell',
  'LNGRUCell',
  'LNLSTMCell',
  'LSTMCell',
  'LayerNorm',
  'batch_norm_statistics',
  'layer_norm',
  'unroll',
]
