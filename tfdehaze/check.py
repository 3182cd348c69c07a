"""Shape and value checks for image batches, one implementation for the whole package (as kornia's ``core/check``).

Images are NHWC: ``(N, H, W, C)``. `check_image` validates and converts a tensor, `check_array` does the same for
numpy code, `check_shape` checks a build-time shape (a Keras layer's ``build``), `check_same_shape` compares two
images, and `center_crop_to` aligns a larger ground truth with its hazy image (numpy or TensorFlow, also inside a
``tf.data`` graph). Every error is a ``ValueError`` that names the argument and gives the shape it got.

Unknown dimensions (``None``, while a graph is traced) pass the size and channel checks unless
``known_channels=True``; value checks (``finite``, ``value_range``) run only on concrete values (numpy, or eager
tensors), never inside a traced graph.

This module imports only numpy and TensorFlow, nothing of the package, so any module may use it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

_AXES = ("batch size", "height", "width", "channels")


# ------------------------------------------------------------------------------------------------- shapes
def _dims(shape):
    """A shape (TensorShape, tuple, list) as a tuple of ints and Nones; None for an unknown rank."""
    shape = tf.TensorShape(shape)
    return None if shape.rank is None else tuple(shape.as_list())


def _shape_of(x):
    """The dims of a shape, tensor or array (anything else: as numpy sees it)."""
    if isinstance(x, (tf.TensorShape, tuple, list)) and all(d is None or isinstance(d, (int, np.integer)) for d in x):
        return _dims(x)
    return _dims(x.shape if tf.is_tensor(x) else np.shape(x))


def _channels_text(channels):
    """``3`` -> "3", ``(1, 3)`` -> "1 or 3", None -> "C"."""
    if channels is None:
        return "C"
    return " or ".join(str(c) for c in channels)


def _allowed(channels):
    """None, an int or an iterable of ints -> None or a tuple of ints."""
    if channels is None:
        return None
    if isinstance(channels, (int, np.integer)):
        return (int(channels),)
    return tuple(int(c) for c in channels)


def _check_dims(dims, name, rank, channels, min_size, known_channels, kind):
    """The shared shape check; ``dims`` a tuple of ints/None (None for an unknown rank). Returns ``dims``."""
    allowed = _allowed(channels)
    want = f"(N, H, W, {_channels_text(allowed)})"
    shown = "<unknown>" if dims is None else dims
    if rank is not None and (dims is None or len(dims) != rank):
        layout = want if rank == 4 else f"rank-{rank}"
        raise ValueError(f"{name} must be a {rank}-D {layout} {kind}, got shape {shown}")
    c = dims[-1] if dims else None
    if known_channels and c is None:
        raise ValueError(f"{name} must have a known number of channels, got shape {shown}")
    if allowed is not None and c is not None and c not in allowed:
        plural = "" if allowed == (1,) else "s"
        raise ValueError(f"{name} must have {_channels_text(allowed)} channel{plural}, shape {want}, "
                         f"got shape {shown}")
    if min_size is not None and len(dims) >= 3:
        h, w = dims[-3], dims[-2]
        if (h is not None and h < min_size) or (w is not None and w < min_size):
            raise ValueError(f"{name} must be at least {min_size} x {min_size} pixels (H x W), "
                             f"got {h} x {w} (shape {shown})")
    return dims


def check_shape(shape: tf.TensorShape | Sequence[int | None], name: str = "input", rank: int | None = 4,
                channels: int | Sequence[int] | None = None, min_size: int | None = None,
                known_channels: bool = False) -> tuple[int | None, ...] | None:
    """Check a (possibly partly unknown) shape, e.g. the ``input_shape`` of a Keras layer's ``build``.

    Args:
      shape: a ``tf.TensorShape``, tuple or list; ``None`` entries are unknown dimensions.
      name: what the error message calls the tensor.
      rank: required rank (4 for NHWC), or None for any.
      channels: None (any), an int, or a tuple of allowed ints for the last dimension.
      min_size: smallest allowed H and W (the two dimensions before the last).
      known_channels: also require the last dimension to be known.
    Returns:
      The shape as a tuple of ints and Nones.
    Raises:
      ValueError naming ``name`` and the shape.

    Examples:
      >>> check_shape((None, 32, 32, 16), "features", known_channels=True)
      (None, 32, 32, 16)
      >>> check_shape((None, None, None, None), "features", known_channels=True)
      Traceback (most recent call last):
      ...
      ValueError: features must have a known number of channels, got shape (None, None, None, None)
    """
    return _check_dims(_dims(shape), name, rank, channels, min_size, known_channels, "shape")


def check_same_shape(a: Any, b: Any, names: tuple[str, str] = ("a", "b"), axes: Sequence[int] | None = None) -> None:
    """Check that two images (tensors, arrays or shapes) agree in shape, or along some axes only.

    Args:
      a, b: tensors, arrays, or shapes (``tf.TensorShape`` / tuples). Unknown dimensions are not compared.
      names: what the error message calls them.
      axes: None to compare whole shapes (rank included), or axis indices of NHWC to compare
        (e.g. ``(0, 1, 2)``: batch size, height and width, not channels).
    Raises:
      ValueError naming both and giving both shapes.

    Examples:
      >>> check_same_shape(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1)), ("guide", "x"), axes=(0, 1, 2))
      >>> check_same_shape(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3)), ("a", "b"))
      Traceback (most recent call last):
      ...
      ValueError: a and b must have the same shape, got a (1, 4, 4, 3) and b (1, 4, 5, 3)
    """
    da, db = _shape_of(a), _shape_of(b)
    na, nb = names

    def differ(i):
        return da[i] is not None and db[i] is not None and da[i] != db[i]

    if axes is None:
        if da is not None and db is not None and (len(da) != len(db) or any(map(differ, range(len(da))))):
            raise ValueError(f"{na} and {nb} must have the same shape, got {na} {da} and {nb} {db}")
        return
    if da is None or db is None:
        return
    for axis in axes:
        if differ(axis):
            what = _AXES[axis] if len(da) == 4 else f"dimension {axis}"
            raise ValueError(f"{na} and {nb} must have the same {what}: {na} {da}, {nb} {db}")


# ------------------------------------------------------------------------------------------------- values
def _check_values(name, bad, size, lo, hi, value_range):
    if bad:
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s) of {size}")
    if value_range is not None and size and (lo < value_range[0] or hi > value_range[1]):
        hint = " (divide 8-bit images by 255)" if tuple(value_range) == (0, 1) and hi > 1 else ""
        raise ValueError(f"{name} must be in [{value_range[0]:g}, {value_range[1]:g}], "
                         f"got values in [{lo:g}, {hi:g}]{hint}")


def check_image(x: Any, name: str = "image", channels: int | Sequence[int] | None = None, min_size: int | None = None,
                dtype: tf.DType | None = tf.float32, finite: bool = False,
                value_range: tuple[float, float] | None = None, known_channels: bool = False) -> tf.Tensor:
    """Check an NHWC image batch and return it as a tensor.

    Args:
      x: anything ``tf.convert_to_tensor`` takes (tensor, numpy array, nested lists).
      name: what the error message calls it (the argument's name).
      channels: None (any), an int, or a tuple of allowed ints (an unknown channel count passes).
      min_size: smallest allowed height and width.
      dtype: cast to this dtype (default float32); None keeps the input's dtype.
      finite: reject NaN/Inf (concrete values only: numpy input or eager tensors).
      value_range: ``(lo, hi)``: reject values outside (concrete values only).
      known_channels: also require a known channel count (a traced graph may not know it).
    Returns:
      A rank-4 ``tf.Tensor`` of ``dtype``.
    Raises:
      ValueError naming ``name`` and the shape (or the bad values).

    Examples:
      >>> check_image(np.zeros((2, 8, 8, 3), np.uint8), "hazy", channels=3).dtype
      tf.float32
      >>> check_image(np.zeros((8, 8, 3)), "hazy", channels=3)
      Traceback (most recent call last):
      ...
      ValueError: hazy must be a 4-D (N, H, W, 3) tensor, got shape (8, 8, 3)
      >>> check_image(np.zeros((1, 8, 8, 2)), "guide", channels=(1, 3))
      Traceback (most recent call last):
      ...
      ValueError: guide must have 1 or 3 channels, shape (N, H, W, 1 or 3), got shape (1, 8, 8, 2)
      >>> check_image(np.full((1, 2, 2, 3), 255.0), "hazy", value_range=(0, 1))
      Traceback (most recent call last):
      ...
      ValueError: hazy must be in [0, 1], got values in [255, 255] (divide 8-bit images by 255)
    """
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an image array, got {type(x).__name__}: {err}") from None
    _check_dims(_dims(x.shape), name, 4, channels, min_size, known_channels, "tensor")
    if dtype is not None and x.dtype != dtype:
        if not (x.dtype.is_floating or x.dtype.is_integer or x.dtype.is_bool):
            raise ValueError(f"{name} must hold numbers, got dtype {x.dtype.name} (shape {_dims(x.shape)})")
        x = tf.cast(x, dtype)
    if (finite or value_range is not None) and tf.executing_eagerly() and x.dtype.is_floating:
        size = int(tf.size(x))
        bad = int(tf.reduce_sum(tf.cast(~tf.math.is_finite(x), tf.int32))) if size else 0
        lo, hi = (float(tf.reduce_min(x)), float(tf.reduce_max(x))) if size and not bad else (0.0, 0.0)
        _check_values(name, bad, size, lo, hi, value_range)
    return x


def check_array(x: Any, name: str = "image", channels: int | Sequence[int] | None = None, min_size: int | None = None,
                dtype: npt.DTypeLike = np.float32, finite: bool = False,
                value_range: tuple[float, float] | None = None) -> np.ndarray:
    """`check_image` for numpy code: check an NHWC batch and return it as a numpy array of ``dtype``.

    Takes numpy arrays, tensors and nested lists; same arguments and messages as `check_image` (``dtype`` a numpy
    dtype, or None to keep the input's).

    Examples:
      >>> check_array([[[[0.5, 0.5, 0.5]]]], "image", channels=3).shape
      (1, 1, 1, 3)
      >>> check_array(np.full((1, 2, 2, 3), np.nan), "image", finite=True)
      Traceback (most recent call last):
      ...
      ValueError: image contains 12 NaN/Inf value(s) of 12
    """
    x = np.asarray(x, dtype=dtype)
    _check_dims(x.shape, name, 4, channels, min_size, False, "array")
    if (finite or value_range is not None) and np.issubdtype(x.dtype, np.floating):
        bad = int((~np.isfinite(x)).sum())
        lo, hi = (float(x.min()), float(x.max())) if x.size and not bad else (0.0, 0.0)
        _check_values(name, bad, x.size, lo, hi, value_range)
    return x


# --------------------------------------------------------------------------------------------- centre crop
def center_offset(big: int | tf.Tensor, small: int | tf.Tensor) -> int | tf.Tensor:
    """Offset of a centred window of length ``small`` inside ``big``: ``round((big - small) / 2)``, half to even.

    Python's ``round`` and torchvision's ``CenterCrop`` (the public SOTS evaluation code) round this way; written
    in integer arithmetic so the same formula runs on Python/numpy ints and on int tensors inside a graph.

    Examples:
      >>> [center_offset(big, 4) for big in (4, 5, 6, 7, 8, 9)]
      [0, 0, 1, 2, 2, 2]
    """
    d = big - small
    return (d + d % 4 // 3) // 2


def center_crop_to(image: np.ndarray | tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor, name: str = "image",
                   target: str = "the target") -> np.ndarray | tf.Tensor:
    """Crop ``image`` (H, W, C) or (N, H, W, C) to ``height`` x ``width`` about its centre (`center_offset`).

    Numpy in, numpy out; tensors (eager or in a ``tf.data`` / ``tf.function`` graph, where the sizes may be
    scalar int tensors) give tensors. Used both to evaluate (`tfdehaze.metrics.evaluate`) and to train
    (`tfdehaze.data.pipeline`), so the two align a larger ground truth with its hazy image identically.

    Raises:
      ValueError (eager / numpy) or ``tf.errors.InvalidArgumentError`` (graph) naming both when the image is
      smaller than ``height`` x ``width``.

    Examples:
      >>> clear = np.arange(7 * 9).reshape(7, 9, 1)
      >>> center_crop_to(clear, 4, 6)[..., 0]
      array([[20, 21, 22, 23, 24, 25],
             [29, 30, 31, 32, 33, 34],
             [38, 39, 40, 41, 42, 43],
             [47, 48, 49, 50, 51, 52]])
      >>> center_crop_to(clear, 8, 6, "clear.png", "hazy.png")
      Traceback (most recent call last):
      ...
      ValueError: hazy.png (8x6) is larger than clear.png (7x9); cannot centre-crop
    """
    if tf.is_tensor(image) and not tf.executing_eagerly():
        shape = tf.shape(image)
        big_h, big_w = shape[-3], shape[-2]
        height, width = tf.cast(height, big_h.dtype), tf.cast(width, big_w.dtype)
        ok = tf.logical_and(height <= big_h, width <= big_w)
        with tf.control_dependencies([tf.debugging.Assert(ok, [target, height, width, "is larger than", name,
                                                              big_h, big_w])]):
            big_h = tf.identity(big_h)
    else:
        if not tf.is_tensor(image):
            image = np.asarray(image)
        big_h, big_w = (int(d) for d in image.shape[-3:-1])
        height, width = int(height), int(width)
        if height > big_h or width > big_w:
            raise ValueError(f"{target} ({height}x{width}) is larger than {name} ({big_h}x{big_w}); "
                             "cannot centre-crop")
    top, left = center_offset(big_h, height), center_offset(big_w, width)
    return image[..., top:top + height, left:left + width, :]
