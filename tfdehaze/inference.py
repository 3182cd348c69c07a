"""Dehaze image files with the dark-channel baseline or a trained/pretrained model.

The logic behind ``tfdehaze-dehaze``: collect input files, run a dehazer on each (one image at a time, any size),
write PNGs into an output folder without ever touching an input.
"""
from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from tfdehaze.data import io

Dehazer = Callable[[tf.Tensor], dict]


def make_dehazer(method: str = "dcp", model: str | None = None) -> Dehazer:
    """A function ``(1, H, W, 3) float32 [0, 1] -> dict`` with at least ``"dehazed"``.

    Args:
        method: ``"dcp"``: the dark-channel-prior baseline (no weights). Ignored when ``model`` is given.
        model: a registered model name (``tfdehaze.models.registry.names()``) or a path to a ``.keras`` file.

    Examples:
        >>> hazy = tf.random.stateless_uniform([1, 16, 16, 3], seed=[0, 0])
        >>> out = make_dehazer("dcp")(hazy)          # He et al.'s dark channel prior: no weights
        >>> {name: tuple(value.shape) for name, value in sorted(out.items())}
        {'airlight': (1, 1, 1, 3), 'dehazed': (1, 16, 16, 3), 'transmission': (1, 16, 16, 1)}
        >>> 0.0 <= float(tf.reduce_min(out["dehazed"])) <= float(tf.reduce_max(out["dehazed"])) <= 1.0
        True
        >>> make_dehazer("cap")
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'cap': use 'dcp' or give a model
    """
    if model is not None:
        from tfdehaze.models import registry

        net = registry.load(model)
        return lambda batch: _as_dict(net(batch, training=False))
    if method == "dcp":
        from tfdehaze import physics

        return lambda batch: physics.dcp_dehaze(batch)
    raise ValueError(f"unknown method {method!r}: use 'dcp' or give a model")


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


def dehaze_files(inputs: Iterable[str | pathlib.Path], out_dir: str | pathlib.Path, method: str = "dcp",
                 model: str | None = None, save_transmission: bool = False, progress: bool = True,
                 dehazer: Dehazer | None = None) -> list[pathlib.Path]:
    """Dehaze every input image and write ``out_dir/<stem>.png`` (and ``<stem>_transmission.png``).

    Inputs are files and folders (their images, not recursive), sorted and de-duplicated. Outputs are clipped to
    [0, 1] and saved as 8-bit PNG, each written atomically; an output that would overwrite an input, or two inputs
    with one output name, is refused before anything is written. ``dehazer`` (a function as `make_dehazer` returns)
    replaces ``method`` / ``model``. Returns the written paths.

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
    dehazer = dehazer or make_dehazer(method, model)
    bar = _progbar(len(files)) if progress else None
    written = []
    for i, (src, dst, tdst) in enumerate(zip(files, targets, trans_targets)):
        image = io.read_image(src)
        out = dehazer(tf.convert_to_tensor(image[None]))
        io.write_image(dst, np.clip(np.asarray(out["dehazed"])[0], 0.0, 1.0))
        written.append(dst)
        if tdst is not None:
            if "transmission" not in out:
                raise ValueError("this model gives no transmission map: drop --save-transmission")
            io.write_image(tdst, np.clip(np.asarray(out["transmission"])[0], 0.0, 1.0))
            written.append(tdst)
        if bar is not None:
            bar.update(i + 1)
    return written


def _progbar(n: int):
    import keras

    return keras.utils.Progbar(n, unit_name="image")
