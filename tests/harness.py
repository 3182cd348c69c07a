"""One test harness for every layer and model of the package (after KerasHub's ``TestCase.run_layer_test`` and
``run_model_saving_test``): `check_layer` / `check_model` build an object with ``make()``, call it, and check

- ``"config"``: ``get_config`` round trip. ``type(obj).from_config(obj.get_config())`` has the same config (also
  through ``keras.saving.serialize_keras_object`` and JSON), and with ``set_weights(obj.get_weights())`` gives the
  same outputs;
- ``"saving"``: ``.keras`` save/load (a layer is wrapped in a functional model): same class and config, every weight
  equal, same outputs; the symbolic output shapes agree with the eager ones;
- ``"checkpoint"``: ``tf.train.Checkpoint(model=obj).write`` then ``read`` into a fresh ``make()`` object built on
  the same inputs: ``assert_existing_objects_matched``, then every variable compared path by path (a sub-layer held
  where tf.train.Checkpoint does not track it, e.g. a Python list, keeps its fresh value and fails here), then the
  outputs;
- ``"graph"``: ``tf.function`` equals eager (TF 2.21's oneDNN remapper fuses Conv2D + BiasAdd + Add + LeakyRelu
  inside tf.function and applies slope 0.2 whatever alpha is: only graph mode shows it).

Before the checks every float variable of the object is perturbed (a few per cent, seeded), so no value equals a
fresh initialisation (a delta kernel, instance norm's ones and zeros): a weight that is not saved, not restored or
not copied always shows.

``inputs``: a tensor (one argument), a list of tensors (one argument that is a list, e.g.
``MultiLevelFusion([x1, x2, x3])``) or a tuple of tensors (positional arguments, e.g. ``GuidedFilter(guide, x)``).
``training=False`` is passed where ``call`` accepts it. Outputs may be a tensor, a dict or a list/tuple of them:
every entry is compared. A failure is an AssertionError starting ``"<label>: <check>: "``.
"""
from __future__ import annotations

import inspect
import json
import pathlib
import re
from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

CHECKS = ("config", "saving", "checkpoint", "graph")
EXACT_ATOL = 1e-6      # same weights, same ops, eager: outputs equal to this (usually bitwise)
GRAPH_RTOL = 1e-5      # graph vs eager, relative to the largest |output| of each entry


def check_layer(make: Callable[[], keras.layers.Layer], inputs, *, tmp_path: pathlib.Path,
                call_kwargs: dict | None = None, checks: Iterable[str] = CHECKS, atol: float = EXACT_ATOL,
                graph_rtol: float = GRAPH_RTOL, seed: int = 0, label: str | None = None) -> keras.layers.Layer:
    """Run the harness checks (``checks``, a subset of `CHECKS`) on the layer or model ``make()`` called on
    ``inputs``; returns the built (perturbed) object. See the module docstring."""
    checks = tuple(checks)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; the checks are {CHECKS}")
    tmp_path = pathlib.Path(tmp_path)
    args = _call_args(inputs)
    obj = make()
    label = label or type(obj).__name__
    kwargs = _call_kwargs(obj, call_kwargs)
    _run(obj, args, kwargs)                    # build
    _perturb(obj, seed)
    expected = _run(obj, args, kwargs)
    if "config" in checks:
        _check_config(obj, args, kwargs, expected, atol, f"{label}: config")
    if "saving" in checks:
        _check_saving(obj, args, kwargs, expected, atol, tmp_path / "saving", f"{label}: saving")
    if "checkpoint" in checks:
        _check_checkpoint(obj, make, args, kwargs, expected, atol, tmp_path / "checkpoint", f"{label}: checkpoint")
    if "graph" in checks:
        _check_graph(obj, args, kwargs, expected, graph_rtol, f"{label}: graph")
    return obj


def check_model(make: Callable[[], keras.Model], inputs, **options) -> keras.Model:
    """`check_layer` for a `keras.Model` (saved to ``.keras`` as it is, not wrapped)."""
    model = check_layer(make, inputs, **options)
    assert isinstance(model, keras.Model), f"check_model needs a keras.Model, make() gave {type(model).__name__}"
    return model


