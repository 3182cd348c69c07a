"""Image files <-> float32 RGB arrays in [0, 1] (OpenCV decoding, Pillow only to explain failures).

`read_image` decodes PNG, JPEG, BMP and TIFF of any size and bit depth into ``(H, W, 3)`` float32 RGB in [0, 1]:
grayscale is replicated to three channels, an alpha channel is dropped (not composited), 16-bit data is divided
by 65535. EXIF orientation is ignored, as ``tf.io.decode_image`` ignores it, so files read here and in
`tfdehaze.data.pipeline` agree pixel for pixel (the pipeline decodes TIFF with `decode_bytes` itself). Every
failure is an `ImageError` naming the file and the reason.

Examples:
    >>> import tempfile
    >>> path = write_image(pathlib.Path(tempfile.mkdtemp(), "gray.png"), np.full((4, 4), 0.5))
    >>> image = read_image(path)
    >>> image.shape, image.dtype, round(float(image.max()), 4)
    ((4, 4, 3), dtype('float32'), 0.502)
"""
from __future__ import annotations

import io
import os
import pathlib

import cv2
import numpy as np
import PIL.Image

from tfdehaze.paths import atomic_write

#: The one list of image formats, by extension: what `read_image` decodes, `list_images` lists and the tf.data
#: pipelines (`tfdehaze.data.pipeline`) accept.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """A file that is missing, unreadable or not a decodable image; the message names the file and why.

    A ``ValueError``, so command-line tools report it as a one-line error.

    Examples:
        >>> import tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.png").write_text("not a picture")
        >>> read_image(folder / "notes.png")
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: .../notes.png: not an image file (format not recognised)
        >>> issubclass(ImageError, ValueError)
        True
    """


def _failure_reason(data):
    """Why OpenCV could not decode `data`: ask Pillow, whose messages say 'truncated', 'broken', etc."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
    except PIL.UnidentifiedImageError:
        return "not an image file (format not recognised)"
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        return f"corrupt or truncated image ({e})"
    return "could not be decoded by OpenCV"


def decode(path: str | os.PathLike) -> np.ndarray:
    """Decode `path` without changing its values: ``(H, W)`` or ``(H, W, C)`` uint8/uint16/float, RGB(A) order.

    Raises `ImageError` naming the file for a missing, empty, corrupt, truncated or non-image file.

    Examples:
        >>> import tempfile
        >>> path = write_image(pathlib.Path(tempfile.mkdtemp(), "red.png"), np.tile([1.0, 0.0, 0.0], (2, 3, 1)))
        >>> raw = decode(path)
        >>> raw.shape, raw.dtype, raw[0, 0].tolist()
        ((2, 3, 3), dtype('uint8'), [255, 0, 0])
        >>> decode(path.with_name("missing.png"))
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: .../missing.png: no such file
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    return decode_bytes(data, path)


def decode_bytes(data: bytes, name: str | os.PathLike = "image") -> np.ndarray:
    """`decode` for the file's contents (bytes) already read; `name` is the file named in an `ImageError`.

    Examples:
        >>> import cv2
        >>> ok, png = cv2.imencode(".png", np.full((2, 2), 7, np.uint16))
        >>> raw = decode_bytes(png.tobytes())
        >>> raw.shape, raw.dtype, int(raw[0, 0])
        ((2, 2), dtype('uint16'), 7)
        >>> decode_bytes(b"", "upload.png")
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: upload.png: empty file (0 bytes)
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{name}: {_failure_reason(data)}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[..., ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., [2, 1, 0, 3]]
    return image


def to_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """uint8 / uint16 / float array (gray, RGB or RGBA) -> ``(H, W, 3)`` float32 RGB in [0, 1]; alpha dropped.

    Examples:
        >>> rgba = np.array([[[255, 0, 51, 0]]], np.uint8)        # 1 x 1 RGBA, fully transparent
        >>> to_float(rgba).tolist()                                # alpha dropped, not composited
        [[[1.0, 0.0, 0.2]]]
        >>> to_float(np.full((1, 2), 65535, np.uint16)).shape      # 16-bit gray -> RGB
        (1, 2, 3)
        >>> to_float(np.zeros((2, 2), np.int32), "depth.png")
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: depth.png: unsupported pixel type int32 (expected 8/16-bit or float)
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{name}: unsupported image shape {image.shape}")
    if image.dtype == np.uint8:
        out = image.astype(np.float32) / np.float32(255)
    elif image.dtype == np.uint16:
        out = image.astype(np.float32) / np.float32(65535)
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ImageError(f"{name}: contains NaN or infinite values")
        out = np.clip(image, 0.0, 1.0).astype(np.float32)
    else:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype} (expected 8/16-bit or float)")
    channels = out.shape[2]
    if channels <= 2:  # gray or gray + alpha
        out = np.repeat(out[..., :1], 3, axis=2)
    return np.ascontiguousarray(out[..., :3])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 RGB in [0, 1].

    PNG/JPEG/BMP/TIFF, any size; grayscale -> RGB (replicated), RGBA -> RGB (alpha dropped, not composited),
    16-bit -> divided by 65535. Raises `ImageError` naming the file and the reason on any failure.

    Examples:
        >>> import tempfile
        >>> path = write_image(pathlib.Path(tempfile.mkdtemp(), "ramp.png"), np.linspace(0, 1, 16).reshape(4, 4))
        >>> image = read_image(path)
        >>> image.shape, image.dtype, float(image.min()), float(image.max())
        ((4, 4, 3), dtype('float32'), 0.0, 1.0)
        >>> read_image(path.parent)
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: ...: is a folder, not an image file
    """
    return to_float(decode(path), name=str(path))


def write_image(path: str | os.PathLike, image: np.ndarray) -> pathlib.Path:
    """Write ``(H, W, 3)`` or ``(H, W)`` / ``(H, W, 1)`` float in [0, 1] (clipped) as an 8-bit PNG, atomically.

    The PNG is written to a temporary file in the same folder and moved into place with `os.replace`, so a crash
    never leaves a half-written file; parent folders are created. Returns the path.

    Examples:
        >>> import tempfile
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> path = write_image(tmp / "new" / "out.png", np.full((4, 4, 3), 1.5))     # clipped to 1
        >>> path.relative_to(tmp).as_posix(), decode(path).max()
        ('new/out.png', np.uint8(255))
        >>> write_image(tmp / "x.png", np.zeros((4, 4, 2)))
        Traceback (most recent call last):
        ...
        ValueError: .../x.png: expected an (H, W, 3) or (H, W) image, got shape (4, 4, 2)
    """
    path = pathlib.Path(path)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{path}: expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.asarray(image, np.float64)
        if not np.isfinite(image).all():
            raise ValueError(f"{path}: image to write contains NaN or infinite values")
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if image.ndim == 3:
        image = image[..., ::-1]
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.tobytes())
    return path


def list_images(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Sorted image files (by extension: PNG, JPEG, BMP, TIFF) directly inside `folder`.

    Hidden files (``.name``) and sub-folders are skipped. Raises `ImageError` naming the folder when it is missing,
    not a folder, or holds no image file.

    Examples:
        >>> import tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("b.PNG", "a.jpg", "notes.txt", ".hidden.png"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [p.name for p in list_images(folder)]
        ['a.jpg', 'b.PNG']
        >>> list_images(folder / "missing")
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: .../missing: no such folder
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))
    if not files:
        raise ImageError(f"{folder}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files
