"""Training: recipes (hyperparameters as data), steps (one update, registered by kind), the engine (loop,
checkpoints, logs, resume), and `train` (run.py), which wires them together. See docs/TRAINING.md.

Examples:
    >>> import tfdehaze.train as training
    >>> training.train.__module__, training.Trainer.__module__, training.get_recipe("minet").step
    ('tfdehaze.train.run', 'tfdehaze.train.engine', 'supervised')
"""
import importlib
from typing import Any

# Each name is imported from its module on first use (PEP 562), so `tfdehaze.train.recipes` loads without
# TensorFlow: the command line checks its arguments before TensorFlow starts. Add new names here.
_EXPORTS = {
    "tfdehaze.train.adam": ("FusedAdam",),
    "tfdehaze.train.engine": ("NonFiniteLossError", "RunDirError", "Trainer", "has_checkpoints",
                              "refuse_existing_run"),
    "tfdehaze.train.recipes": ("Recipe", "build_optimizer", "get_recipe"),
    "tfdehaze.train.run": ("default_run_dir", "load_pairs", "train"),
    "tfdehaze.train.steps": ("DistillationStep", "GANStep", "Step", "SupervisedStep"),
    "tfdehaze.train.strategy": ("WorkerLostError", "is_chief", "make_strategy", "worker_lost"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
