"""SavedModel export for TensorFlow Serving: ``MODEL_BASE_PATH/<version>/``, written atomically.

`export` turns a trained model (a run directory, a ``.keras`` file, a ``.weights.h5`` file with a model name, or a
preset with released weights such as ``minet-official``) into the folder layout TF Serving polls: integer version
folders under one model base path. Each version is written beside its final name (a hidden ``.tmp-export-*``
folder that TF Serving ignores) and renamed into place, so a server never sees a half-written version.

The SavedModel is written with `keras.export.ExportArchive` (the TF1/C++ session loader of TF Serving accepts it)
and holds two signatures:

- ``serving_default``: ``image_bytes`` DT_STRING ``[None]`` (encoded PNG / JPEG / BMP / GIF, any size; TF Serving's
  REST API base64-decodes ``{"b64": ...}`` into it) -> ``dehazed_bytes`` (and ``transmission_bytes`` for a model
  with a transmission map) DT_STRING ``[None]``: 8-bit PNGs, one per input. Each image of a batch is decoded and
  dehazed at its own size (a ``tf.map_fn`` over the batch), so images of different sizes may share a request and
  nothing is padded; the batch is processed one image after another.
- ``dehaze``: ``images`` float32 ``[None, None, None, 3]`` in [0, 1] (dynamic batch, height and width; one size per
  batch) -> ``dehazed`` float32 ``[None, None, None, 3]`` and, where the model has one, ``transmission``
  ``[None, None, None, C]``, both clipped to [0, 1]. Its graph is the model's own (the guided filter keeps its
  custom gradient), so gradients of the reloaded function equal the Keras model's.

Both are traced under `tfdehaze.layers.guided_filter.portable`: the guided filter's pure TensorFlow path, not its C++
kernel (a custom op that TF Serving cannot load), so the SavedModel holds only TensorFlow's own ops.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from typing import Any

import keras
import tensorflow as tf

#: Image outputs a model may return (a dict key), in signature order; ``dehazed`` is required.
IMAGE_OUTPUTS = ("dehazed", "transmission")
BYTES_SIGNATURE = "serving_default"
FLOAT_SIGNATURE = "dehaze"
BYTES_INPUT = "image_bytes"
FLOAT_INPUT = "images"


# ------------------------------------------------------------------------------------------------- sources
def load_source(source: str | os.PathLike, model: str | None = None,
                model_kwargs: dict[str, Any] | None = None) -> keras.Model:
    """The trained Keras model ``source`` names.

    ``source`` is a run directory (``config.json`` + the latest checkpoint in ``checkpoints/``, else
    ``model.weights.h5``; ``model`` is then optional and must match the run's), a ``.keras`` file, a
    ``.weights.h5`` file (``model`` required: the registered name whose architecture it fits, built with
    ``model_kwargs``) or the name of a preset with released weights (e.g. ``minet-official``). Anything else is a
    ValueError naming the source.

    Examples:
        >>> import pathlib, tempfile
        >>> from tfdehaze.export import load_source
        >>> from tfdehaze.models import registry
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> trained = registry.build("minet", filters=4, steps=1, reduction=2)
        >>> _ = trained(tf.zeros([1, 8, 8, 3]))
        >>> trained.save_weights(folder / "m.weights.h5")
        >>> model = load_source(folder / "m.weights.h5", "minet", {"filters": 4, "steps": 1, "reduction": 2})
        >>> type(model).__name__
        'MINet'
        >>> load_source(folder / "m.weights.h5")
        Traceback (most recent call last):
        ...
        ValueError: .../m.weights.h5 holds weights only: say which model they fit with --model NAME
        >>> load_source(folder / "no-such-run")
        Traceback (most recent call last):
        ...
        ValueError: .../no-such-run: not found (expected a run directory, a .keras or .weights.h5 file, or a model
        with released weights: minet-official)
    """
    from tfdehaze.models import registry
    from tfdehaze.registry import MODELS

    text = os.fspath(source)
    path = pathlib.Path(text)
    kwargs = dict(model_kwargs or {})
    if path.is_dir():
        return registry.load_run(path, model, **kwargs)
    if text.endswith(".keras"):
        if not path.is_file():
            raise ValueError(f"{path}: model file not found")
        return registry.load(path, **kwargs)
    if text.endswith((".h5", ".weights.h5")):
        if not path.is_file():
            raise ValueError(f"{path}: weights file not found")
        if model is None:
            raise ValueError(f"{path} holds weights only: say which model they fit with --model NAME")
        return registry.load_weights(registry.build(model, **kwargs), path)
    presets = sorted(registry.presets())
    if text in MODELS.names():
        if text not in presets:
            raise ValueError(f"model {text!r} has no released weights: export a run directory, a .keras file or a "
                             f".weights.h5 file with --model {text}")
        return registry.load(text, **kwargs)
    raise ValueError(f"{text}: not found (expected a run directory, a .keras or .weights.h5 file, or a model with "
                     f"released weights: {', '.join(presets)})")


# ------------------------------------------------------------------------------------------------- graph
def _image_outputs(model: keras.Model, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """The model's image outputs (`IMAGE_OUTPUTS` present in its dict, or a tensor as ``dehazed``), in [0, 1]."""
    outputs = model(images, training=False)
    if not isinstance(outputs, dict):
        outputs = {"dehazed": outputs}
    if "dehazed" not in outputs:
        raise ValueError(f"the model returns {sorted(outputs)}, without 'dehazed'")
    return {key: tf.clip_by_value(tf.cast(outputs[key], tf.float32), 0.0, 1.0)
            for key in IMAGE_OUTPUTS if key in outputs}


def _encode_png(image: tf.Tensor) -> tf.Tensor:
    """(H, W, C) float in [0, 1] -> PNG bytes, 8 bits, rounded to nearest."""
    return tf.io.encode_png(tf.cast(tf.round(image * 255.0), tf.uint8))


def export_model(model: keras.Model, model_base_path: str | os.PathLike, version: int | None = None,
                 overwrite: bool = False) -> pathlib.Path:
    """Write ``model`` as SavedModel version ``version`` (default: newest existing + 1, or 1) under
    ``model_base_path``, atomically; returns the version folder.

    An existing version is an error unless ``overwrite``; then the old folder is moved aside just before the new
    one is renamed in, and deleted afterwards. The signatures are described in the module docstring.

    Examples:
        >>> import pathlib, tempfile
        >>> import keras
        >>> from tfdehaze.export import export_model
        >>> base = pathlib.Path(tempfile.mkdtemp(), "identity")
        >>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
        >>> export_model(model, base).name
        '1'
        >>> loaded = tf.saved_model.load(str(base / "1"))
        >>> sorted(loaded.signatures)
        ['dehaze', 'serving_default']
        >>> png = tf.io.encode_png(tf.fill([5, 7, 3], tf.constant(128, tf.uint8)))
        >>> out = loaded.signatures["serving_default"](image_bytes=tf.stack([png]))
        >>> tuple(tf.io.decode_png(out["dehazed_bytes"][0]).shape)
        (5, 7, 3)
        >>> export_model(model, base, version=1)
        Traceback (most recent call last):
        ...
        ValueError: .../identity/1 exists: choose another --version or pass --overwrite
    """
    base = pathlib.Path(model_base_path)
    if base.exists() and not base.is_dir():
        raise ValueError(f"{base} is a file, not a model base path")
    if version is None:
        existing = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
        version = max(existing, default=0) + 1
    if int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    target = base / str(int(version))
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists: choose another --version or pass --overwrite")

    probe = _image_outputs(model, tf.zeros([1, 32, 32, 3]))
    names = list(probe)
    channels = {name: probe[name].shape[-1] for name in names}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=FLOAT_INPUT)])
    def dehaze(images):
        outputs = _image_outputs(model, images)
        return {name: tf.ensure_shape(outputs[name], [None, None, None, channels[name]]) for name in names}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def dehaze_bytes(image_bytes):
        def one(data):
            image = tf.io.decode_image(data, channels=3, dtype=tf.float32, expand_animations=False)
            outputs = _image_outputs(model, image[None])
            return tuple(_encode_png(outputs[name][0]) for name in names)

        encoded = tf.map_fn(one, image_bytes, fn_output_signature=(tf.TensorSpec([], tf.string),) * len(names))
        return {f"{name}_bytes": value for name, value in zip(names, encoded, strict=True)}

    from tfdehaze.layers.guided_filter import portable

    with portable():  # TF Serving cannot load the guided filter's C++ kernel: trace its pure TensorFlow path
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(BYTES_SIGNATURE, dehaze_bytes)
        archive.add_endpoint(FLOAT_SIGNATURE, dehaze)

    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-export-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = None
    try:
        with portable():  # anything saving traces anew stays portable too
            archive.write_out(str(tmp), verbose=False)
        if target.exists():
            if not overwrite:
                raise ValueError(f"{target} exists: choose another --version or pass --overwrite")
            old = base / f".old-export-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def export(source: str | os.PathLike, model_base_path: str | os.PathLike, model: str | None = None,
           version: int | None = None, overwrite: bool = False,
           model_kwargs: dict[str, Any] | None = None) -> pathlib.Path:
    """`load_source` then `export_model`: what ``tfdehaze-export SOURCE --out MODEL_BASE_PATH`` does.

    An existing version is refused before the model is loaded.

    Examples:
        >>> import pathlib, tempfile
        >>> from tfdehaze.export import export
        >>> base = pathlib.Path(tempfile.mkdtemp())
        >>> (base / "3").mkdir()
        >>> export("minet-official", base, version=3)
        Traceback (most recent call last):
        ...
        ValueError: .../3 exists: choose another --version or pass --overwrite
        >>> export("minet", base)
        Traceback (most recent call last):
        ...
        ValueError: model 'minet' has no released weights: export a run directory, a .keras file or a .weights.h5
        file with --model minet
    """
    base = pathlib.Path(model_base_path)
    if version is not None and (base / str(int(version))).exists() and not overwrite:
        raise ValueError(f"{base / str(int(version))} exists: choose another --version or pass --overwrite")
    keras_model = load_source(source, model, model_kwargs)
    return export_model(keras_model, base, version=version, overwrite=overwrite)
