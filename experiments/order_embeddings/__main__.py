"""python -m experiments.order_embeddings --config configs/order_embeddings.py[:variants] --workdir DIR"""

from experiments import cli
from experiments.order_embeddings import task

if __name__ == '__main__':
  cli.run(cli.make_main(task.train_and_evaluate, task.validate))
