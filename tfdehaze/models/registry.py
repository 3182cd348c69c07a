"""Model names -> Keras models: ``build("guided-pix2pix", depth=6)``, ``load("minet-official")``, ``load("m.keras")``.

The names live in `tfdehaze.registry.MODELS`; each model file registers its own (``@MODELS.register(...)``) when
`tfdehaze.models` is imported. A name with released weights carries a *preset* (a dict in its model file, as
KerasHub's ``*_presets.py``)::

    {"description": ..., "weights": "minet_official_its.weights.h5",   # a file in tfdehaze.paths.weights_dir()
     "source": "how to get / convert the file", "score": "what it reaches, where"}

`load` builds such a name and loads its weights file; nothing is ever downloaded. Training hyper-parameters live
in `tfdehaze.train.recipes`, not here.

Examples:
    >>> from tfdehaze.models import registry
    >>> "guided-pix2pix" in registry.names()
    True
    >>> model = registry.build("guided-pix2pix", depth=5, base_filters=8, radius=4)
    >>> model.g0.depth, model.radius
    (5, 4)
"""
from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Callable
from typing import Any

import keras

from tfdehaze import checkpoints, paths
from tfdehaze.registry import MODELS

PRESET_KEYS = ("description", "weights", "source", "score")


def register(name: str, builder: Callable[..., keras.Model], description: str = "", preset: dict | None = None,
             replace: bool = False, **defaults: Any) -> Callable:
    """Register ``builder`` under ``name`` (`tfdehaze.registry.Registry.register` on the model registry).

    ``defaults`` are keyword arguments the builder is called with; a ``preset`` needs the keys of `PRESET_KEYS`
    and gives the description when there is none.

    Examples:
        >>> import keras
        >>> from tfdehaze.models import registry
        >>> from tfdehaze.registry import MODELS
        >>> def one_conv(filters=3, kernel=1):
        ...     return keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(filters, kernel)])
        >>> registry.register("one-conv-3x3", one_conv, description="one 3x3 convolution", kernel=3)
        <function one_conv at ...>
        >>> registry.describe()["one-conv-3x3"], registry.build("one-conv-3x3").count_params()  # 3 * 3 * 3 * 3 + 3
        ('one 3x3 convolution', 84)
        >>> registry.register("one-conv-released", one_conv, preset={"weights": "one_conv.weights.h5"})
        Traceback (most recent call last):
        ...
        ValueError: preset of 'one-conv-released' lacks ['description', 'source', 'score']; a preset has
        ('description', 'weights', 'source', 'score')
        >>> MODELS.unregister("one-conv-3x3")
    """
    if preset is not None:
        missing = [key for key in PRESET_KEYS if key not in preset]
        if missing:
            raise ValueError(f"preset of {name!r} lacks {missing}; a preset has {PRESET_KEYS}")
        description = description or preset["description"]
    return MODELS.register(name, builder, description=description, preset=preset, replace=replace, **defaults)


def register_presets(presets: dict[str, dict], builder: Callable[..., keras.Model]) -> None:
    """Register every preset of a model file: name -> ``{description, weights, source, score[, config]}``; the
    optional ``config`` holds constructor arguments of ``builder``.

    Examples:
        >>> import keras
        >>> from tfdehaze.models import registry
        >>> from tfdehaze.registry import MODELS
        >>> PRESETS = {"one-conv-released": {
        ...     "description": "one 1x1 convolution, trained", "weights": "one_conv.weights.h5",
        ...     "source": "train it yourself", "score": "none", "config": {"filters": 3}}}
        >>> registry.register_presets(PRESETS, lambda filters: keras.Sequential([keras.layers.Conv2D(filters, 1)]))
        >>> MODELS.get("one-conv-released").defaults, registry.describe()["one-conv-released"]
        ({'filters': 3}, 'one 1x1 convolution, trained')
        >>> MODELS.unregister("one-conv-released")
    """
    for name, preset in presets.items():
        register(name, builder, preset=preset, **preset.get("config", {}))


def names() -> list[str]:
    """The registered model names, sorted.

    Examples:
        >>> from tfdehaze.models import registry
        >>> {"guided-pix2pix", "kddn", "minet", "minet-official", "rfd"} <= set(registry.names())
        True
    """
    return MODELS.names()


