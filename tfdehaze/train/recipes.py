"""Each paper's training hyperparameters as data: a `Recipe` dataclass, saved as ``config.json`` in a run.

``get_recipe(name)`` returns a fresh copy of a named recipe; ``recipe.replace(**changes)`` overrides fields (the CLI
applies ``--config FILE`` first, then its flags); ``Recipe.from_json(text)`` / ``recipe.to_json()`` round-trip.
``build_optimizer(recipe)`` makes the Keras Adam optimizer with the recipe's learning-rate schedule.

Every field is checked by type and range when a recipe is made (`FIELDS`, `check_field`), whatever it comes from: a
named recipe, a run's ``config.json``, ``--config FILE`` or a flag. Integers reject floats, booleans and strings.
This module imports neither TensorFlow nor Keras until an optimizer is built, so the command line can check its
arguments before TensorFlow starts.

Learning-rate schedules (``lr_schedule["kind"]``), all driven by ``optimizer.iterations`` (restored on resume):

- ``constant``
- ``exponential``: ``decay_steps``, ``decay_rate`` in (0, 1], ``staircase`` -> lr * rate ** (step / decay_steps)
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
import math
import numbers
import pathlib
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from tfdehaze.precision import POLICIES

if TYPE_CHECKING:  # annotations only: Keras is imported when an optimizer is built
    import keras

SCHEDULE_KINDS = ("constant", "exponential", "step", "cosine_restarts")
_SCHEDULE_STEP_KEYS = ("decay_steps", "boundaries", "first_decay_steps")

# Intervals of the training loop (in steps) and the number of checkpoints kept: the recipe fields' defaults and
# `tfdehaze.train.engine.Trainer`'s.
DEFAULTS = {"checkpoint_every": 500, "log_every": 10, "sample_every": 500, "keep": 3}


def _show(value: Any) -> str:
    """A value as the JSON a recipe file would hold (``true``, ``"x"``, ``null``), else its repr."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class Rule(NamedTuple):
    """The JSON type and range of one recipe value: ``kind`` is ``"integer"`` (not a float, not a boolean),
    ``"number"`` (finite, not a boolean), ``"boolean"``, ``"string"`` (non-empty), ``"object"`` or ``"list"``;
    ``low``/``high`` bound numbers (``open_low``/``open_high``: the bound itself is excluded); ``null``: None is
    allowed; ``choices``: the strings allowed.

    Examples:
        >>> from tfdehaze.train.recipes import Rule
        >>> Rule("number", 0, 1, open_high=True).describe()
        'a number in [0, 1)'
        >>> Rule("integer", 1, null=True).problem(2.0)
        'must be a positive integer or null, got 2.0'
        >>> Rule("boolean").problem(True) is None
        True
    """

    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False
    open_high: bool = False
    null: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """What the rule accepts, in words."""
        kind = {"integer": "integer", "number": "number"}.get(self.kind)
        if self.choices:
            text = "one of " + ", ".join(f'"{choice}"' for choice in self.choices)
        elif kind is None:
            text = {"boolean": "true or false", "string": "a non-empty string", "object": "a JSON object",
                    "list": "a JSON list"}[self.kind]
        elif self.high is None and self.low == 0:
            text = f"a positive {kind}" if self.open_low else f"a non-negative {kind}"
        elif self.high is None and self.low == 1 and not self.open_low and kind == "integer":
            text = "a positive integer"
        elif self.high is None and self.low is not None:
            text = f"a {kind} {'>' if self.open_low else '>='} {self.low}"
        elif self.low is None and self.high is None:
            text = f"an {kind}" if kind == "integer" else f"a {kind}"
        else:
            text = (f"a {kind} in {'(' if self.open_low else '['}{self.low}, {self.high}"
                    f"{')' if self.open_high else ']'}")
        return text + (" or null" if self.null else "")

    def problem(self, value: Any) -> str | None:
        """None when ``value`` follows the rule, else ``"must be ..., got ..."``."""
        if value is None and self.null:
            return None
        if self.kind in ("integer", "number"):
            ok = (isinstance(value, numbers.Integral if self.kind == "integer" else numbers.Real)
                  and not isinstance(value, bool) and math.isfinite(value)
                  and (self.low is None or (value > self.low if self.open_low else value >= self.low))
                  and (self.high is None or (value < self.high if self.open_high else value <= self.high)))
        else:
            ok = isinstance(value, {"boolean": bool, "string": str, "object": dict, "list": list}[self.kind])
            ok = ok and (self.kind != "string" or value != "") and (not self.choices or value in self.choices)
        return None if ok else f"must be {self.describe()}, got {_show(value)}"


