"""Dehaze image files with the dark-channel baseline or a trained/pretrained model.

The logic behind ``tfdehaze-dehaze``: collect input files, run a dehazer on each (one image at a time, any size),
write PNGs into an output folder without ever touching an input.

Large images run tiled (`dehaze_tiled`): overlapping tiles on the network's stride grid, blended with a separable
raised-cosine window that is zero within ``margin`` pixels of every inner tile edge and normalised by the summed
weights, so memory is bounded by the tile size. For a model without global statistics whose receptive radius is
at most ``margin``, the tiled output equals the whole-image output (to float round-off). Models say what is global
in a class attribute ``global_statistics``: ``"airlight"`` is estimated once on the whole image
(``model.estimate_airlight``) and passed to every tile (``model(tile, airlight=A)``); ``"instance_norm"`` and
``"channel_attention"`` use per-tile statistics in tiled mode (an approximation; disable tiling to score).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from tfdehaze.data import io

Dehazer = Callable[[tf.Tensor], dict]

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(images, **tensors)`` compiled at most twice per set of keyword names, whatever the image sizes: a
    `tf.function` traced for the first shape it sees (static shapes: the fastest graph, and a folder of one size,
    as benchmarks are, never needs another), and one traced once with unknown sizes (all dimensions of every tensor
    but the channels) for every other shape. The returned function has ``tracing_count()``.

    The one compiled predict path: `make_dehazer` (``tfdehaze-dehaze``, ``tfdehaze-eval``, tiled inference, the
    notebooks) runs every model and the dark-channel baseline through it (eager calls were ~1.4x slower for MI-Net
    on a CPU).

    Examples:
        >>> double = compiled(lambda x: 2.0 * x)
        >>> for size in (8, 12, 16, 20, 24):
        ...     _ = double(tf.zeros([1, size, size + 1, 3]))
        >>> double.tracing_count()
        2
    """
    first_shapes: dict[tuple, tuple] = {}
    functions: dict[tuple, Any] = {}

    def call(images, **tensors):
        names = tuple(sorted(tensors))
        args = [tf.convert_to_tensor(images)] + [tf.convert_to_tensor(tensors[name]) for name in names]
        shapes = tuple(tuple(arg.shape) for arg in args)
        kind = "static" if first_shapes.setdefault(names, shapes) == shapes else "dynamic"
        function = functions.get((names, kind))
        if function is None:
            def positional(*values):
                return fn(values[0], **dict(zip(names, values[1:])))
            signature = None if kind == "static" else [   # sizes unknown, channels kept
                tf.TensorSpec([None] * (arg.shape.rank - 1) + arg.shape[-1:], arg.dtype) for arg in args]
            function = functions[(names, kind)] = tf.function(positional, input_signature=signature)
        return function(*args)

    call.tracing_count = lambda: sum(f.experimental_get_tracing_count() for f in functions.values())
    return call