def describe() -> dict[str, str]:
    """name -> one-line description.

    Examples:
        >>> from tfdehaze.models import registry
        >>> registry.describe()["minet"]
        "MI-Net, the paper's network (Table 2 ablations as options)"
    """
    return MODELS.describe()


def presets() -> dict[str, dict]:
    """name -> preset, for the names with released weights (each with ``path`` and whether it ``exists``).

    Examples:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> from tfdehaze.models import registry
        >>> with mock.patch.dict(os.environ, TFDEHAZE_HOME=tempfile.mkdtemp()):  # an empty weights folder
        ...     preset = registry.presets()["minet-official"]
        >>> sorted(preset), preset["weights"], preset["exists"]
        (['description', 'exists', 'path', 'score', 'source', 'weights'], 'minet_official_its.weights.h5', False)
    """
    found = {}
    for entry in MODELS:
        if entry.preset is not None:
            path = weights_path(entry.name)
            found[entry.name] = {**entry.preset, "path": str(path), "exists": path.is_file()}
    return found


def weights_path(name: str) -> pathlib.Path:
    """Where the released weights of preset ``name`` are expected: ``tfdehaze.paths.weights_dir() / file``.

    Examples:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> from tfdehaze.models import registry
        >>> home = tempfile.mkdtemp()
        >>> with mock.patch.dict(os.environ, TFDEHAZE_HOME=home):
        ...     path = registry.weights_path("minet-official")
        >>> path.relative_to(home).as_posix()
        'weights/minet_official_its.weights.h5'
        >>> registry.weights_path("minet")
        Traceback (most recent call last):
        ...
        ValueError: model 'minet' has no released weights
    """
    preset = MODELS.get(name).preset
    if preset is None:
        raise ValueError(f"model {name!r} has no released weights")
    return paths.weights_dir() / preset["weights"]


def build(name: str, **overrides: Any) -> keras.Model:
    """A new model (random weights) from the registered builder, with keyword ``overrides`` of its defaults.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.models import registry
        >>> model = registry.build("minet", filters=8, steps=2, reduction=4)  # a small MI-Net
        >>> {name: tuple(value.shape) for name, value in model(tf.zeros([1, 15, 17, 3])).items()}
        {'dehazed': (1, 15, 17, 3)}
        >>> registry.build("minet", width=8)
        Traceback (most recent call last):
        ...
        ValueError: model 'minet' with options {'width': 8}: Unrecognized keyword arguments passed to MINet:
        {'width': 8}
    """
    return MODELS.build(name, **overrides)


def size_rule(model: Any) -> tuple[int, int]:
    """``(multiple, minimum)``: the image sides a model takes, from its attributes ``size_multiple`` (default 1) and
    ``min_size`` (default 1). Models that pad their input to their stride take any side (multiple 1).

    Examples:
        >>> from tfdehaze.models.guided_pix2pix import PatchDiscriminator
        >>> size_rule(build("minet", filters=8, steps=1, reduction=4)), size_rule(PatchDiscriminator(n_layers=3))
        ((1, 1), (1, 17))
    """
    return max(1, int(getattr(model, "size_multiple", 1) or 1)), max(1, int(getattr(model, "min_size", 1) or 1))


