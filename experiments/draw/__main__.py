"""python -m experiments.draw --config configs/draw.py[:variants] --workdir DIR [--config.field=value ...]"""

from experiments import cli
from experiments.draw import task

if __name__ == '__main__':
  cli.run(cli.make_main(task.train_and_evaluate, task.validate))
