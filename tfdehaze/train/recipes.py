"""Each paper's training hyperparameters as data: a `Recipe` dataclass, saved as ``config.json`` in a run.

``get_recipe(name)`` returns a fresh copy of a named recipe; ``recipe.replace(**changes)`` overrides fields (the CLI
applies ``--config FILE`` first, then its flags); ``Recipe.from_json(text)`` / ``recipe.to_json()`` round-trip.
``build_optimizer(recipe)`` makes the Keras Adam optimizer with the recipe's learning-rate schedule.

Learning-rate schedules (``lr_schedule["kind"]``), all driven by ``optimizer.iterations`` (restored on resume):

- ``constant``
- ``exponential``: ``decay_steps``, ``decay_rate``, ``staircase`` -> lr * rate ** (step / decay_steps)
  (``keras.optimizers.schedules.ExponentialDecay``)
- ``step``: ``boundaries`` (steps), ``factor`` -> lr * factor ** (number of boundaries passed)
  (``PiecewiseConstantDecay``)
- ``cosine_restarts``: ``first_decay_steps``, optional ``t_mul``, ``m_mul``, ``alpha`` (``CosineDecayRestarts``)

With ``"unit": "epochs"`` the step counts above (``decay_steps``, ``boundaries``, ``first_decay_steps``) are given in
epochs and converted with the dataset's steps per epoch.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Optional

import keras

from tfdehaze.train.engine import DEFAULTS

SCHEDULE_KINDS = ("constant", "exponential", "step", "cosine_restarts")
_SCHEDULE_STEP_KEYS = ("decay_steps", "boundaries", "first_decay_steps")


@dataclasses.dataclass
class Recipe:
    """Everything needed to reproduce a training run (with the data it names).

    model / model_kwargs: the `tfdehaze.models.registry` name and its constructor overrides.
    step: a step kind of `tfdehaze.registry.STEPS` (``"supervised"``, ``"gan"``, ``"distill"``, ...).
    step_options: keyword arguments of that step kind (see its class in `tfdehaze.train.steps`).
    losses: the loss terms, ``[{"type": "l1", "weight": 100.0}, {"type": "gan", "weight": 1.0}, ...]``: a type
        from `tfdehaze.registry.LOSSES`, a weight, and the loss's options (`tfdehaze.losses.terms`). A recipe
        written with the older ``loss_weights: {"l1": 1.0}`` is read as the same terms.
    discriminator_kwargs: `tfdehaze.models.PatchDiscriminator` arguments for ``gan``.
    learning_rate, beta_1, beta_2, clipnorm, global_clipnorm: Adam (the same for every optimizer of a step);
        ``global_clipnorm`` clips the norm of all gradients together, as PyTorch's ``clip_grad_norm_``.
    lr_schedule: see the module docstring.
    batch_size: the GLOBAL batch, split over all replicas. image_size: resize side; crop_size: random crop after
        the resize (None: no crop). flip: random horizontal flips.
    steps or epochs: training length (exactly one). checkpoint_every / log_every / sample_every: in steps;
        keep: number of checkpoints kept.
    seed: weights initialisation, shuffling and augmentation.
    data: where the training pairs are: ``{"manifest": CSV}`` or ``{"hazy": DIR, "clear": DIR}``; None means the
        bundled sample set. A run records the pairs it used as ``data.csv`` and points ``data`` at it.

    Examples:
        >>> from tfdehaze.train import Recipe
        >>> recipe = Recipe(model="minet", batch_size=8, steps=1000)
        >>> recipe.step, recipe.losses, recipe.lr_schedule
        ('supervised', [{'type': 'l1', 'weight': 1.0}], {'kind': 'constant'})
        >>> Recipe.from_json(recipe.replace(learning_rate=1e-3).to_json()).learning_rate
        0.001
        >>> Recipe.from_dict({"model": "minet", "loss_weights": {"l1": 1.0, "mse": 0.5}}).losses  # older recipes
        [{'type': 'l1', 'weight': 1.0}, {'type': 'mse', 'weight': 0.5}]
        >>> recipe.replace(epochs=2)
        Traceback (most recent call last):
        ...
        ValueError: give steps or epochs, not both (steps=1000, epochs=2)
    """

    model: str
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    step: str = "supervised"
    step_options: dict = dataclasses.field(default_factory=dict)
    losses: list = dataclasses.field(default_factory=lambda: [{"type": "l1", "weight": 1.0}])
    discriminator_kwargs: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    clipnorm: Optional[float] = None
    global_clipnorm: Optional[float] = None
    lr_schedule: dict = dataclasses.field(default_factory=lambda: {"kind": "constant"})
    batch_size: int = 1
    image_size: int = 512
    crop_size: Optional[int] = None
    flip: bool = True
    steps: Optional[int] = None
    epochs: Optional[int] = None
    checkpoint_every: int = DEFAULTS["checkpoint_every"]
    log_every: int = DEFAULTS["log_every"]
    sample_every: int = DEFAULTS["sample_every"]
    keep: int = DEFAULTS["keep"]
    seed: int = 0
    data: Optional[dict] = None

    def __post_init__(self) -> None:
        for name in ("model_kwargs", "step_options", "discriminator_kwargs", "lr_schedule"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"recipe field {name} must be a JSON object, got {getattr(self, name)!r}")
        if (not isinstance(self.losses, list) or not self.losses
                or not all(isinstance(t, dict) and isinstance(t.get("type"), str) for t in self.losses)):
            raise ValueError(f"recipe field losses must be a non-empty list of {{'type': NAME, 'weight': W, ...}} "
                             f"objects, got {self.losses!r}")
        for name in ("learning_rate", "beta_1", "beta_2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"recipe field {name} must be a non-negative number, got {value!r}")
        for name in ("batch_size", "image_size", "checkpoint_every", "log_every", "sample_every", "keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"recipe field {name} must be a positive integer, got {value!r}")
        for name in ("steps", "epochs", "crop_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"recipe field {name} must be a positive integer or null, got {value!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give steps or epochs, not both (steps={self.steps}, epochs={self.epochs})")
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than image_size {self.image_size}")
        if self.lr_schedule.get("kind") not in SCHEDULE_KINDS:
            raise ValueError(f"lr_schedule kind {self.lr_schedule.get('kind')!r} is not one of {SCHEDULE_KINDS}")
        if self.data is not None and set(self.data) not in ({"manifest"}, {"hazy", "clear"}):
            raise ValueError(f"recipe data must be {{'manifest': CSV}} or {{'hazy': DIR, 'clear': DIR}}, "
                             f"got {self.data!r}")

    def replace(self, **changes: Any) -> Recipe:
        """A deep copy with some fields changed (validated); unknown field names raise ValueError."""
        return Recipe.from_dict({**self.to_dict(), **json.loads(json.dumps(changes))})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-compatible dict (a deep copy)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        """The fields as indented JSON with sorted keys (what ``config.json`` holds)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Recipe:
        """A validated recipe from a dict of fields (``loss_weights`` of older recipes becomes ``losses``)."""
        if not isinstance(fields, dict):
            raise ValueError(f"a recipe must be a JSON object, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} | {"loss_weights"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}; known: {sorted(known)}")
        if "model" not in fields:
            raise ValueError("a recipe needs a 'model' field")
        fields = dict(fields)
        if "loss_weights" in fields:  # recipes written before loss terms: {"l1": 100.0, "gan": 1.0}
            if "losses" in fields:
                raise ValueError("give losses or loss_weights, not both")
            weights = fields.pop("loss_weights")
            if not isinstance(weights, dict):
                raise ValueError(f"recipe field loss_weights must be a JSON object, got {weights!r}")
            fields["losses"] = [{"type": name, "weight": weight} for name, weight in weights.items()]
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """A validated recipe from JSON text (e.g. a run's ``config.json``)."""
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"recipe is not valid JSON: {error}") from None
        return cls.from_dict(fields)


