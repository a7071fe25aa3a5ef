"""One spelling per flag across the project's commands: words joined by underscores (`--dry_run`, `--num_examples`).

Underscores are what most of the project's flags use and the only spelling absl (the experiments' command line)
accepts. A few argparse flags were spelled with hyphens (`--dry-run`); `add_flag` declares the underscore spelling and
keeps the hyphenated one working, hidden from --help, so commands written before keep running. No jax.
"""

from __future__ import annotations

import argparse

# What the hidden spelling needs to parse its value the way the shown one does; help, default and dest are the shown
# one's alone (a second default would overwrite the first).
_PARSING = ('action', 'nargs', 'const', 'type', 'choices', 'metavar')


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
  """`parser.add_argument(name, **kwargs)`, plus `name` with hyphens for underscores, accepted and not shown.

  Args:
    parser: the command's parser.
    name: the flag in the project's spelling, e.g. '--dry_run'.
    **kwargs: as for `add_argument`.
  """
  if not name.startswith('--') or '-' in name[2:]:
    raise ValueError(f'{name!r}: spell a flag with underscores (--dry_run); its hyphenated form is added here.')
  action = parser.add_argument(name, **kwargs)
  if '_' in name:
    hidden = {k: v for k, v in kwargs.items() if k in _PARSING}
    parser.add_argument(
      name.replace('_', '-'), dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **hidden
    )