def check_training_size(step: Any, size: int | None, field: str = "image_size") -> None:
    """Refuse a training image side ``size`` that a network of a training ``step`` cannot take, saying which work.

    The networks are the Keras models among ``step.checkpoint_objects()`` (`size_rule` of each); ``"model"`` sees
    the input resized by ``step.input_scale`` when the step has one (a x2 super-resolution teacher trained on
    half-size inputs needs an even side, so its output has the target's size). ``size`` None (images keep their
    own size) is not checked. `tfdehaze.train.train` calls this before the run directory is created.

    Examples:
        >>> from types import SimpleNamespace
        >>> from tfdehaze.models.guided_pix2pix import PatchDiscriminator
        >>> gan = SimpleNamespace(checkpoint_objects=lambda: {"discriminator": PatchDiscriminator(n_layers=3)})
        >>> check_training_size(gan, 64)
        >>> check_training_size(gan, 7)
        Traceback (most recent call last):
        ...
        ValueError: image_size=7 cannot be trained: the discriminator (PatchDiscriminator) takes sides of at least 17;
        the nearest sizes that work: 17
        >>> check_training_size(SimpleNamespace(checkpoint_objects=dict, input_scale=0.5), 7, "crop_size")
        Traceback (most recent call last):
        ...
        ValueError: crop_size=7 cannot be trained: the model's input is resized by 1/2 (step_options input_scale), so
        sides must be multiples of 2; the nearest sizes that work: 6 and 8
    """
    import fractions

    if size is None:
        return
    objects = getattr(step, "checkpoint_objects", dict)()
    models = {name: obj for name, obj in objects.items() if isinstance(obj, keras.Model)}
    scale = fractions.Fraction(float(getattr(step, "input_scale", 1.0))).limit_denominator(1000)

    def problems(side):
        found = []
        if (side * scale).denominator != 1:
            found.append(f"the model's input is resized by {scale} (step_options input_scale), so sides must be "
                         f"multiples of {scale.denominator}")
        for name, model in models.items():
            seen = side * scale if name == "model" else fractions.Fraction(side)
            multiple, minimum = size_rule(model)
            resized = f" (resized by {scale}: {seen})" if seen != side else ""
            if seen < minimum:
                found.append(f"the {name} ({type(model).__name__}) takes sides of at least {minimum}{resized}")
            if seen.denominator == 1 and int(seen) % multiple:
                found.append(f"the {name} ({type(model).__name__}) takes sides that are multiples of {multiple}"
                             f"{resized}")
        return found

    wrong = problems(int(size))
    if not wrong:
        return
    below = next((side for side in range(int(size) - 1, 0, -1) if not problems(side)), None)
    above = next((side for side in range(int(size) + 1, 64 * int(size) + 4096) if not problems(side)), None)
    nearest = " and ".join(str(side) for side in (below, above) if side is not None)
    raise ValueError(f"{field}={size} cannot be trained: " + "; ".join(wrong)
                     + (f"; the nearest sizes that work: {nearest}" if nearest else ""))


