"""tf.data input pipelines: aligned (hazy, clear[, transmission]) pairs and single images, float32 RGB in [0, 1].

The pipelines read exactly the formats `io.read_image` reads (`io.IMAGE_EXTENSIONS`), with the same values. PNG,
JPEG and BMP are decoded by TensorFlow ops; TIFF, which ``tf.io`` cannot decode, goes through `io.decode_bytes` in a
stateless ``tf.numpy_function``, included only in pipelines that hold TIFF files. No generator: an iterator can be
saved in a `tf.train.Checkpoint` either way (a TIFF pipeline restores in a new process too). Augmentation is
stateless: the crop and flip of the n-th element of the stream use seeds derived from `seed` and n, and the shuffle
order comes from `seed`, so a run is reproducible. Hazy, clear and transmission are concatenated along channels
before resize / crop / flip and split afterwards, so they can never fall out of alignment.
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable

import pandas as pd
import tensorflow as tf

from tfdehaze.check import center_crop_to
from tfdehaze.data import datasets, io

#: Extensions decoded through `io.decode_bytes` (``tf.io`` has no TIFF decoder).
TIFF_EXTENSIONS = (".tif", ".tiff")


def _is_tiff(contents):
    """Whether encoded bytes are a TIFF file (little- or big-endian magic number)."""
    magic = tf.strings.substr(contents, 0, 4)
    return tf.logical_or(tf.equal(magic, b"II*\x00"), tf.equal(magic, b"MM\x00*"))


def _read_image_bytes(contents, name):
    """numpy side of the TIFF branch: exactly `io.read_image`, on bytes already read."""
    name = name.decode(errors="replace")
    return io.to_float(io.decode_bytes(contents, name), name=name)


def _header_pixels(contents):
    """Pixels (int64) that PNG / JPEG / BMP bytes declare in their header; 0 for other data (TIFF: `io.decode_bytes`
    checks it). The in-graph twin of `io.header_size` for the formats TensorFlow decodes itself."""
    padded = tf.strings.join([contents, tf.constant(b"\0" * 26)])

    def sides(offset, little_endian):
        raw = tf.io.decode_raw(tf.strings.substr(padded, offset, 8), tf.int32, little_endian=little_endian)
        return tf.cast(raw, tf.int64)

    def png():
        wh = sides(16, False)
        wh = tf.where(wh < 0, wh + 2 ** 32, wh)  # unsigned 32-bit sides
        return wh[0] * wh[1]

    def jpeg():
        hwc = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)
        return hwc[0] * hwc[1]

    def bmp():
        wh = tf.abs(sides(18, True))  # a negative height is a top-down bitmap
        return wh[0] * wh[1]

    head = tf.strings.substr(padded, 0, 8)
    return tf.case([(tf.equal(head, b"\x89PNG\r\n\x1a\n"), png),
                    (tf.io.is_jpeg(contents), jpeg),
                    (tf.equal(tf.strings.substr(padded, 0, 2), b"BM"), bmp)],
                   default=lambda: tf.constant(0, tf.int64))


def _guard_pixels(contents, name):
    """``contents`` once their header's pixel count is within `io.max_pixels` (read when the pipeline is built);
    an InvalidArgumentError naming the file otherwise, before TensorFlow decodes anything."""
    limit = io.max_pixels()
    pixels = _header_pixels(contents)
    check = tf.debugging.Assert(
        pixels <= limit,
        [name, f": image header declares more pixels than the limit of {limit:,} (a decompression bomb?); raise it "
               f"with --max-pixels N or {io.MAX_PIXELS_ENV}=N. Pixels:", pixels])
    with tf.control_dependencies([check]):
        return tf.identity(contents)


def _decode(contents, tiff=True, name="image"):
    """Encoded image bytes (scalar string tensor) -> ``(H, W, 3)`` float32 RGB in [0, 1], as `io.read_image`.

    Gray -> RGB, alpha dropped, 8-bit data divided by 255 and 16-bit PNG by 65535 in float32, as `io.read_image`
    does, so the values are bit-identical (PNG is decoded as 16-bit, 8-bit files as v * 257, and v * 257 / 65535
    rounds to the same float32 as v / 255). JPEG uses the accurate integer DCT, which makes it bit-identical to
    OpenCV (TF's default fast DCT differs by up to a few levels).
    TIFF (recognised by its magic number) is decoded by `io.decode_bytes` in a ``tf.numpy_function`` when `tiff`
    is true; ``tiff=False`` keeps the graph free of Python (TIFF bytes then fail to decode). `name` (a string or
    string tensor, e.g. the path) is the file named if the TIFF branch fails or if the header declares more pixels
    than `io.max_pixels` (checked in the graph before decoding, `_guard_pixels`, so the limit holds with
    ``validate=False`` too).
    """
    def png():
        return tf.cast(tf.io.decode_png(contents, channels=3, dtype=tf.uint16), tf.float32) / 65535.0

    def other():  # JPEG, BMP (8-bit)
        return tf.cond(
            tf.io.is_jpeg(contents),
            lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(contents, channels=3, expand_animations=False))

    def tf_decode():
        is_png = tf.equal(tf.strings.substr(contents, 0, 8), b"\x89PNG\r\n\x1a\n")
        return tf.cond(is_png, png, lambda: tf.cast(other(), tf.float32) / 255.0)

    contents = _guard_pixels(contents, name)
    if tiff:
        image = tf.cond(
            _is_tiff(contents),
            lambda: tf.numpy_function(_read_image_bytes, [contents, name], tf.float32, stateful=False),
            tf_decode)
    else:
        image = tf_decode()
    image.set_shape([None, None, 3])
    return image


def _has_tiff(paths):
    return any(pathlib.Path(p).suffix.lower() in TIFF_EXTENSIONS for p in paths)


def _check_paths(paths):
    bad = [p for p in paths if pathlib.Path(p).suffix.lower() not in io.IMAGE_EXTENSIONS]
    if bad:
        raise ValueError(f"{len(bad)} file(s) in a format tfdehaze does not read (use "
                         f"{', '.join(io.IMAGE_EXTENSIONS)}):\n  " + "\n  ".join(bad))


def _check_sizes(paths, image_size, crop_size, batch_size, checked):
    """Sizes matter when images keep their own size: a crop must fit, a batch needs one size."""
    if image_size is not None or (crop_size is None and batch_size == 1):
        return
    if checked is not None:
        sizes = dict(zip(checked["hazy"], zip(checked["height"], checked["width"], strict=True), strict=True))
    else:
        sizes = datasets.image_sizes(paths, decode=False)
        bad = [str(s) for s in sizes.values() if isinstance(s, Exception)]
        if bad:
            raise ValueError(f"{len(bad)} unreadable file(s):\n  " + "\n  ".join(bad))
    if crop_size is not None:
        small = [f"{p} ({h}x{w})" for p, (h, w) in sizes.items() if h < crop_size or w < crop_size]
        if small:
            raise ValueError(f"crop_size={crop_size} is larger than {len(small)} image(s):\n  " + "\n  ".join(small))
    elif len(set(sizes.values())) > 1:
        raise ValueError(f"batch_size={batch_size} with image_size=None needs images of one size, found "
                         f"{sorted(set(sizes.values()))} (height, width); set image_size or crop_size, or batch 1")


def _pipeline(ds, load, n, shuffle, repeat, seed, batch_size, drop_remainder):
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if drop_remainder is None:
        drop_remainder = bool(repeat)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def paired_dataset(pairs: pd.DataFrame | str | os.PathLike, image_size: int | None = 512, crop_size: int | None = None,
                   flip: bool = True, batch_size: int = 1, shuffle: bool = True, repeat: bool = False, seed: int = 0,
                   with_transmission: bool = False, drop_remainder: bool | None = None, validate: bool = True,
                   transmission_channels: int = 1) -> tf.data.Dataset:
    """A tf.data.Dataset of dicts ``{"hazy": (B, S, S, 3), "clear": (B, S, S, 3)[, "transmission": (B, S, S, c)]}``.

    Args:
      pairs: a manifest DataFrame (`tfdehaze.data.datasets`) or the path of a manifest CSV.
      image_size: resize every image to ``image_size x image_size`` (bilinear, antialiased; the papers train on
        512). ``None`` keeps each image's size (then batch 1, a crop, or images all of one size).
      crop_size: random ``crop_size x crop_size`` crop after resizing (None: no crop).
      flip: random left-right flip.
      shuffle, repeat, seed: shuffle the pairs each epoch (order from `seed`), repeat forever; crops and flips use
        stateless seeds from `seed` and the element's position in the stream, so a run is reproducible.
      with_transmission: also yield the manifest's ``transmission`` maps, with `transmission_channels` 1 (mean of
        the decoded channels: a gray map read exactly) or 3.
      drop_remainder: drop a last incomplete batch; default: when repeating (static batch size, nothing lost),
        never otherwise (evaluation sees every pair).
      validate: decode every file once first (`datasets.validate`) so that bad files and mismatched sizes are named
        before training instead of failing deep inside TensorFlow.

    A clear image larger than its hazy one (RESIDE SOTS-outdoor) is centre-cropped to the hazy size first, by
    `tfdehaze.check.center_crop_to`, the crop `tfdehaze.metrics.evaluate` applies.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     _ = io.write_image(root / "hazy" / name, np.full((16, 16, 3), 0.8))
        ...     _ = io.write_image(root / "clear" / name, np.full((18, 18, 3), 0.2))   # centre-cropped to 16
        >>> pairs = datasets.pair_folders(root / "hazy", root / "clear")
        >>> ds = paired_dataset(pairs, image_size=8, crop_size=4, batch_size=2, shuffle=False)
        >>> [{k: tuple(v.shape) for k, v in batch.items()} for batch in ds]   # the last batch is kept
        [{'hazy': (2, 4, 4, 3), 'clear': (2, 4, 4, 3)}, {'hazy': (1, 4, 4, 3), 'clear': (1, 4, 4, 3)}]
        >>> batch = next(iter(paired_dataset(pairs, image_size=8, batch_size=3, repeat=True)))
        >>> round(float(tf.reduce_mean(batch["hazy"])), 3), round(float(tf.reduce_mean(batch["clear"])), 3)
        (0.8, 0.2)
        >>> paired_dataset(pairs, image_size=8, crop_size=16)
        Traceback (most recent call last):
        ...
        ValueError: crop_size=16 is larger than image_size=8
    """
    df = datasets.read_manifest(pairs) if isinstance(pairs, (str, os.PathLike)) else pd.DataFrame(pairs)
    if df.empty:
        raise ValueError("paired_dataset: the manifest has no rows")
    columns = ["hazy", "clear"] + (["transmission"] if with_transmission else [])
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"paired_dataset: manifest lacks column(s) {', '.join(missing)}"
                         + (" (with_transmission=True needs transmission maps)" if "transmission" in missing else ""))
    for name, value in (("image_size", image_size), ("crop_size", crop_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if crop_size is not None and image_size is not None and crop_size > image_size:
        raise ValueError(f"crop_size={crop_size} is larger than image_size={image_size}")
    if transmission_channels not in (1, 3):
        raise ValueError(f"transmission_channels must be 1 or 3, got {transmission_channels!r}")
    df = df[columns].astype(str).map(os.path.abspath).reset_index(drop=True)
    _check_paths(list(dict.fromkeys(df.to_numpy().ravel())))
    checked = datasets.validate(df) if validate else None
    _check_sizes(df["hazy"], image_size, crop_size, batch_size, checked)

    tiff = _has_tiff(df.to_numpy().ravel())

    def load(position, paths):
        hazy = _decode(tf.io.read_file(paths["hazy"]), tiff, paths["hazy"])
        clear = _decode(tf.io.read_file(paths["clear"]), tiff, paths["clear"])
        clear = center_crop_to(clear, tf.shape(hazy)[0], tf.shape(hazy)[1], name="clear", target="hazy")
        parts = [hazy, clear]
        if with_transmission:
            trans = _decode(tf.io.read_file(paths["transmission"]), tiff, paths["transmission"])
            parts.append(tf.reduce_mean(trans, -1, keepdims=True) if transmission_channels == 1 else trans)
        x = tf.concat(parts, axis=-1)
        channels = 6 + (transmission_channels if with_transmission else 0)
        if image_size is not None:
            x = tf.image.resize(x, [image_size, image_size], method="bilinear", antialias=True)
        crop_seed = tf.stack([tf.cast(seed, tf.int64), 2 * position])
        if crop_size is not None:
            x = tf.image.stateless_random_crop(x, [crop_size, crop_size, channels], seed=crop_seed)
        if flip:
            x = tf.image.stateless_random_flip_left_right(x, seed=crop_seed + [0, 1])
        out = {"hazy": x[..., :3], "clear": x[..., 3:6]}
        if with_transmission:
            out["transmission"] = x[..., 6:]
        return out

    ds = tf.data.Dataset.from_tensor_slices({c: df[c].to_numpy() for c in columns})
    return _pipeline(ds, load, len(df), shuffle, repeat, seed, batch_size, drop_remainder)


def image_dataset(paths: str | os.PathLike | Iterable[str | os.PathLike], image_size: int | None = None,
                  batch_size: int = 1, validate: bool = True) -> tf.data.Dataset:
    """Single images for inference: dicts ``{"image": (B, H, W, 3) float32 [0, 1], "path": (B,) string}``.

    `paths`: a folder (its images, sorted) or a list of files; kept in order, no augmentation. With
    ``image_size=None`` images keep their size (batch 1, or all of one size).

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = io.write_image(root / "b.png", np.zeros((8, 8)))
        >>> _ = io.write_image(root / "a.png", np.ones((16, 12, 3)))
        >>> for batch in image_dataset(root, image_size=4, batch_size=2):
        ...     print(batch["image"].shape, [pathlib.Path(p.decode()).name for p in batch["path"].numpy()])
        (2, 4, 4, 3) ['a.png', 'b.png']
        >>> image_dataset(root, batch_size=2)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=2 with image_size=None needs images of one size, found [(8, 8), (16, 12)] (height,
        width); set image_size or crop_size, or batch 1
    """
    if isinstance(paths, (str, os.PathLike)) and pathlib.Path(paths).is_dir():
        paths = io.list_images(paths)
    paths = [os.path.abspath(os.fspath(p)) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ValueError("image_dataset: no image paths given")
    _check_paths(paths)
    checked = None
    if validate:
        sizes = datasets.image_sizes(paths)
        bad = [str(s) for s in sizes.values() if isinstance(s, Exception)]
        if bad:
            raise ValueError(f"{len(bad)} problem(s) in the images:\n  " + "\n  ".join(bad))
        checked = pd.DataFrame({"hazy": list(sizes), "height": [s[0] for s in sizes.values()],
                                "width": [s[1] for s in sizes.values()]})
    _check_sizes(paths, image_size, None, batch_size, checked)

    tiff = _has_tiff(paths)

    def load(position, path):
        image = _decode(tf.io.read_file(path), tiff, path)
        if image_size is not None:
            image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
        return {"image": image, "path": path}

    ds = tf.data.Dataset.from_tensor_slices(paths)
    return _pipeline(ds, load, len(paths), False, False, 0, batch_size, False)