# ---- the four checks --------------------------------------------------------------------------------------------
def _check_config(obj, args, kwargs, expected, atol, where):
    config = obj.get_config()
    try:
        plain = _jsonable(config)
    except TypeError as err:
        raise AssertionError(f"{where}: get_config() is not JSON-serialisable: {err}") from err
    clone = type(obj).from_config(config)
    assert type(clone) is type(obj), f"{where}: from_config gave {type(clone).__name__}"
    assert _jsonable(clone.get_config()) == plain, (
        f"{where}: from_config(get_config()).get_config() differs:\n{_dict_diff(plain, _jsonable(clone.get_config()))}")
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(obj))))
    assert type(revived) is type(obj), (f"{where}: serialize/deserialize_keras_object gave {type(revived).__name__} "
                                        "(is the class registered with keras.saving.register_keras_serializable?)")
    assert _jsonable(revived.get_config()) == plain, (
        f"{where}: deserialize(serialize()) config differs:\n{_dict_diff(plain, _jsonable(revived.get_config()))}")
    _run(clone, args, kwargs)
    weights = obj.get_weights()
    assert len(clone.get_weights()) == len(weights), (
        f"{where}: the clone has {len(clone.get_weights())} weights, the original {len(weights)}")
    clone.set_weights(weights)
    _compare(expected, _run(clone, args, kwargs), atol, 0.0, f"{where}: outputs of from_config(get_config()) with "
             "the same weights")


def _check_saving(obj, args, kwargs, expected, atol, directory, where):
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, keras.Model):
        model = obj
    else:
        model = _wrap(obj, args, kwargs)
        _compare_shapes(expected, model.output, where)
    path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', obj.name)}.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model), f"{where}: load_model gave {type(loaded).__name__}, not {type(model).__name__}"
    if model is obj:
        restored = loaded
        restored_outputs = _run(loaded, args, kwargs)
    else:
        restored = loaded.get_layer(obj.name)
        restored_outputs = _run(loaded, ([list(args)] if len(args) > 1 else list(args)), _training_only(kwargs))
    assert type(restored) is type(obj), f"{where}: loaded {type(restored).__name__}, not {type(obj).__name__}"
    config, restored_config = _jsonable(obj.get_config()), _jsonable(restored.get_config())
    assert restored_config == config, f"{where}: the loaded config differs:\n{_dict_diff(config, restored_config)}"
    _compare_variables(obj.weights, restored.weights, f"{where}: loaded weights")
    _compare(expected, restored_outputs, atol, 0.0, f"{where}: outputs after .keras save/load")


def _check_checkpoint(obj, make, args, kwargs, expected, atol, directory, where):
    fresh = make()
    _run(fresh, args, _call_kwargs(fresh, kwargs))
    _pair_variables(obj.weights, fresh.weights, f"{where}: fresh make()")
    trainable = {id(v) for v in obj.trainable_weights}
    pairs = list(zip(obj.weights, fresh.weights, strict=True))
    differ = [a.path for a, b in pairs if id(a) in trainable and not _equal(a, b)]
    assert differ or not trainable, (f"{where}: every trainable variable of a fresh make() already equals the saved "
                                     "one, so the restore comparison could not fail")
    prefix = tf.train.Checkpoint(model=obj).write(str(directory / "ckpt"))
    tf.train.Checkpoint(model=fresh).read(prefix).assert_existing_objects_matched()
    saved = [name for name, _ in tf.train.list_variables(prefix) if name.startswith("model/")]
    not_restored = [a.path for a, b in pairs if not _equal(a, b)]
    assert not not_restored, (
        f"{where}: {len(not_restored)} of {len(obj.weights)} variables were not restored (the checkpoint holds "
        f"{len(saved)} variables): {not_restored}. A sub-layer held where tf.train.Checkpoint does not track it "
        "(e.g. in a Python list) is silently skipped: keep each one in its own attribute or a keras.Sequential")
    _compare(expected, _run(fresh, args, kwargs), atol, 0.0, f"{where}: outputs after restore")