def load_weights(model: keras.Model, weights: str | os.PathLike | None = None,
                 checkpoint: str | None = None) -> keras.Model:
    """Build ``model`` on a small dummy image, then restore a training ``checkpoint`` prefix (the model saved under
    ``"model"``, as every run's checkpoints are) or, without one, load a ``weights`` file (``.weights.h5``).

    Examples:
        >>> import tempfile, pathlib
        >>> model = build("guided-pix2pix", depth=3, base_filters=4, radius=2)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "g.weights.h5"
        >>> load_weights(model).save_weights(str(path))
        >>> twin = load_weights(build("guided-pix2pix", depth=3, base_filters=4, radius=2), path)
        >>> all((a.numpy() == b.numpy()).all() for a, b in zip(model.weights, twin.weights))
        True
    """
    import tensorflow as tf

    model(tf.zeros([1, 32, 32, 3]), training=False)
    what = f"{type(model).__name__} ({model.count_params():,} weights)"
    if checkpoint is not None:
        try:
            tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial().assert_existing_objects_matched()
        except AssertionError as error:  # variables of the model the checkpoint has no value for
            raise ValueError(f"checkpoint {checkpoint} does not fit {what}: {_first_line(error)} (a checkpoint of "
                             f"another model or configuration?)") from None
        except (tf.errors.OpError, ValueError) as error:
            raise ValueError(f"checkpoint {checkpoint} cannot be restored: {_first_line(error)}") from None
    elif weights is not None:
        weights = pathlib.Path(weights)
        if not weights.is_file():
            raise ValueError(f"weights file not found: {weights}")
        with open(weights, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise ValueError(f"{weights}: not a Keras weights file (.weights.h5 is HDF5; this file is not)")
        try:
            model.load_weights(str(weights))
        except Exception as error:  # Keras raises ValueError, KeyError, OSError... for the wrong model's weights
            raise ValueError(f"{weights}: the weights do not fit {what}: {_first_line(error)} (weights of another "
                             f"model or configuration?)") from None
    return model


def _first_line(error: BaseException, limit: int = 300) -> str:
    """What an exception says in one short line (Keras' and TensorFlow's messages can run to pages)."""
    import re

    text = str(error).strip()
    found = re.search(r"A total of (\d+) objects could not be loaded", text)
    if found:
        return f"{found.group(1)} of its layers found no weights in the file"
    found = re.search(r"Found (\d+) Python objects that were not bound", text)
    if found:
        return f"{found.group(1)} of its variables have no value in the checkpoint"
    text = (text.splitlines() or [type(error).__name__])[0].strip()
    return text if len(text) <= limit else text[:limit] + "..."


def load_run(run_dir: str | os.PathLike, model: str | None = None, **overrides) -> keras.Model:
    """The trained model of a training run directory: rebuilt from its ``config.json`` (``model`` and
    ``model_kwargs``, updated by ``overrides``) with the weights of its latest checkpoint, else its
    ``model.weights.h5``. ``model``, if given, must be the run's model name.

    Examples:
        >>> import json, tempfile, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "config.json").write_text(json.dumps({"model": "guided-pix2pix",
        ...                                                  "model_kwargs": {"depth": 3, "base_filters": 4}}))
        >>> load_weights(build("guided-pix2pix", depth=3, base_filters=4)).save_weights(str(run / "model.weights.h5"))
        >>> load_run(run).g0.depth
        3
        >>> load_run(run, model="minet")
        Traceback (most recent call last):
        ...
        ValueError: ... is a run of 'guided-pix2pix', not 'minet'
    """
    import json


    run_dir = pathlib.Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{run_dir} is not a run directory: it has no config.json")
    try:
        config = json.loads(config_file.read_text())
        run_model, run_kwargs = config["model"], dict(config.get("model_kwargs") or {})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{config_file}: not a run configuration ({error})") from None
    if model is not None and model != run_model:
        raise ValueError(f"{run_dir} is a run of {run_model!r}, not {model!r}")
    # The newest checkpoint that reads back (a damaged state file or latest checkpoint is skipped, with a warning).
    chosen, notes, _ = checkpoints.find_restorable(run_dir / "checkpoints")
    checkpoint = str(run_dir / "checkpoints" / chosen) if chosen else None
    weights = run_dir / "model.weights.h5"
    if checkpoint is None and not weights.is_file():
        if notes:
            raise ValueError(f"run {run_dir} has no checkpoint that reads back ({'; '.join(notes)}) and no "
                             "model.weights.h5")
        raise ValueError(f"run {run_dir} has neither checkpoints nor model.weights.h5: train it first")
    for note in notes:
        warnings.warn(f"{note}; using {checkpoint or weights}", stacklevel=2)
    return load_weights(build(run_model, **{**run_kwargs, **overrides}), weights, checkpoint)


def load_preset_weights(model: keras.Model, name: str, path: str | os.PathLike | None = None) -> keras.Model:
    """Build ``model`` on a small dummy image and load the released weights of preset ``name`` into it.

    ``path`` defaults to `weights_path`; a missing file raises FileNotFoundError saying how to get it.

    Examples:
        >>> import os, pathlib, tempfile
        >>> from unittest import mock
        >>> import keras
        >>> import numpy as np
        >>> from tfdehaze.models import registry
        >>> from tfdehaze.registry import MODELS
        >>> preset = {"description": "one 1x1 convolution", "weights": "one_conv.weights.h5",
        ...           "source": "save it with model.save_weights", "score": "none"}
        >>> _ = registry.register("one-conv-released", lambda: keras.Sequential([keras.layers.Conv2D(3, 1)]),
        ...                       preset=preset)
        >>> trained = registry.build("one-conv-released")
        >>> _ = trained(np.zeros([1, 4, 4, 3]))
        >>> path = pathlib.Path(tempfile.mkdtemp(), "one_conv.weights.h5")
        >>> trained.save_weights(path)
        >>> model = registry.load_preset_weights(registry.build("one-conv-released"), "one-conv-released", path)
        >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trained.get_weights()))
        True
        >>> with mock.patch.dict(os.environ, TFDEHAZE_HOME=tempfile.mkdtemp()):  # nothing in weights_dir()
        ...     registry.load_preset_weights(registry.build("one-conv-released"), "one-conv-released")
        Traceback (most recent call last):
        ...
        FileNotFoundError: released weights of 'one-conv-released' not found at .../weights/one_conv.weights.h5.
        save it with model.save_weights
        >>> MODELS.unregister("one-conv-released")
    """
    path = pathlib.Path(path) if path is not None else weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"released weights of {name!r} not found at {path}. "
                                f"{MODELS.get(name).preset['source']}")
    return load_weights(model, path)