def make_dehazer(method: str = "dcp", model: str | os.PathLike | Any | None = None, tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, margin: int | None = None, precision: str | None = None) -> Dehazer:
    """A function ``(1, H, W, 3) float32 [0, 1] -> dict`` with at least ``"dehazed"``, compiled (`compiled`).

    Args:
        method: ``"dcp"``: the dark-channel-prior baseline (no weights). Ignored when ``model`` is given.
        model: a registered model name (``tfdehaze.models.registry.names()``), a ``.keras`` file, a training run
            directory (`load_model`), or a Keras model.
        tile: None or 0: whole images. Otherwise images taller or wider than ``tile`` run through `dehaze_tiled`
            with tiles of ``tile`` pixels (rounded up to the model's stride), ``overlap`` and ``margin``; a global
            airlight (``global_statistics``) is estimated once on the whole image and passed to every tile.
        precision: the dtype policy a model given by name or path is loaded under (``"float32"``,
            ``"mixed_bfloat16"``, ``"mixed_float16"``, ``"auto"``: `tfdehaze.precision.resolve`); None: the current
            Keras global policy. Inputs and outputs stay float32 (`tfdehaze.precision.Float32Boundary`).

    The returned function has ``tracing_count()``: the traces of its compiled functions so far.

    Examples:
        >>> hazy = tf.random.stateless_uniform([1, 16, 16, 3], seed=[0, 0])
        >>> out = make_dehazer("dcp")(hazy)          # He et al.'s dark channel prior: no weights
        >>> {name: tuple(value.shape) for name, value in sorted(out.items())}
        {'airlight': (1, 1, 1, 3), 'dehazed': (1, 16, 16, 3), 'transmission': (1, 16, 16, 1)}
        >>> 0.0 <= float(tf.reduce_min(out["dehazed"])) <= float(tf.reduce_max(out["dehazed"])) <= 1.0
        True
        >>> tiled = make_dehazer("dcp", tile=8, overlap=4)(hazy)   # 16 > 8: four overlapping 8 x 8 tiles
        >>> tuple(tiled["dehazed"].shape), bool(np.allclose(tiled["airlight"], out["airlight"]))
        ((1, 16, 16, 3), True)
        >>> make_dehazer("cap")
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'cap': use 'dcp' or give a model
    """
    if model is not None:
        if isinstance(model, (str, os.PathLike)):
            from tfdehaze import precision as precision_lib

            with precision_lib.policy(precision) if precision else contextlib.nullcontext():
                net = load_model(model)
        else:
            net = model
        stats = tuple(getattr(net, "global_statistics", ()))
        multiple = int(getattr(net, "tile_multiple", 1))
        if not getattr(net, "built", True):   # create the weights outside tf.function (else it traces twice)
            side = max(16, multiple)
            net(tf.zeros([1, side, side, 3]), training=False)
        forward = compiled(lambda batch, **kwargs: _as_dict(net(batch, training=False, **kwargs)))
        estimate = compiled(net.estimate_airlight) if "airlight" in stats else None
    elif method == "dcp":
        from tfdehaze import physics

        forward = compiled(physics.dcp_dehaze)
        estimate = compiled(lambda batch: physics.atmospheric_light(batch, "dark_channel"))
        multiple = 1
    else:
        raise ValueError(f"unknown method {method!r}: use 'dcp' or give a model")

    def run(batch, airlight=None):
        kwargs = {} if airlight is None else {"airlight": tf.convert_to_tensor(airlight, tf.float32)}
        return forward(tf.convert_to_tensor(batch, tf.float32), **kwargs)

    def dehazer(batch):
        if not tile or (batch.shape[1] <= tile and batch.shape[2] <= tile):
            return run(batch)
        return dehaze_tiled(run, batch, tile, overlap, margin=margin, multiple=multiple,
                            airlight=None if estimate is None else estimate(tf.convert_to_tensor(batch, tf.float32)))

    dehazer.tracing_count = lambda: forward.tracing_count() + (estimate.tracing_count() if estimate else 0)
    return dehazer


