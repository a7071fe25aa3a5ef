"""python -m experiments.mnist --config configs/mnist.py[:variants] --workdir DIR [--config.field=value ...]"""

from experiments import cli
from experiments.mnist import task

if __name__ == '__main__':
  cli.run(cli.make_main(task.train_and_evaluate, task.validate))