_POSITIVE_INT = Rule("integer", 1)
_POSITIVE = Rule("number", 0, open_low=True)
_UNIT_INTERVAL_OPEN_HIGH = Rule("number", 0, 1, open_high=True)

# The type and range of every recipe field (`losses`, `lr_schedule` and `data` have more structure, checked below).
FIELDS: dict[str, Rule] = {
    "model": Rule("string"), "model_kwargs": Rule("object"), "step": Rule("string"),
    "step_options": Rule("object"), "losses": Rule("list"), "discriminator_kwargs": Rule("object"),
    "learning_rate": _POSITIVE, "beta_1": _UNIT_INTERVAL_OPEN_HIGH, "beta_2": _UNIT_INTERVAL_OPEN_HIGH,
    "clipnorm": _POSITIVE._replace(null=True), "global_clipnorm": _POSITIVE._replace(null=True),
    "lr_schedule": Rule("object"), "batch_size": _POSITIVE_INT, "image_size": _POSITIVE_INT,
    "crop_size": _POSITIVE_INT._replace(null=True), "flip": Rule("boolean"),
    "steps": _POSITIVE_INT._replace(null=True), "epochs": _POSITIVE_INT._replace(null=True),
    "checkpoint_every": _POSITIVE_INT, "log_every": _POSITIVE_INT, "sample_every": _POSITIVE_INT,
    "keep": _POSITIVE_INT, "seed": Rule("integer", 0), "data": Rule("object", null=True),
    "precision": Rule("string", choices=("auto",) + POLICIES),
}

# lr_schedule options by kind: (the option rules, the required options); "kind" and "unit" are allowed for every kind.
SCHEDULE_OPTIONS: dict[str, tuple[dict[str, Rule], tuple[str, ...]]] = {
    "constant": ({}, ()),
    "exponential": ({"decay_steps": _POSITIVE_INT, "decay_rate": Rule("number", 0, 1, open_low=True),
                     "staircase": Rule("boolean")}, ("decay_steps", "decay_rate")),
    "step": ({"boundaries": Rule("list"), "factor": _POSITIVE}, ("boundaries", "factor")),
    "cosine_restarts": ({"first_decay_steps": _POSITIVE_INT, "t_mul": _POSITIVE, "m_mul": _POSITIVE,
                         "alpha": Rule("number", 0, 1)}, ("first_decay_steps",)),
}


def _schedule_problem(key: str, value: Any, rule: Rule | None) -> str | None:
    """What is wrong with the value of one ``lr_schedule`` option (None: nothing)."""
    if key == "kind":
        return None
    if key == "unit":
        return None if value in ("steps", "epochs") else f'must be "steps" or "epochs", got {_show(value)}'
    problem = rule.problem(value)
    if problem is None and key == "boundaries":
        bad = [b for b in value if _POSITIVE_INT.problem(b)]
        if bad:
            return f"must hold positive integers, got {_show(bad[0])}"
        if value != sorted(set(value)):
            return f"must be increasing, got {_show(value)}"
    return problem