def load_model(name_or_path: str | os.PathLike) -> Any:
    """A ready model from a registered name, a ``.keras`` file or a training run directory.

    A run directory (``config.json``) gives its ``model.keras`` if it has one, else the model rebuilt from
    ``config.json`` with the weights of its latest checkpoint (or ``model.weights.h5``). Everything else goes to
    `tfdehaze.models.registry.load` (an unknown name: ValueError listing the registered names).

    Examples:
        >>> import tempfile
        >>> import keras
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "config.json").write_text("{}")
        >>> keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)]).save(run / "model.keras")
        >>> load_model(run).count_params()
        12
        >>> load_model(run.parent)
        Traceback (most recent call last):
        ...
        ValueError: ... is a folder but not a training run (no config.json) nor a SavedModel
    """
    from tfdehaze.models import registry

    path = pathlib.Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        if (path / "model.keras").is_file():
            return registry.load(path / "model.keras")
        return registry.load_run(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder but not a training run (no config.json) nor a SavedModel")
    return registry.load(name_or_path)   # a .keras file or a registered name (its error lists the names)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` between neighbours.

    ``length`` and ``tile`` should be multiples of ``multiple``; the step is ``tile - overlap`` rounded down to a
    multiple (at least one), and the last tile ends at ``length``. A ``tile`` >= ``length`` gives one tile.

    Examples:
        >>> tile_starts(100, 40, 10)
        [0, 30, 60]
        >>> tile_starts(96, 32, 12, multiple=8)    # step 20 -> 16
        [0, 16, 32, 48, 64]
        >>> tile_starts(30, 64, 8)
        [0]
    """
    if tile >= length:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def blend_window(length: int, overlap: int, margin: int = 0, start_edge: bool = True,
                 end_edge: bool = True) -> np.ndarray:
    """1-D blending weights of one tile along one axis, float32 (length,).

    At an inner edge (``start_edge`` / ``end_edge`` True) the weight is 0 for the first ``margin`` pixels, rises
    as a raised cosine up to ``overlap - margin`` pixels from the edge, and is 1 inside; at an image border
    (False) it is 1 up to the edge. Neighbouring tiles overlapping by at least ``overlap >= 2 * margin + 1``
    pixels give every pixel a positive summed weight.

    Examples:
        >>> blend_window(8, overlap=4, margin=1, end_edge=False).round(2).tolist()
        [0.0, 0.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]
        >>> blend_window(8, overlap=4, margin=1).round(2).tolist()
        [0.0, 0.25, 0.75, 1.0, 1.0, 0.75, 0.25, 0.0]
    """
    d = np.arange(length, dtype=np.float64)
    ramp_len = max(overlap - 2 * margin, 1)

    def ramp(dist):
        x = np.clip((dist - margin + 1) / (ramp_len + 1), 0.0, 1.0)
        return np.where(dist < margin, 0.0, 0.5 - 0.5 * np.cos(np.pi * x))

    w = np.ones(length)
    if start_edge:
        w *= ramp(d)
    if end_edge:
        w *= ramp(d[::-1])
    return w.astype(np.float32)


def dehaze_tiled(fn: Callable[..., Any], hazy: tf.Tensor | np.ndarray, tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP, margin: int | None = None, multiple: int = 1,
                 airlight: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Run ``fn`` on overlapping tiles of ``hazy`` (N, H, W, 3) and blend the outputs: memory bounded by ``tile``.

    The image is reflect-padded to a multiple of ``multiple`` (the network's stride; `tfdehaze.layers.images`),
    ``tile`` is rounded up to that multiple, tiles start on that grid (`tile_starts`) and are weighted by the outer
    product of two `blend_window` s (zero within ``margin``, default ``overlap // 4``, of an inner edge); the sum is
    divided by the summed weights, then cropped back. Every output of ``fn`` with the tile's height and width is
    blended; others (e.g. ``airlight``) are taken from ``airlight`` if given, else from the first tile.

    Args:
        fn: ``fn(tile) -> dict`` or a tensor (``"dehazed"``); called as ``fn(tile, airlight=airlight)`` when
            ``airlight`` is given.
        airlight: (N, 1, 1, 3), estimated once on the whole image for models whose output depends on it.

    The result equals whole-image inference (float round-off) when ``fn`` is translation-equivariant on the
    ``multiple`` grid with a receptive radius <= ``margin``, and every global value it uses is passed in.

    Examples:
        >>> hazy = tf.random.stateless_uniform([1, 40, 50, 3], seed=[0, 1])
        >>> def blur(x):                       # a 3 x 3 box filter: receptive radius 1
        ...     return tf.nn.avg_pool2d(x, 3, 1, "SAME")
        >>> tiled = dehaze_tiled(blur, hazy, tile=16, overlap=8)["dehazed"]
        >>> float(tf.reduce_max(tf.abs(tiled - blur(hazy)))) < 1e-6
        True
    """
    hazy = tf.convert_to_tensor(hazy, tf.float32)
    if overlap < 0 or tile < 1 or multiple < 1:
        raise ValueError(f"need tile >= 1, overlap >= 0, multiple >= 1; got tile={tile}, overlap={overlap}, "
                         f"multiple={multiple}")
    margin = overlap // 4 if margin is None else int(margin)
    if overlap < 2 * margin + 1:
        raise ValueError(f"overlap ({overlap}) must be at least 2 * margin + 1 ({2 * margin + 1})")
    from tfdehaze.layers.images import pad_to_multiple

    padded, crop = pad_to_multiple(hazy, multiple)
    n, height, width = (int(d) for d in padded.shape[:3])
    tile = int(math.ceil(tile / multiple) * multiple)
    th, tw = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, th, overlap, multiple), tile_starts(width, tw, overlap, multiple)
    sums: dict[str, np.ndarray] = {}
    others: dict[str, Any] = {}
    weight_sum = np.zeros((height, width), np.float32)
    kwargs = {} if airlight is None else {"airlight": airlight}
    for top in rows:
        wy = blend_window(th, overlap, margin, top > 0, top + th < height)
        for left in cols:
            wx = blend_window(tw, overlap, margin, left > 0, left + tw < width)
            w = np.outer(wy, wx)
            out = fn(padded[:, top:top + th, left:left + tw, :], **kwargs)
            out = out if isinstance(out, dict) else {"dehazed": out}
            for key, value in out.items():
                value = np.asarray(value, np.float32)
                if value.ndim == 4 and value.shape[1:3] == (th, tw):
                    acc = sums.setdefault(key, np.zeros((n, height, width, value.shape[-1]), np.float32))
                    acc[:, top:top + th, left:left + tw] += value * w[None, :, :, None]
                else:
                    others.setdefault(key, value)
            weight_sum[top:top + th, left:left + tw] += w
    result = {key: crop(tf.constant(acc / weight_sum[None, :, :, None])) for key, acc in sums.items()}
    for key, value in others.items():
        result[key] = tf.constant(value)
    if airlight is not None and "airlight" in result:
        result["airlight"] = tf.convert_to_tensor(airlight, tf.float32)
    return result


