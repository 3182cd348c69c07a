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
import dataclasses
import json
from typing import Optional

import keras

SCHEDULE_KINDS = ("constant", "exponential", "step", "cosine_restarts")
_SCHEDULE_STEP_KEYS = ("decay_steps", "boundaries", "first_decay_steps")


@dataclasses.dataclass
class Recipe:
    """Everything needed to reproduce a training run (with the data it names).

    model / model_kwargs: the `tfdehaze.models.registry` name and its constructor overrides.
    step: ``"supervised"`` (pixel losses) or ``"gan"`` (conditional GAN + L1); later papers add kinds.
    loss_weights: pixel losses by name (`tfdehaze.losses.LOSSES`) for ``supervised``; ``{"l1": 100, "gan": 1}``
        for ``gan``.
    discriminator_kwargs: `tfdehaze.models.PatchDiscriminator` arguments for ``gan``.
    learning_rate, beta_1, beta_2, clipnorm: Adam (the same for every optimizer of a step).
    lr_schedule: see the module docstring.
    batch_size: the GLOBAL batch, split over all replicas. image_size: resize side; crop_size: random crop after
        the resize (None: no crop). flip: random horizontal flips.
    steps or epochs: training length (exactly one). checkpoint_every / log_every / sample_every: in steps;
        keep: number of checkpoints kept.
    seed: weights initialisation, shuffling and augmentation.
    data: where the training pairs are: ``{"manifest": CSV}`` or ``{"hazy": DIR, "clear": DIR}``; None means the
        bundled sample set. A run records the pairs it used as ``data.csv`` and points ``data`` at it.
    """

    model: str
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    step: str = "supervised"
    loss_weights: dict = dataclasses.field(default_factory=lambda: {"l1": 1.0})
    discriminator_kwargs: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    clipnorm: Optional[float] = None
    lr_schedule: dict = dataclasses.field(default_factory=lambda: {"kind": "constant"})
    batch_size: int = 1
    image_size: int = 512
    crop_size: Optional[int] = None
    flip: bool = True
    steps: Optional[int] = None
    epochs: Optional[int] = None
    checkpoint_every: int = 500
    log_every: int = 10
    sample_every: int = 500
    keep: int = 3
    seed: int = 0
    data: Optional[dict] = None

    def __post_init__(self):
        for name in ("model_kwargs", "loss_weights", "discriminator_kwargs", "lr_schedule"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"recipe field {name} must be a JSON object, got {getattr(self, name)!r}")
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

    def replace(self, **changes):
        """A deep copy with some fields changed (validated); unknown field names raise ValueError."""
        return Recipe.from_dict({**self.to_dict(), **json.loads(json.dumps(changes))})

    def to_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, fields):
        if not isinstance(fields, dict):
            raise ValueError(f"a recipe must be a JSON object, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}; known: {sorted(known)}")
        if "model" not in fields:
            raise ValueError("a recipe needs a 'model' field")
        return cls(**fields)

    @classmethod
    def from_json(cls, text):
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"recipe is not valid JSON: {error}") from None
        return cls.from_dict(fields)


RECIPES = {
    # Guided-Pix2Pix §III-E and §IV-A, SPEC "Guided-Pix2Pix": L1 x 100 + BCE, Adam(1e-4, 0.5, 0.999), lr x 0.9 every
    # 100 steps, not staircase (paper and authors' code). The papers give no step count; the decay makes the learning
    # rate 5e-7 by step 5000, after which training hardly moves, so 5000 steps.
    "guided-pix2pix": Recipe(
        model="guided-pix2pix", step="gan", loss_weights={"l1": 100.0, "gan": 1.0},
        learning_rate=1e-4, beta_1=0.5, beta_2=0.999,
        lr_schedule={"kind": "exponential", "decay_steps": 100, "decay_rate": 0.9, "staircase": False},
        batch_size=1, image_size=512, crop_size=None, flip=True, steps=5000),
    # MI-Net §4.2: whole images (no patches), Adam(1e-3, beta_1 0.99, beta_2 0.999), lr x 0.1 every 20,000 iterations,
    # 350,000 iterations. The paper names neither the loss nor the batch size: L1 here; batch 8 is the authors'
    # code default (two GPUs).
    "minet": Recipe(
        model="minet", step="supervised", loss_weights={"l1": 1.0},
        learning_rate=1e-3, beta_1=0.99, beta_2=0.999,
        lr_schedule={"kind": "exponential", "decay_steps": 20000, "decay_rate": 0.1, "staircase": True},
        batch_size=8, image_size=512, crop_size=None, flip=True, steps=350000,
        checkpoint_every=2000, sample_every=2000),
}


def names():
    """Names of the built-in recipes."""
    return sorted(RECIPES)


def get_recipe(name):
    """A fresh copy of the named recipe."""
    if name not in RECIPES:
        raise ValueError(f"no training recipe named {name!r}; known: {', '.join(names())}")
    return RECIPES[name].replace()


def build_schedule(recipe, steps_per_epoch=None):
    """The recipe's learning rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`."""
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


def build_optimizer(recipe, steps_per_epoch=None):
    """``keras.optimizers.Adam`` with the recipe's learning rate schedule, betas and clipnorm."""
    return keras.optimizers.Adam(learning_rate=build_schedule(recipe, steps_per_epoch),
                                 beta_1=recipe.beta_1, beta_2=recipe.beta_2, clipnorm=recipe.clipnorm)
