"""python -m experiments.attentive_reader --config configs/attentive_reader.py[:variants] --workdir DIR"""

from experiments import cli
from experiments.attentive_reader import task

if __name__ == '__main__':
  cli.run(cli.make_main(task.train_and_evaluate, task.validate))
