"""Training: recipes (hyperparameters as data), steps (one update), the engine (loop, checkpoints, logs, resume).

``train(recipe, pairs=None, run_dir=None, resume=False, distribute="auto")`` wires them together:
data pairs -> ``tfdehaze.data.pipeline`` -> model from ``tfdehaze.models.registry`` -> step -> `Trainer`.
See docs/TRAINING.md.
"""
import datetime
import os
import pathlib

from tfdehaze.train.engine import NonFiniteLossError, RunDirError, Trainer, has_checkpoints
from tfdehaze.train.recipes import Recipe, build_optimizer, get_recipe
from tfdehaze.train.steps import GANStep, Step, SupervisedStep
from tfdehaze.train.strategy import is_chief, make_strategy

__all__ = ["GANStep", "NonFiniteLossError", "Recipe", "RunDirError", "STEP_BUILDERS", "Step", "SupervisedStep",
           "Trainer", "build_optimizer", "default_run_dir", "get_recipe", "load_pairs", "make_strategy", "train"]

# Fields a resumed run may change; any other difference from the run's config.json is refused.
RESUMABLE_CHANGES = ("steps", "epochs", "checkpoint_every", "log_every", "sample_every", "keep", "data")


def _supervised_step(recipe, model, steps_per_epoch):
    from tfdehaze import losses
    return SupervisedStep(model, losses.weighted_sum(recipe.loss_weights), build_optimizer(recipe, steps_per_epoch))


def _gan_step(recipe, model, steps_per_epoch):
    from tfdehaze.models import PatchDiscriminator
    unknown = sorted(set(recipe.loss_weights) - {"l1", "gan"})
    if unknown:
        raise ValueError(f"the gan step takes loss weights 'l1' and 'gan', not {unknown}")
    return GANStep(model, PatchDiscriminator(**recipe.discriminator_kwargs),
                   build_optimizer(recipe, steps_per_epoch), build_optimizer(recipe, steps_per_epoch),
                   l1_weight=recipe.loss_weights.get("l1", 100.0), gan_weight=recipe.loss_weights.get("gan", 1.0))


# recipe.step -> builder(recipe, model, steps_per_epoch) -> Step, called inside strategy.scope().
# A paper that needs a new kind of step adds it here.
STEP_BUILDERS = {"supervised": _supervised_step, "gan": _gan_step}


def default_run_dir(model_name):
    """``runs/<model>-<YYYYmmdd-HHMMSS>`` under the current directory."""
    return pathlib.Path("runs") / f"{model_name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def load_pairs(data=None):
    """The training pairs a recipe's ``data`` field names (None: the bundled sample set) as a DataFrame."""
    from tfdehaze.data import datasets, sample
    if data is None:
        return datasets.read_manifest(pathlib.Path(sample.sample_dir()) / "manifest.csv")
    if "manifest" in data:
        return datasets.read_manifest(data["manifest"])
    return datasets.pair_folders(data["hazy"], data["clear"])


def _check_resumable(run_dir, recipe):
    saved_path = pathlib.Path(run_dir) / "config.json"
    if not saved_path.exists():
        return
    saved = Recipe.from_json(saved_path.read_text()).to_dict()
    changed = sorted(name for name, value in recipe.to_dict().items()
                     if name not in RESUMABLE_CHANGES and saved.get(name) != value)
    if changed:
        raise RunDirError(f"cannot resume {run_dir} with a different recipe: "
                          + "; ".join(f"{name} {saved.get(name)!r} -> {getattr(recipe, name)!r}" for name in changed))


def train(recipe, pairs=None, run_dir=None, resume=False, distribute="auto", validate=True, verbose=1):
    """Train a model from a recipe; returns `Trainer.fit`'s dict (run_dir, step, losses, checkpoint, weights).

    recipe: a `Recipe` or a recipe name. pairs: a DataFrame with columns ``hazy, clear`` (default: what
    ``recipe.data`` names, else the bundled sample set). run_dir: default ``runs/<model>-<timestamp>``.
    resume: continue from the run directory's latest checkpoint (the recipe may change only the training length,
    intervals and data location). distribute: ``auto | none | mirrored | multi-worker`` (`make_strategy`).
    validate: decode every image once first and name the bad files (`tfdehaze.data.datasets.validate`).

    The pairs used are written to ``run_dir/data.csv`` and ``config.json`` points at it, so the run can be
    reproduced from ``config.json`` alone.
    """
    import keras
    from tfdehaze.data import datasets, pipeline
    from tfdehaze.models import registry

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if recipe.step not in STEP_BUILDERS:
        raise ValueError(f"unknown step kind {recipe.step!r}; known: {', '.join(sorted(STEP_BUILDERS))}")
    if recipe.model not in registry.names():
        raise ValueError(f"unknown model {recipe.model!r}; known: {', '.join(registry.names())}")
    run_dir = pathlib.Path(run_dir) if run_dir is not None else default_run_dir(recipe.model)
    # First TensorFlow work of the run: MultiWorkerMirroredStrategy must exist before TensorFlow initialises devices.
    strategy = make_strategy(distribute)
    chief = is_chief(strategy)
    if resume:
        _check_resumable(run_dir, recipe)
    elif has_checkpoints(run_dir):
        raise RunDirError(f"run directory {run_dir} already has checkpoints; pass --resume (resume=True) to "
                          "continue that run, or choose another output directory")
    if pairs is None:
        pairs = load_pairs(recipe.data)
    if validate:
        datasets.validate(pairs)
    steps_per_epoch = len(pairs) // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(pairs)} training pairs is fewer than the batch size {recipe.batch_size}")
    if recipe.steps is None and recipe.epochs is None:
        raise ValueError("the recipe gives neither steps nor epochs")
    total_steps = recipe.steps or recipe.epochs * steps_per_epoch

    pairs = pairs.copy()
    for column in ("hazy", "clear", "transmission"):
        if column in pairs:
            pairs[column] = [os.path.abspath(path) for path in pairs[column]]
    manifest = run_dir / "data.csv"
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        datasets.write_manifest(pairs, manifest)
    recipe = recipe.replace(data={"manifest": str(manifest.resolve())})

    def dataset_for_epoch(epoch):
        return pipeline.paired_dataset(pairs, image_size=recipe.image_size, crop_size=recipe.crop_size,
                                       flip=recipe.flip, batch_size=recipe.batch_size, shuffle=True,
                                       repeat=False, seed=recipe.seed + epoch, validate=False)

    keras.utils.set_random_seed(recipe.seed)
    with strategy.scope():
        model = registry.build(recipe.model, **recipe.model_kwargs)
        step = STEP_BUILDERS[recipe.step](recipe, model, steps_per_epoch)
    trainer = Trainer(step, dataset_for_epoch, run_dir, strategy=strategy, config=recipe, verbose=verbose)
    return trainer.fit(total_steps, resume=resume)