def _check_graph(obj, args, kwargs, expected, rtol, where):
    graph = _to_numpy(tf.function(lambda *a: obj(*a, **kwargs))(*args))
    _compare(expected, graph, 0.0, rtol, f"{where}: tf.function vs eager (rtol {rtol:g} of max |output|)")


# ---- helpers ----------------------------------------------------------------------------------------------------
def _call_args(inputs) -> tuple:
    """The positional arguments: a tuple is several, a list or a tensor one."""
    def tensor(x):
        return x if isinstance(x, tf.Tensor) else tf.convert_to_tensor(np.asarray(x))

    if isinstance(inputs, tuple):
        return tuple(tf.nest.map_structure(tensor, x) for x in inputs)
    return (tf.nest.map_structure(tensor, inputs),)


def _accepts_training(obj) -> bool:
    params = inspect.signature(obj.call).parameters.values()
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in params)


def _call_kwargs(obj, call_kwargs) -> dict:
    kwargs = dict(call_kwargs or {})
    if _accepts_training(obj):
        kwargs.setdefault("training", False)
    else:
        kwargs.pop("training", None)
    return kwargs


def _training_only(kwargs):
    return {"training": kwargs["training"]} if "training" in kwargs else {}


def _run(obj, args, kwargs):
    return _to_numpy(obj(*args, **kwargs))


def _to_numpy(outputs):
    return tf.nest.map_structure(lambda t: np.asarray(t), outputs)


def _flatten(outputs, prefix="output") -> dict:
    if isinstance(outputs, dict):
        return {k: v for key in sorted(outputs) for k, v in _flatten(outputs[key], f"{prefix}[{key!r}]").items()}
    if isinstance(outputs, (list, tuple)):
        return {k: v for i, item in enumerate(outputs) for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: np.asarray(outputs)}


def _compare(expected, got, atol, rtol, where):
    """Every entry of two output structures: same keys, shapes, and |got - expected| <= atol + rtol max|expected|
    (bitwise when both are 0)."""
    expected, got = _flatten(expected), _flatten(got)
    assert list(got) == list(expected), f"{where}: output entries {list(got)} != {list(expected)}"
    for key, want in expected.items():
        have = got[key]
        assert have.shape == want.shape, f"{where}: {key} has shape {have.shape}, expected {want.shape}"
        if atol == 0 and rtol == 0:
            np.testing.assert_array_equal(have, want, err_msg=f"{where}: {key}")
            continue
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        tolerance = atol + rtol * scale
        error = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
        assert np.all(np.isfinite(have) == np.isfinite(want)) and error <= tolerance, (
            f"{where}: {key} differs by up to {error:.3g} (tolerance {tolerance:.3g}, max |expected| {scale:.3g})")


def _compare_shapes(expected, symbolic, where):
    expected = _flatten(expected)
    symbolic = {key: tuple(t.shape) for key, t in _flatten_symbolic(symbolic).items()}
    assert list(symbolic) == list(expected), f"{where}: symbolic output entries {list(symbolic)} != {list(expected)}"
    for key, shape in symbolic.items():
        eager = expected[key].shape
        ok = len(shape) == len(eager) and all(s is None or s == e for s, e in zip(shape[1:], eager[1:], strict=True))
        assert ok, f"{where}: symbolic output {key} has shape {shape}, the eager call gives {eager}"


def _flatten_symbolic(outputs, prefix="output"):
    if isinstance(outputs, dict):
        return {k: v for key in sorted(outputs)
                for k, v in _flatten_symbolic(outputs[key], f"{prefix}[{key!r}]").items()}
    if isinstance(outputs, (list, tuple)):
        return {k: v for i, item in enumerate(outputs) for k, v in _flatten_symbolic(item, f"{prefix}[{i}]").items()}
    return {prefix: outputs}


def _wrap(layer, args, kwargs):
    """A functional model around ``layer`` with one keras.Input per input tensor (batch size left free)."""
    def symbolic(x):
        return keras.Input(shape=tuple(x.shape[1:]), dtype=x.dtype.name)

    sym = tuple(tf.nest.map_structure(symbolic, a) for a in args)
    outputs = layer(*sym, **kwargs)             # other call arguments are part of the saved graph
    model_inputs = list(sym) if len(sym) > 1 else sym[0]
    return keras.Model(model_inputs, outputs, name=f"harness_{layer.name}")