def _as_dict(outputs) -> dict:
    return outputs if isinstance(outputs, dict) else {"dehazed": outputs}


def _collect_inputs(inputs: Iterable[str | pathlib.Path]) -> list[pathlib.Path]:
    """Expand files and folders (their images, not recursive) into a sorted, de-duplicated list of files."""
    files: list[pathlib.Path] = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            files.extend(io.list_images(path))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise ValueError("no input images given")
    return unique


def _output_paths(files: list[pathlib.Path], out_dir: pathlib.Path,
                  suffixes: tuple[str, ...] = ("",)) -> list[list[pathlib.Path]]:
    """Per suffix, ``out_dir/<stem><suffix>.png`` for every input.

    Refuses to overwrite an input, or to write two outputs (of any suffix) to one file.
    """
    out_dir = pathlib.Path(out_dir).resolve()
    inputs = set(files)
    written_by: dict[pathlib.Path, pathlib.Path] = {}
    columns = []
    for suffix in suffixes:
        column = []
        for f in files:
            target = out_dir / f"{f.stem}{suffix}.png"
            if target in inputs:
                raise ValueError(f"refusing to overwrite the input {target}: choose another --out folder")
            if target in written_by:
                raise ValueError(f"{written_by[target]} and {f} would both be written to {target}")
            written_by[target] = f
            column.append(target)
        columns.append(column)
    return columns


def check_inputs(files: Iterable[str | os.PathLike]) -> None:
    """Read every file once (header, pixel limit, full decode) and raise one ValueError naming every bad one.

    `dehaze_files` calls it before loading the model or writing anything. One image is decoded at a time.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> good = io.write_image(root / "a.png", np.zeros((4, 4, 3)))
        >>> _ = (root / "c.png").write_bytes(good.read_bytes()[:40])          # cut short
        >>> check_inputs([good])
        >>> check_inputs([good, root / "c.png"])
        Traceback (most recent call last):
        ...
        ValueError: .../c.png: corrupt or truncated image (...) (nothing was written)
    """
    problems = []
    for path in files:
        try:
            io.read_image(path)
        except io.ImageError as error:
            problems.append(str(error))
    if len(problems) == 1:
        raise ValueError(f"{problems[0]} (nothing was written)")
    if problems:
        raise ValueError(f"{len(problems)} inputs cannot be read (nothing was written): " + "; ".join(problems))


