"""python -m experiments.handwriting --config configs/handwriting.py[:variants] --workdir DIR [--config.field=value]"""

from experiments import cli
from experiments.handwriting import task

if __name__ == '__main__':
  cli.run(cli.make_main(task.train_and_evaluate, task.validate))