def check_field(name: str, value: Any) -> None:
    """Raise ValueError naming the field when ``value`` is not a valid value of recipe field ``name`` (its type and
    range in `FIELDS`; the structure of ``losses``, ``lr_schedule`` and ``data``).

    Examples:
        >>> from tfdehaze.train.recipes import check_field
        >>> check_field("steps", 100)
        >>> check_field("steps", 0)
        Traceback (most recent call last):
        ...
        ValueError: recipe field steps must be a positive integer or null, got 0
        >>> check_field("flip", "yes")
        Traceback (most recent call last):
        ...
        ValueError: recipe field flip must be true or false, got "yes"
        >>> check_field("lr_schedule", {"kind": "exponential", "decay_steps": 100, "decay_rate": "x"})
        Traceback (most recent call last):
        ...
        ValueError: recipe field lr_schedule.decay_rate must be a number in (0, 1], got "x"
    """
    if name not in FIELDS:
        raise ValueError(f"unknown recipe field {name!r}; known: {sorted(FIELDS)}")
    problem = FIELDS[name].problem(value)
    if problem:
        raise ValueError(f"recipe field {name} {problem}")
    if name == "losses":
        if not value or not all(isinstance(t, dict) and isinstance(t.get("type"), str) for t in value):
            raise ValueError(f"recipe field losses must be a non-empty list of {{'type': NAME, 'weight': W, ...}} "
                             f"objects, got {value!r}")
        for i, term in enumerate(value):
            problem = Rule("number").problem(term.get("weight", 1.0))
            if problem:
                raise ValueError(f"recipe field losses[{i}].weight ({term['type']}) {problem}")
    elif name == "lr_schedule":
        kind = value.get("kind")
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"lr_schedule kind {kind!r} is not one of {SCHEDULE_KINDS}")
        rules, required = SCHEDULE_OPTIONS[kind]
        unknown = sorted(set(value) - set(rules) - {"kind", "unit"})
        if unknown:
            raise ValueError(f"recipe field lr_schedule: unknown option(s) {unknown} for kind {kind!r}; known: "
                             f"{', '.join(sorted(rules) + ['unit'])}")
        missing = [key for key in required if key not in value]
        if missing:
            raise ValueError(f"recipe field lr_schedule: kind {kind!r} needs {', '.join(missing)}")
        for key in value:
            problem = _schedule_problem(key, value[key], rules.get(key))
            if problem:
                raise ValueError(f"recipe field lr_schedule.{key} {problem}")
    elif name == "data" and value is not None:
        if set(value) not in ({"manifest"}, {"hazy", "clear"}):
            raise ValueError(f"recipe data must be {{'manifest': CSV}} or {{'hazy': DIR, 'clear': DIR}}, "
                             f"got {value!r}")
        for key, path in value.items():
            problem = Rule("string").problem(path)
            if problem:
                raise ValueError(f"recipe field data.{key} {problem}")


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
    precision: the Keras dtype policy, ``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"`` or ``"auto"`` (what
        the hardware runs fastest, `tfdehaze.precision.resolve`); checkpoints restore in any precision.
    data: where the training pairs are: ``{"manifest": CSV}`` or ``{"hazy": DIR, "clear": DIR}``; None means the
        bundled sample set. A run records the pairs it used as ``data.csv`` and points ``data`` at it.

    Each field's type and range is in `FIELDS` (checked by `check_field` when a recipe is made).

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
        >>> recipe.replace(batch_size=2.0)
        Traceback (most recent call last):
        ...
        ValueError: recipe field batch_size must be a positive integer, got 2.0
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
    precision: str = "auto"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            check_field(field.name, value)
            if isinstance(value, numbers.Number) and not isinstance(value, (bool, int, float)):
                # a NumPy scalar: the plain Python number, so the recipe stays JSON
                setattr(self, field.name, int(value) if isinstance(value, numbers.Integral) else float(value))
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give steps or epochs, not both (steps={self.steps}, epochs={self.epochs})")
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than image_size {self.image_size}")

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
    import keras

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
    """Adam (`tfdehaze.train.adam.FusedAdam`: Keras' Adam with a fused update) with the recipe's learning rate
    schedule, betas and gradient clipping.

    Examples:
        >>> from tfdehaze.train import build_optimizer, get_recipe
        >>> optimizer = build_optimizer(get_recipe("rfd"))
        >>> type(optimizer).__name__, optimizer.global_clipnorm, round(float(optimizer.learning_rate), 8)
        ('FusedAdam', 0.1, 0.0001)
        >>> build_optimizer(get_recipe("guided-pix2pix")).beta_1
        0.5
    """
    from tfdehaze.train.adam import FusedAdam

    return FusedAdam(learning_rate=build_schedule(recipe, steps_per_epoch), beta_1=recipe.beta_1,
                     beta_2=recipe.beta_2, clipnorm=recipe.clipnorm, global_clipnorm=recipe.global_clipnorm)


