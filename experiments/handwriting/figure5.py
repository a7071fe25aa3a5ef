"""Figure 5: training and test NLL per sequence against updates (log x axis), one pair of curves per run.

  python -m experiments.handwriting.figure5 runs/fig5/norm=none runs/fig5/norm=ln --out fig5.png

Reads only the workdirs' metrics.jsonl and config.json (no jax). The training curve is the loop's `train/loss` (the
mean over the steps since the previous log), the test curve `eval/test/nll`; the paper plots the log-likelihood,
i.e. these with the sign flipped, so its curves go down where ours go down too.
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments import workdir as wd

LABELS = {'none': 'Baseline', 'ln': 'LN'}


def curves(workdir: str) -> tuple[str, dict[str, tuple[list[int], list[float]]]]:
  """(label, {'train' | 'test': (steps, NLL per sequence)}) of one run."""
  config = wd.read_saved_config(workdir)
  if config is None:
    raise FileNotFoundError(f'{workdir} has no config.json: is it a workdir of experiments.handwriting?')
  label = LABELS.get(config.get('model', {}).get('norm'), os.path.basename(workdir.rstrip('/')))
  out = {}
  for name, key in (('train', 'train/loss'), ('test', 'eval/test/nll')):
    rows = [r for r in wd.read_rows(workdir) if key in r]
    out[name] = ([r['step'] for r in rows], [r[key] for r in rows])
  return label, out


def plot(workdirs: list[str], out: str) -> str:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4.2))
  for k, workdir in enumerate(workdirs):
    label, runs = curves(workdir)
    color = f'C{k}'
    ax.plot(*runs['test'], '-', color=color, label=f'{label} test')
    ax.plot(*runs['train'], ':', color=color, alpha=0.8, label=f'{label} train')
  ax.set_xscale('log')
  ax.set_xlabel('updates')
  ax.set_ylabel('negative log likelihood per sequence (nats)')
  ax.set_title('Handwriting synthesis (Figure 5)')
  ax.legend()
  ax.grid(alpha=0.3, which='both')
  fig.savefig(out, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  try:
    print(plot(args.workdirs, args.out))
  except FileNotFoundError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