def dehaze_files(inputs: Iterable[str | pathlib.Path], out_dir: str | pathlib.Path, method: str = "dcp",
                 model: str | None = None, save_transmission: bool = False, progress: bool = True,
                 dehazer: Dehazer | None = None, tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, precision: str | None = None) -> list[pathlib.Path]:
    """Dehaze every input image and write ``out_dir/<stem>.png`` (and ``<stem>_transmission.png``).

    Inputs are files and folders (their images, not recursive), sorted and de-duplicated. Outputs are clipped to
    [0, 1] and saved as 8-bit PNG, each written atomically; an output that would overwrite an input, or two inputs
    with one output name, is refused before anything is written.

    All or nothing for bad inputs: every input is read once (header, pixel limit `tfdehaze.data.io.max_pixels`,
    full decode; `check_inputs`) before the model is loaded and before anything is written, so one corrupt,
    truncated, non-image or oversized file stops the run with a ValueError naming every such file and nothing in
    ``out_dir`` changes. ``save_transmission`` with a model that gives no transmission map is refused on the first
    image, also before anything is written. ``dehazer`` (a function as `make_dehazer` returns)
    replaces ``method`` / ``model``. ``tile`` (None or 0: off) dehazes images larger than ``tile`` pixels in tiles
    (`make_dehazer`, `dehaze_tiled`); ``precision``: the policy a model is loaded under (`make_dehazer`).
    Returns the written paths.

    Examples:
        >>> import tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp()).resolve()
        >>> for name in ("b.png", "a.png"):
        ...     _ = io.write_image(root / "in" / name, np.full((4, 4, 3), 0.25))
        >>> def invert(batch):
        ...     return {"dehazed": 1 - batch, "transmission": batch[..., :1]}
        >>> written = dehaze_files([root / "in"], root / "out", save_transmission=True, progress=False,
        ...                        dehazer=invert)
        >>> [p.relative_to(root).as_posix() for p in written]
        ['out/a.png', 'out/a_transmission.png', 'out/b.png', 'out/b_transmission.png']
        >>> round(float(io.read_image(written[0]).mean()), 2)
        0.75
        >>> dehaze_files([root / "in"], root / "in", dehazer=invert)
        Traceback (most recent call last):
        ...
        ValueError: refusing to overwrite the input .../in/a.png: choose another --out folder
    """
    files = _collect_inputs(inputs)
    out_dir = pathlib.Path(out_dir)
    if save_transmission:
        targets, trans_targets = _output_paths(files, out_dir, ("", "_transmission"))
    else:
        (targets,), trans_targets = _output_paths(files, out_dir), [None] * len(files)
    check_inputs(files)
    dehazer = dehazer or make_dehazer(method, model, tile=tile, overlap=overlap, precision=precision)
    bar = _progbar(len(files)) if progress else None
    written = []
    # Reading the next image and writing the previous outputs (OpenCV, outside the GIL) overlap the model's work on
    # this image; a failed write stops the run at the next image, earlier outputs stay complete (atomic writes).
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="tfdehaze-io") as pool:
        upcoming = pool.submit(io.read_image, files[0]) if files else None
        writes = []
        for i, (dst, tdst) in enumerate(zip(targets, trans_targets)):
            image = upcoming.result()
            upcoming = pool.submit(io.read_image, files[i + 1]) if i + 1 < len(files) else None
            out = dehazer(tf.convert_to_tensor(image[None]))
            if tdst is not None and "transmission" not in out:   # checked before the first write
                raise ValueError(f"{model if model is not None else 'this model'} gives no transmission map: drop "
                                 "--save-transmission (nothing was written)")
            outputs = [(dst, out["dehazed"])] + ([(tdst, out["transmission"])] if tdst is not None else [])
            arrays = [(path, np.clip(np.asarray(value)[0], 0.0, 1.0)) for path, value in outputs]
            for write in writes:
                write.result()
            writes = [pool.submit(io.write_image, path, array) for path, array in arrays]
            written += [path for path, _ in arrays]
            if bar is not None:
                bar.update(i + 1)
        for write in writes:
            write.result()
    return written


def _progbar(n: int):
    import keras

    return keras.utils.Progbar(n, unit_name="image")