def _read_fields(path: pathlib.Path, what: str) -> dict[str, Any]:
    """The JSON object of recipe fields in ``path``; ValueError naming the file when it is not one."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a JSON file")
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist")
    try:
        fields = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 JSON text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from None
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{what} {path} must hold a JSON object of recipe fields, not {type(fields).__name__}")
    return fields


def _check_data_paths(data: dict[str, str]) -> None:
    """ValueError when a ``data`` path is missing or of the wrong kind (a manifest is a file, the others folders)."""
    for key, value in data.items():
        path = pathlib.Path(value)
        if key == "manifest":
            if path.is_dir():
                raise ValueError(f"manifest {path} is a folder, not a CSV file")
            if not path.is_file():
                raise ValueError(f"manifest {path} does not exist")
        elif path.exists() and not path.is_dir():
            raise ValueError(f"data folder {path} is a file, not a folder of {key} images")
        elif not path.is_dir():
            raise ValueError(f"data folder {path} does not exist")


def resolve(name: str, run_dir: str | pathlib.Path | None = None, resume: bool = False,
            config_file: str | pathlib.Path | None = None, model_args: dict | None = None,
            data: dict | None = None, teacher: str | pathlib.Path | None = None,
            loss_options: dict[str, dict] | None = None, **fields: Any) -> Recipe:
    """The recipe of a run, in the order the command line applies them: the named recipe (or, when resuming,
    the run's own ``config.json``), then ``config_file`` (a JSON object of recipe fields; one of ``steps`` /
    ``epochs`` clears the other), then ``model_args`` (merged into ``model_kwargs``), ``data`` (``{"hazy",
    "clear"}`` folders or ``{"manifest"}``, checked to exist) and the other recipe ``fields`` (None values are
    ignored; ``steps`` clears ``epochs`` and vice versa); ``teacher``, a run directory, goes into ``step_options``
    (distillation recipes); ``loss_options`` ``{type: {option: value}}`` sets options of every loss term of that
    type (e.g. the VGG19 weights file of ``perceptual``).

    Every value is checked by type and range (`check_field`); an error in a file names the file.

    Examples:
        >>> resolve("minet", steps=10, model_args={"filters": 8}).model_kwargs
        {'filters': 8}
        >>> import json, pathlib, tempfile
        >>> config = pathlib.Path(tempfile.mkdtemp()) / "small.json"
        >>> _ = config.write_text(json.dumps({"epochs": 2, "flip": "yes"}))
        >>> resolve("minet", config_file=config)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: config file .../small.json: recipe field flip must be true or false, got "yes"
        >>> resolve("minet", steps=0)
        Traceback (most recent call last):
        ...
        ValueError: recipe field steps must be a positive integer or null, got 0
    """
    recipe = get_recipe(name)
    saved = pathlib.Path(run_dir) / "config.json" if run_dir is not None else None
    if resume and saved is not None and saved.exists():
        saved_fields = _read_fields(saved, "run config")
        try:
            recipe = Recipe.from_dict(saved_fields)
        except ValueError as error:
            raise ValueError(f"run config {saved}: {error}") from None
        if recipe.model != get_recipe(name).model:
            raise ValueError(f"{saved} is a run of model {recipe.model!r}, not {name!r}")
    if config_file is not None:
        path = pathlib.Path(config_file)
        overrides = _read_fields(path, "config file")
        if "model" in overrides and overrides["model"] != recipe.model:
            raise ValueError(f"config file {path} is for model {overrides['model']!r}, not {recipe.model!r}")
        for one, other in (("steps", "epochs"), ("epochs", "steps")):
            if overrides.get(one) is not None and other not in overrides:
                overrides[other] = None  # the file gives the training length one way: it replaces the other
        try:
            recipe = recipe.replace(**overrides)
            if "data" in overrides and recipe.data is not None and not data:
                _check_data_paths(recipe.data)
        except ValueError as error:
            raise ValueError(f"config file {path}: {error}") from None
    changes = {key: value for key, value in fields.items() if value is not None}
    if changes.get("steps") is not None:
        changes["epochs"] = None
    elif changes.get("epochs") is not None:
        changes["steps"] = None
    if model_args:
        changes["model_kwargs"] = {**recipe.model_kwargs, **model_args}
    if teacher is not None:
        if pathlib.Path(teacher).exists() and not pathlib.Path(teacher).is_dir():
            raise ValueError(f"teacher {teacher} is a file, not a run directory")
        if not pathlib.Path(teacher).is_dir():
            raise ValueError(f"teacher run directory {teacher} does not exist")
        changes["step_options"] = {**recipe.step_options, "teacher": str(pathlib.Path(teacher).resolve())}
    if loss_options:
        unknown = sorted(set(loss_options) - {term["type"] for term in recipe.losses})
        if unknown:
            raise ValueError(f"the recipe of {recipe.model!r} has no {unknown} loss term to set options on")
        changes["losses"] = [{**term, **loss_options.get(term["type"], {})} for term in recipe.losses]
    if data:
        _check_data_paths(data)
        changes["data"] = {key: str(pathlib.Path(value).resolve()) for key, value in data.items()}
    return recipe.replace(**changes)
