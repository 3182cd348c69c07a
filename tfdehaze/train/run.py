"""``train(recipe)``: data pairs -> `tfdehaze.data.pipeline` -> a model from the model registry -> the recipe's step
kind -> `engine.Trainer`. See docs/TRAINING.md."""
from __future__ import annotations

import datetime
import os
import pathlib
from typing import TYPE_CHECKING, Any

import keras

from tfdehaze import precision
from tfdehaze.models import registry
from tfdehaze.registry import MODELS, STEPS
from tfdehaze.train import steps as _steps  # noqa: F401  (registers the step kinds)
from tfdehaze.train.engine import RunDirError, RunDirLock, Trainer
from tfdehaze.train.recipes import Recipe, get_recipe
from tfdehaze.train.strategy import is_chief, make_strategy

if TYPE_CHECKING:
    import pandas as pd

# Fields a resumed run may change; any other difference from the run's config.json is refused.
RESUMABLE_CHANGES = ("steps", "epochs", "checkpoint_every", "log_every", "sample_every", "keep", "data",
                     "precision")


def default_run_dir(model_name: str) -> pathlib.Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>`` under the current directory.

    Examples:
        >>> from tfdehaze.train import default_run_dir
        >>> path = default_run_dir("minet")
        >>> path.parent.name, path.name.startswith("minet-"), len(path.name)  # minet-YYYYmmdd-HHMMSS
        ('runs', True, 21)
    """
    return pathlib.Path("runs") / f"{model_name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def load_pairs(data: dict[str, str] | None = None) -> pd.DataFrame:
    """The training pairs a recipe's ``data`` field names (None: the bundled sample set) as a DataFrame.

    ``data`` is ``{"manifest": CSV}`` (`tfdehaze.data.datasets.read_manifest`) or ``{"hazy": DIR, "clear": DIR}``
    (`tfdehaze.data.datasets.pair_folders`).

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from tfdehaze.data.io import write_image
        >>> from tfdehaze.train import load_pairs
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png"):
        ...     for folder in ("hazy", "clear"):
        ...         _ = write_image(root / folder / name, np.full((8, 8, 3), 0.5))
        >>> pairs = load_pairs({"hazy": str(root / "hazy"), "clear": str(root / "clear")})
        >>> list(pairs.columns), [pathlib.Path(path).name for path in pairs["clear"]]
        (['hazy', 'clear'], ['a.png', 'b.png'])
    """
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


def _training_length(recipe: Recipe, n_pairs: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of a recipe over ``n_pairs`` training pairs."""
    steps_per_epoch = n_pairs // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{n_pairs} training pairs is fewer than the batch size {recipe.batch_size}")
    if recipe.steps is None and recipe.epochs is None:
        raise ValueError("the recipe gives neither steps nor epochs")
    return steps_per_epoch, recipe.steps or recipe.epochs * steps_per_epoch