RECIPES = {
    # Guided-Pix2Pix §III-E and §IV-A and the authors' code: L1 x 100 + BCE, Adam(1e-4, 0.5, 0.999), lr x 0.9 every
    # 100 steps, not staircase (paper and authors' code). The papers give no step count; the decay makes the learning
    # rate 5e-7 by step 5000, after which training hardly moves, so 5000 steps.
    "guided-pix2pix": Recipe(
        model="guided-pix2pix", step="gan", losses=[{"type": "l1", "weight": 100.0}, {"type": "gan", "weight": 1.0}],
        learning_rate=1e-4, beta_1=0.5, beta_2=0.999,
        lr_schedule={"kind": "exponential", "decay_steps": 100, "decay_rate": 0.9, "staircase": False},
        batch_size=1, image_size=512, crop_size=None, flip=True, steps=5000),
    # MI-Net §4.2: whole images (no patches), Adam(1e-3, beta_1 0.99, beta_2 0.999), lr x 0.1 every 20,000 iterations,
    # 350,000 iterations. The paper names neither the loss nor the batch size: L1 here; batch 8 is the authors'
    # code default (two GPUs).
    "minet": Recipe(
        model="minet", step="supervised", losses=[{"type": "l1", "weight": 1.0}],
        learning_rate=1e-3, beta_1=0.99, beta_2=0.999,
        lr_schedule={"kind": "exponential", "decay_steps": 20000, "decay_rate": 0.1, "staircase": True},
        batch_size=8, image_size=512, crop_size=None, flip=True, steps=350000,
        checkpoint_every=2000, sample_every=2000),
    # KDDN §4.1: the teacher autoencoder alone on clean images, L1 (eq. 1), 30 epochs; Adam(1e-4, 0.9) with the
    # cyclical cosine schedule restarting every 20 epochs. The paper gives no batch size: 4 here.
    "kddn-teacher": Recipe(
        model="kddn-teacher", step="supervised", step_options={"input_key": "clear"},
        losses=[{"type": "l1", "weight": 1.0}],
        learning_rate=1e-4, beta_1=0.9, beta_2=0.999,
        lr_schedule={"kind": "cosine_restarts", "first_decay_steps": 20, "t_mul": 1.0, "unit": "epochs"},
        batch_size=4, image_size=512, epochs=30),
    # KDDN eq. 2: L1 + lambda_p perceptual (VGG19 relu1_1..relu5_1, pix2pixHD weights) + lambda_rm WFMIL
    # (eq. 6; Psi1 from transmission maps where the data has them, else Psi2), lambda = 1; the teacher frozen; pairs
    # teacher blocks 2, 4, 6 <-> student groups 2, 4, 6 (the models' feature_taps); 60 epochs.
    "kddn": Recipe(
        model="kddn", step="distill",
        step_options={"teacher": None, "teacher_input": "clear", "adapters": True},
        losses=[{"type": "l1", "weight": 1.0}, {"type": "perceptual", "weight": 1.0},
                {"type": "wfmil", "weight": 1.0}],
        learning_rate=1e-4, beta_1=0.9, beta_2=0.999,
        lr_schedule={"kind": "cosine_restarts", "first_decay_steps": 20, "t_mul": 1.0, "unit": "epochs"},
        batch_size=4, image_size=512, epochs=60),
    # RFD: the teacher is a x2 super-resolution network of the clear image (the student's input size -> 2x), MSE;
    # the authors released no teacher training code: Adam 1e-4, batch 2 and clipping 0.1 as for their student.
    "rfd-teacher": Recipe(
        model="rfd-teacher", step="supervised", step_options={"input_key": "clear", "input_scale": 0.5},
        losses=[{"type": "mse", "weight": 1.0}],
        learning_rate=1e-4, global_clipnorm=0.1, batch_size=2, image_size=512, steps=100000),
    # RFD (authors' code): MSE + 0.25 L_FA on spatial affinities of the outputs (teacher x2 SR pooled 1/8, student
    # pooled 1/4), Adam lr 1e-4 (paper 1e-5), batch 2, gradient-norm clipping 0.1; the teacher frozen.
    "rfd": Recipe(
        model="rfd", step="distill", step_options={"teacher": None, "teacher_input": "clear", "adapters": False},
        losses=[{"type": "mse", "weight": 1.0}, {"type": "affinity", "weight": 0.25}],
        learning_rate=1e-4, global_clipnorm=0.1, batch_size=2, image_size=512, steps=100000),
}