def _perturb(obj, seed):
    """Move every float variable a little (seeded): x (1 + 0.02 u) + 0.002 v, u, v in [0, 1) (positive stays
    positive)."""
    rng = np.random.default_rng(seed)
    for variable in obj.weights:
        if not np.issubdtype(np.dtype(variable.dtype), np.floating):
            continue
        value = np.asarray(variable.numpy())
        moved = value * (1 + 0.02 * rng.random(value.shape)) + 0.002 * rng.random(value.shape)
        variable.assign(moved.astype(value.dtype))


def _normal_path(path):
    """A variable path's components without the auto-numbering of layer names (``conv2d_7/kernel`` ->
    ``conv2d/kernel``)."""
    return [re.sub(r"_\d+$", "", part) for part in path.split("/")]


def _same_path(a, b):
    """Whether two variable paths name the same variable of two objects: one path, auto-numbering aside, ends with
    the other (a variable created in ``__init__`` lacks its owner's prefix; one created in ``build`` has it)."""
    a, b = _normal_path(a), _normal_path(b)
    n = min(len(a), len(b))
    return a[len(a) - n:] == b[len(b) - n:]


def _pair_variables(a, b, where):
    assert len(a) == len(b), (f"{where}: {len(b)} variables, expected {len(a)}: {[v.path for v in b]} vs "
                              f"{[v.path for v in a]}")
    for x, y in zip(a, b, strict=True):
        assert _same_path(x.path, y.path) and tuple(x.shape) == tuple(y.shape), (
            f"{where}: variable {y.path} {tuple(y.shape)} is paired with {x.path} {tuple(x.shape)}")


def _compare_variables(a, b, where):
    _pair_variables(a, b, where)
    differ = [x.path for x, y in zip(a, b, strict=True) if not _equal(x, y)]
    assert not differ, f"{where}: {len(differ)} of {len(a)} variables differ: {differ}"


def _equal(a, b):
    return np.array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def _jsonable(config):
    return json.loads(json.dumps(config))


def _dict_diff(a, b):
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return f"  {a!r}\n  != {b!r}"
    keys = sorted(set(a) | set(b))
    return "\n".join(f"  {k}: {a.get(k, '<missing>')!r} != {b.get(k, '<missing>')!r}" for k in keys
                     if a.get(k, "<missing>") != b.get(k, "<missing>"))


# --- console scripts and failing writes (shared by the command-line and reliability tests) -------------------------
def script(name: str) -> str:
    """The installed console script ``name`` (beside this Python, else on PATH); skips the test when absent."""
    import shutil
    import sys

    import pytest

    path = pathlib.Path(sys.executable).parent / name
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install -e . puts the console scripts beside python")
    return found


class HalfWriter:
    """A file whose first write puts half the bytes on disk, then fails as a full disk does (ENOSPC)."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        import errno
        import os

        self.file.write(data[:len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


def data_prep_module(name: str):
    """``data_prep/<name>.py`` (a script, not a package module) loaded as a module."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "data_prep" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_runs(step, build_model: Callable[[], keras.Model], state: list, batch_of: Callable[[int], dict]):
    """``run(seed, steps) -> losses`` for one built (traced once) training step: each run starts from
    ``build_model()``'s weights (made after ``keras.utils.set_random_seed(seed)``), the first values of the variables
    ``state`` (optimizer slots, adapters) and the batch ``batch_of(seed)``, so several seeds cost one tracing."""
    initial = [v.numpy() for v in state]

    def run(seed: int, steps: int) -> list[float]:
        keras.utils.set_random_seed(seed)
        batch = batch_of(seed)
        fresh = build_model()
        fresh(batch["hazy"])
        step.model.set_weights(fresh.get_weights())
        for variable, value in zip(state, initial, strict=True):
            variable.assign(value)
        return [float(step(batch)["loss"]) for _ in range(steps)]

    return run
