"""What the six experiments' tests check alike about `norm=`: which normalization modules a built or trained model
holds, so that `norm=rms` cannot pass with a layer norm left in place (or `norm=ln` with an RMS norm)."""

from flax import nnx

from layernorm import LayerNorm, RMSNorm

MODULE_OF = {'ln': LayerNorm, 'rms': RMSNorm}


def norm_modules(model: nnx.Module) -> list[type]:
  """The exact types of every LayerNorm and RMSNorm in `model`, in graph order."""
  return [type(m) for _, m in nnx.iter_graph(model) if isinstance(m, LayerNorm | RMSNorm)]


def assert_normalized_by(model: nnx.Module, norm: str, count: int) -> None:
  """`model` holds exactly `count` norm modules, all of `norm`'s kind ('ln': LayerNorm, 'rms': RMSNorm)."""
  assert norm_modules(model) == [MODULE_OF[norm]] * count, norm_modules(model)
