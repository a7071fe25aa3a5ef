"""The one training loop every experiment shares, one module per concern.

task            Task: what an experiment gives the loop
run             train(config, workdir, task): the loop itself
schedule        which examples each step sees; when to log, evaluate, checkpoint
data            Source, ArraySource: batches built on the host from example indices
steps           the jitted training chunk and evaluation batch
evaluation      split means, whole-split evaluators
optim           make_optimizer: Adam as the paper's code ran it, clipping, schedules
state           the model and training state; state_io: workdir claim, best model, load_model
checkpoints     Orbax checkpoints with digests; metric_writers: metrics.jsonl and TensorBoard
(experiments.workdir: the workdir's files, without jax, read by scripts/plot.py and scripts/report.py too)
config_checks   validation of the loop's config fields and the part every experiment's validate shares
"""

from experiments.loop.checkpoints import CheckpointMismatchError
from experiments.loop.config_checks import (
  check_experiment,
  config_problems,
  data_errors,
  default_best_mode,
  raise_config_problems,
  validate_training_config,
)
from experiments.loop.data import ArraySource, Source
from experiments.loop.errors import ConfigError, DivergedError, Interrupted, WorkdirError
from experiments.loop.evaluation import EvalContext, Evaluator
from experiments.loop.optim import make_optimizer
from experiments.loop.run import train
from experiments.loop.schedule import Schedule
from experiments.loop.state import model_rngs
from experiments.loop.state_io import init_model, load_model, read_config
from experiments.loop.task import Task
from experiments.workdir import read_best, read_rows, read_status, read_task_metadata

__all__ = [
  'ArraySource',
  'CheckpointMismatchError',
  'ConfigError',
  'DivergedError',
  'EvalContext',
  'Evaluator',
  'Interrupted',
  'Schedule',
  'Source',
  'Task',
  'WorkdirError',
  'check_experiment',
  'config_problems',
  'data_errors',
  'default_best_mode',
  'init_model',
  'load_model',
  'make_optimizer',
  'model_rngs',
  'raise_config_problems',
  'read_best',
  'read_config',
  'read_rows',
  'read_status',
  'read_task_metadata',
  'train',
  'validate_training_config',
]
