"""python -m experiments.skip_thoughts --config configs/skip_thoughts.py[:variants] --workdir DIR [--config.x=v ...]"""

from experiments import cli
from experiments.skip_thoughts import task

if __name__ == '__main__':
  cli.run(cli.make_main(task.train_and_evaluate, task.validate))
