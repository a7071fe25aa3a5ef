"""An epoch as people read it: `epoch 0.0029`, `epoch 8.17`, not `epoch 0.002909090909090909`.

The loop logs an epoch as the float step / steps_per_epoch, and metrics.jsonl keeps it at full precision; this is only
for the lines printed to people (the loop's progress and evaluation lines, scripts.report's tables). No jax.
"""

import math


def format_epoch(epoch: float) -> str:
  """Two decimals from epoch 1 on ('8.17', '8' for a whole epoch); below 1, two significant digits ('0.0029').

  Below one epoch two decimals would print early evaluations of a large data set all as '0.00'.
  """
  if epoch == 0 or not math.isfinite(epoch):
    return f'{epoch:g}'
  decimals = 2 if abs(epoch) >= 1 else 1 - math.floor(math.log10(abs(epoch)))
  text = f'{epoch:.{decimals}f}'
  return text.rstrip('0').rstrip('.') if '.' in text else text