def load(name_or_path: str | os.PathLike, **overrides: Any) -> keras.Model:
    """A ready model: a ``.keras`` file via `keras.saving.load_model`, or a registered name built with
    ``overrides`` and, if it is a preset, loaded with its released weights (otherwise its weights are random and a
    UserWarning says so).

    Examples:
        >>> import pathlib, tempfile, warnings
        >>> import keras
        >>> from tfdehaze.models import registry
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     model = registry.load("minet", filters=8, steps=2, reduction=4)
        >>> type(model).__name__, [str(warning.message) for warning in caught]
        ('MINet', ["model 'minet' has no released weights: its weights are random (train it, or load a .keras
        file)"])
        >>> path = pathlib.Path(tempfile.mkdtemp(), "one_conv.keras")
        >>> keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)]).save(path)
        >>> registry.load(path).count_params()
        12
    """
    if isinstance(name_or_path, pathlib.Path) or str(name_or_path).endswith(".keras"):
        path = pathlib.Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"model file not found: {path}")
        if overrides:
            raise ValueError(f"overrides {sorted(overrides)} apply to registered names, not to the file {path}")
        return _load_keras_file(path)
    entry = MODELS.get(str(name_or_path))
    model = build(entry.name, **overrides)
    if entry.preset is None:
        warnings.warn(f"model {entry.name!r} has no released weights: its weights are random (train it, or load a "
                      f".keras file)", stacklevel=2)
        return model
    return load_preset_weights(model, entry.name)


def _load_keras_file(path: pathlib.Path) -> keras.Model:
    """`keras.saving.load_model` with one-line errors naming the file: not a zip, an unknown class, bad contents."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model file (a .keras file is a zip archive; this one is not)")
    try:
        return keras.saving.load_model(path)
    except TypeError as error:
        message = str(error)
        if "Could not locate" in message:  # a class no imported module registers
            unknown = message.split("'")[1] if message.count("'") >= 2 else "?"
            raise ValueError(f"{path}: the model class {unknown!r} is unknown to Keras and tfdehaze (a .keras file "
                             f"of another program or version? tfdehaze's models: {', '.join(names())})") from None
        raise ValueError(f"{path}: cannot load the Keras model ({_first_line(error)})") from None
    except Exception as error:  # Keras raises ValueError, KeyError, OSError... for damaged archives
        raise ValueError(f"{path}: cannot load the Keras model ({_first_line(error)})") from None


def listing() -> str:
    """A text table of the registered models and, for presets, their weights file, source and score
    (what ``tfdehaze-dehaze --list-models`` prints).

    Examples:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> from tfdehaze.models import registry
        >>> with mock.patch.dict(os.environ, TFDEHAZE_HOME=tempfile.mkdtemp()):
        ...     text = registry.listing()
        >>> print(text[text.index("minet "):text.index("source:")])
        minet                    MI-Net, the paper's network (Table 2 ablations as options)
        minet-official           MI-Net, the authors' released network and RESIDE-ITS weights (MINetOfficial)
                                   weights: .../weights/minet_official_its.weights.h5 (missing)
    """
    found = presets()
    lines = []
    for name, description in describe().items():
        lines.append(f"{name:24s} {description}")
        if name in found:
            preset = found[name]
            state = "found" if preset["exists"] else "missing"
            lines += [f"{'':24s}   weights: {preset['path']} ({state})",
                      f"{'':24s}   source:  {preset['source']}",
                      f"{'':24s}   score:   {preset['score']}"]
    return "\n".join(lines)