def train(recipe: Recipe | str, pairs: pd.DataFrame | None = None, run_dir: str | os.PathLike | None = None,
          resume: bool = False, distribute: str = "auto", validate: bool = True, verbose: int = 1) -> dict[str, Any]:
    """Train a model from a recipe; returns `Trainer.fit`'s dict (run_dir, step, losses, checkpoint, weights).

    recipe: a `Recipe` or a recipe name. pairs: a DataFrame with columns ``hazy, clear`` (default: what
    ``recipe.data`` names, else the bundled sample set). run_dir: default ``runs/<model>-<timestamp>``.
    resume: continue from the run directory's latest checkpoint (the recipe may change only the training length,
    intervals and data location). distribute: ``auto | none | mirrored | multi-worker`` (`make_strategy`).
    validate: decode every image once first and name the bad files (`tfdehaze.data.datasets.validate`).

    The pairs used are written to ``run_dir/data.csv`` and ``config.json`` points at it, so the run can be
    reproduced from ``config.json`` alone.

    Examples:
        Two steps of a tiny MI-Net on two 16x16 pairs (``train("minet")`` alone would train the paper's network
        on the bundled sample set):

        >>> import json, pathlib, tempfile
        >>> import numpy as np
        >>> import pandas as pd
        >>> from tfdehaze.data.io import write_image
        >>> from tfdehaze.train import get_recipe, train
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> rng = np.random.default_rng(0)
        >>> pairs = pd.DataFrame({folder: [str(write_image(root / folder / f"{i}.png", rng.random((16, 16, 3))))
        ...                                for i in range(2)] for folder in ("hazy", "clear")})
        >>> recipe = get_recipe("minet").replace(model_kwargs={"filters": 4, "steps": 1, "reduction": 2},
        ...                                      image_size=16, batch_size=1, steps=2)
        >>> result = train(recipe, pairs=pairs, run_dir=root / "run", distribute="none", verbose=0)
        >>> result["step"], sorted(result["losses"]), result["checkpoint"].endswith("ckpt-2")
        (2, ['loss'], True)
        >>> sorted(path.name for path in (root / "run").iterdir())
        ['checkpoints', 'config.json', 'data.csv', 'logs', 'metrics.csv', 'model.keras', 'model.weights.h5']
        >>> config = json.loads((root / "run" / "config.json").read_text())
        >>> config["model_kwargs"], config["data"]["manifest"].endswith("data.csv")
        ({'filters': 4, 'reduction': 2, 'steps': 1}, True)
    """
    from tfdehaze.data import datasets, pipeline

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    step_kind = STEPS.get(recipe.step)   # unknown names fail here, before any file is written
    MODELS.get(recipe.model)
    run_dir = pathlib.Path(run_dir) if run_dir is not None else default_run_dir(recipe.model)
    # First TensorFlow work of the run: MultiWorkerMirroredStrategy must exist before TensorFlow initialises devices.
    strategy = make_strategy(distribute)
    chief = is_chief(strategy)
    # Checks the directory (another run's files, another live run), then locks it for the whole run: before
    # anything is written into it.
    # The dtype policy every model, teacher and loss network of the run is built under (checkpoints hold float32
    # variables in every policy, so a run may resume in another precision).
    policy, why = precision.resolve(recipe.precision)
    with RunDirLock(run_dir, resume, chief=chief), precision.policy(policy):
        if verbose and chief:
            print(f"Precision: {policy} ({why})")
        if resume:
            _check_resumable(run_dir, recipe)
        if pairs is None:
            pairs = load_pairs(recipe.data)
        if validate:
            datasets.validate(pairs)
        steps_per_epoch, total_steps = _training_length(recipe, len(pairs))

        # Models, teacher and losses (e.g. the VGG19 weights file) before anything is written into the run directory.
        keras.utils.set_random_seed(recipe.seed)
        with strategy.scope():
            model = registry.build(recipe.model, **recipe.model_kwargs)
            step = step_kind.obj.from_recipe(recipe, model, steps_per_epoch)
        registry.check_training_size(step, recipe.crop_size or recipe.image_size,
                                     "crop_size" if recipe.crop_size else "image_size")

        pairs = pairs.assign(**{column: [os.path.abspath(path) for path in pairs[column]]
                                for column in ("hazy", "clear", "transmission") if column in pairs})
        manifest = run_dir / "data.csv"
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            datasets.write_manifest(pairs, manifest)
        recipe = recipe.replace(data={"manifest": str(manifest.resolve())})
        # Transmission maps enter the batch when the data has them and a loss term reads them (KDDN's WFMIL).
        with_transmission = "transmission" in pairs and any(term.reads("transmission") for term in step.terms)

        def dataset_for_epoch(epoch):
            return pipeline.paired_dataset(pairs, image_size=recipe.image_size, crop_size=recipe.crop_size,
                                           flip=recipe.flip, batch_size=recipe.batch_size, shuffle=True,
                                           repeat=False, seed=recipe.seed + epoch, validate=False,
                                           with_transmission=with_transmission)

        trainer = Trainer(step, dataset_for_epoch, run_dir, strategy=strategy, config=recipe, verbose=verbose)
        return trainer.fit(total_steps, resume=resume)
