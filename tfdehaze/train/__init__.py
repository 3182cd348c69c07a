"""Training: recipes (hyperparameters as data), steps (one update, registered by kind), the engine (loop,
checkpoints, logs, resume), and `train` (run.py), which wires them together. See docs/TRAINING.md.

Examples:
    >>> import tfdehaze.train as training
    >>> training.train.__module__, training.Trainer.__module__, training.get_recipe("minet").step
    ('tfdehaze.train.run', 'tfdehaze.train.engine', 'supervised')
"""
from tfdehaze.train.engine import NonFiniteLossError, RunDirError, Trainer, has_checkpoints, refuse_existing_run
from tfdehaze.train.recipes import Recipe, build_optimizer, get_recipe
from tfdehaze.train.run import default_run_dir, load_pairs, train
from tfdehaze.train.steps import DistillationStep, GANStep, Step, SupervisedStep
from tfdehaze.train.strategy import is_chief, make_strategy

__all__ = ["DistillationStep", "GANStep", "NonFiniteLossError", "Recipe", "RunDirError", "Step", "SupervisedStep",
           "Trainer", "build_optimizer", "default_run_dir", "get_recipe", "has_checkpoints", "is_chief",
           "load_pairs", "make_strategy", "refuse_existing_run", "train"]
