"""Layer normalization (Ba, Kiros & Hinton 2016) for JAX and Flax NNX.

The pure ops `layer_norm` and `rms_norm`; the modules `LayerNorm` and `RMSNorm` (drop-ins for flax's) and the baselines
`BatchNorm` and `WeightNorm` (`WeightNormLinear`); the recurrent cells of the paper's appendix (with the recurrent
batch-norm baseline, and the RMS-normalized counterparts of the LN cells), `nnx.RNNCellBase` cells that also run in
`nnx.RNN`, and `unroll`, which runs a cell over a sequence in one `lax.scan`, and `step`, one step of a cell (both on
fused kernels for the LSTM cells).
`layernorm.invariance` measures the paper's Table 1.
"""

from layernorm.cells import (
  BNLSTMCell,
  DRAWLSTMCell,
  GRUCell,
  LNGRUCell,
  LNLSTMCell,
  LSTMCell,
  RMSDRAWLSTMCell,
  RMSGRUCell,
  RMSLSTMCell,
)
from layernorm.normalization import BatchNorm, LayerNorm, RMSNorm, batch_norm_statistics
from layernorm.ops import layer_norm, rms_norm
from layernorm.recurrent import unroll
from layernorm.single_step import step
from layernorm.weight_norm import WeightNorm, WeightNormLinear

__all__ = [
  'BNLSTMCell',
  'BatchNorm',
  'DRAWLSTMCell',
  'GRUCell',
  'LNGRUCell',
  'LNLSTMCell',
  'LSTMCell',
  'LayerNorm',
  'RMSDRAWLSTMCell',
  'RMSGRUCell',
  'RMSLSTMCell',
  'RMSNorm',
  'WeightNorm',
  'WeightNormLinear',
  'batch_norm_statistics',
  'layer_norm',
  'rms_norm',
  'step',
  'unroll',
]
