"""Data sources shared by the experiments.

`mnist.load_mnist` (permutation-invariant MNIST, Figure 6) and `binarized_mnist.load_binarized_mnist` (DRAW,
Figure 4) read the paper's data in its published format or through TFDS, or run offline on Fashion-MNIST (IDX) or
scikit-learn's digits; each module's `check_source` is what an experiment's `validate(config)` calls. `text` holds
what text experiments share: vocabularies and ragged token sequences padded per batch.

`home(name)` is where `python -m scripts.get_data NAME` writes a data set ($LAYERNORM_DATA/NAME, else
~/.cache/layernorm/data/NAME): the configs' `real` variants read from there without flags.
"""

import os

DATA_ENV = 'LAYERNORM_DATA'
DEFAULT_HOME = os.path.join('~', '.cache', 'layernorm', 'data')


def data_home() -> str:
  """Where fetched data lives: $LAYERNORM_DATA, else ~/.cache/layernorm/data."""
  return os.path.expanduser(os.environ.get(DATA_ENV) or DEFAULT_HOME)


def home(name: str) -> str:
  """DATA/NAME under `data_home()`: the directory `python -m scripts.get_data NAME` fills."""
  return os.path.join(data_home(), name)


class DataError(ValueError):
  """Missing, truncated or malformed data; the message names the file and the fix.

  A ValueError, so callers that caught ValueError still do; `experiments.cli` maps it to exit status 2 (readers
  raise it while a run loads its data, after `validate`, where a plain ValueError could also be a bug).
  """