def names() -> list[str]:
    """Names of the built-in recipes.

    Examples:
        >>> from tfdehaze.train import recipes
        >>> recipes.names()
        ['guided-pix2pix', 'kddn', 'kddn-teacher', 'minet', 'rfd', 'rfd-teacher']
    """
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """A fresh copy of the named recipe.

    Examples:
        >>> from tfdehaze.train import get_recipe
        >>> recipe = get_recipe("guided-pix2pix")
        >>> recipe.step, recipe.steps, recipe.losses
        ('gan', 5000, [{'type': 'l1', 'weight': 100.0}, {'type': 'gan', 'weight': 1.0}])
        >>> recipe.batch_size = 4
        >>> get_recipe("guided-pix2pix").batch_size  # a fresh copy each time
        1
        >>> get_recipe("dehazeformer")
        Traceback (most recent call last):
        ...
        ValueError: no training recipe named 'dehazeformer'; known: guided-pix2pix, kddn, kddn-teacher, minet, rfd,
        rfd-teacher
    """
    if name not in RECIPES:
        raise ValueError(f"no training recipe named {name!r}; known: {', '.join(names())}")
    return RECIPES[name].replace()


def build_schedule(recipe: Recipe, steps_per_epoch: int | None = None
                   ) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The recipe's learning rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.

    ``steps_per_epoch`` converts a schedule given in epochs (``"unit": "epochs"``) to steps.

    Examples:
        >>> from tfdehaze.train.recipes import build_schedule, get_recipe
        >>> schedule = build_schedule(get_recipe("guided-pix2pix"))  # 1e-4 * 0.9 ** (step / 100)
        >>> type(schedule).__name__, round(float(schedule(100)), 10)
        ('ExponentialDecay', 9e-05)
        >>> build_schedule(get_recipe("kddn"), steps_per_epoch=50).first_decay_steps  # restarts every 20 epochs
        1000
        >>> build_schedule(get_recipe("rfd"))  # constant
        0.0001
    """
    params = dict(recipe.lr_schedule)
    kind = params.pop("kind")
    if params.pop("unit", "steps") == "epochs":
        if not steps_per_epoch:
            raise ValueError("an lr_schedule in epochs needs the number of steps per epoch")
        for key in set(_SCHEDULE_STEP_KEYS) & set(params):
            value = params[key]
            params[key] = [v * steps_per_epoch for v in value] if isinstance(value, list) else value * steps_per_epoch
    lr = recipe.learning_rate
    schedules = keras.optimizers.schedules
    try:
        if kind == "constant":
            if params:
                raise TypeError(f"unexpected arguments {sorted(params)}")
            return lr
        if kind == "exponential":
            return schedules.ExponentialDecay(lr, **params)
        if kind == "step":
            factor = params.pop("factor")
            boundaries = list(params.pop("boundaries"))
            if params:
                raise TypeError(f"unexpected arguments {sorted(params)}")
            return schedules.PiecewiseConstantDecay(boundaries, [lr * factor ** i for i in range(len(boundaries) + 1)])
        return schedules.CosineDecayRestarts(lr, **params)
    except (TypeError, KeyError) as error:
        raise ValueError(f"bad lr_schedule {recipe.lr_schedule!r}: {error}") from None


def build_optimizer(recipe: Recipe, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """``keras.optimizers.Adam`` with the recipe's learning rate schedule, betas and gradient clipping.

    Examples:
        >>> from tfdehaze.train import build_optimizer, get_recipe
        >>> optimizer = build_optimizer(get_recipe("rfd"))
        >>> type(optimizer).__name__, optimizer.global_clipnorm, round(float(optimizer.learning_rate), 8)
        ('Adam', 0.1, 0.0001)
        >>> build_optimizer(get_recipe("guided-pix2pix")).beta_1
        0.5
    """
    return keras.optimizers.Adam(learning_rate=build_schedule(recipe, steps_per_epoch),
                                 beta_1=recipe.beta_1, beta_2=recipe.beta_2, clipnorm=recipe.clipnorm,
                                 global_clipnorm=recipe.global_clipnorm)


def resolve(name: str, run_dir: str | pathlib.Path | None = None, resume: bool = False,
            config_file: str | pathlib.Path | None = None, model_args: dict | None = None,
            data: dict | None = None, teacher: str | pathlib.Path | None = None,
            loss_options: dict[str, dict] | None = None, **fields: Any) -> Recipe:
    """The recipe of a run, in the order the command line applies them: the named recipe (or, when resuming,
    the run's own ``config.json``), then ``config_file`` (a JSON object of recipe fields), then ``model_args``
    (merged into ``model_kwargs``), ``data`` (``{"hazy", "clear"}`` folders or ``{"manifest"}``, checked to exist)
    and the other recipe ``fields`` (None values are ignored; ``steps`` clears ``epochs`` and vice versa);
    ``teacher``, a run directory, goes into ``step_options`` (distillation recipes); ``loss_options``
    ``{type: {option: value}}`` sets options of every loss term of that type (e.g. the VGG19 weights file of
    ``perceptual``).

    Examples:
        >>> resolve("minet", steps=10, model_args={"filters": 8}).model_kwargs
        {'filters': 8}
    """
    recipe = get_recipe(name)
    saved = pathlib.Path(run_dir) / "config.json" if run_dir is not None else None
    if resume and saved is not None and saved.exists():
        recipe = Recipe.from_json(saved.read_text())
        if recipe.model != get_recipe(name).model:
            raise ValueError(f"{saved} is a run of model {recipe.model!r}, not {name!r}")
    if config_file is not None:
        path = pathlib.Path(config_file)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        try:
            overrides = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"config file {path} must hold a JSON object of recipe fields")
        if "model" in overrides and overrides["model"] != recipe.model:
            raise ValueError(f"config file {path} is for model {overrides['model']!r}, not {recipe.model!r}")
        recipe = recipe.replace(**overrides)
    changes = {key: value for key, value in fields.items() if value is not None}
    if changes.get("steps") is not None:
        changes["epochs"] = None
    elif changes.get("epochs") is not None:
        changes["steps"] = None
    if model_args:
        changes["model_kwargs"] = {**recipe.model_kwargs, **model_args}
    if teacher is not None:
        if not pathlib.Path(teacher).is_dir():
            raise ValueError(f"teacher run directory {teacher} does not exist")
        changes["step_options"] = {**recipe.step_options, "teacher": str(pathlib.Path(teacher).resolve())}
    if loss_options:
        unknown = sorted(set(loss_options) - {term["type"] for term in recipe.losses})
        if unknown:
            raise ValueError(f"the recipe of {recipe.model!r} has no {unknown} loss term to set options on")
        changes["losses"] = [{**term, **loss_options.get(term["type"], {})} for term in recipe.losses]
    if data:
        for key, value in data.items():
            path = pathlib.Path(value)
            if not (path.is_file() if key == "manifest" else path.is_dir()):
                raise ValueError(f"{'manifest' if key == 'manifest' else 'data folder'} {path} does not exist")
        changes["data"] = {key: str(pathlib.Path(value).resolve()) for key, value in data.items()}
    return recipe.replace(**changes)
