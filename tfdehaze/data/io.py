"""Image files <-> float32 RGB arrays in [0, 1] (OpenCV decoding, Pillow only to explain failures).

`read_image` decodes PNG, JPEG, BMP and TIFF of any size and bit depth into ``(H, W, 3)`` float32 RGB in [0, 1]:
grayscale is replicated to three channels, an alpha channel is dropped (not composited), 16-bit data is divided
by 65535. EXIF orientation is ignored, as ``tf.io.decode_image`` ignores it, so files read here and in
`tfdehaze.data.pipeline` agree pixel for pixel (the pipeline decodes TIFF with `decode_bytes` itself). Every
failure is an `ImageError` naming the file and the reason.

Before any pixel is decoded, the size is read from the header (`check_image_size`) and an image above `max_pixels`
(default `DEFAULT_MAX_PIXELS`, Pillow's limit; environment variable ``TFDEHAZE_MAX_PIXELS``, or a command's
``--max-pixels``) is refused, so a decompression bomb (a 0.4 MB PNG of 20000 x 20000 pixels) never reaches the
decoder. The formats are recognised by their contents, not their extension; other contents are refused.

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
import struct
import warnings
from typing import BinaryIO

import cv2
import numpy as np
import PIL.Image

from tfdehaze.paths import atomic_write

#: The one list of image formats, by extension: what `read_image` decodes, `list_images` lists and the tf.data
#: pipelines (`tfdehaze.data.pipeline`) accept.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Images with more pixels than this are refused before decoding (a decompression bomb: a small file whose header
#: promises a huge image); Pillow's ``Image.MAX_IMAGE_PIXELS``. Raise it with the environment variable
#: `MAX_PIXELS_ENV` or a command's ``--max-pixels``.
DEFAULT_MAX_PIXELS = 178_956_970
MAX_PIXELS_ENV = "TFDEHAZE_MAX_PIXELS"


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


def _read_error(name, error: OSError) -> ImageError:
    """The ImageError for a file that cannot be opened: missing, a folder, or another OS error."""
    if isinstance(error, FileNotFoundError):
        return ImageError(f"{name}: no such file")
    if isinstance(error, IsADirectoryError):
        return ImageError(f"{name}: is a folder, not an image file")
    return ImageError(f"{name}: cannot be read ({error.strerror or error})")


def max_pixels() -> int:
    """The pixel limit of every image reader: ``$TFDEHAZE_MAX_PIXELS`` if set, else `DEFAULT_MAX_PIXELS`.

    Commands' ``--max-pixels N`` sets the variable for their own process. A value that is not a positive whole
    number raises a ValueError naming the variable.

    Examples:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {MAX_PIXELS_ENV: ""}):
        ...     max_pixels()
        178956970
        >>> with mock.patch.dict(os.environ, {MAX_PIXELS_ENV: "4000000"}):
        ...     max_pixels()
        4000000
        >>> with mock.patch.dict(os.environ, {MAX_PIXELS_ENV: "lots"}):
        ...     max_pixels()
        Traceback (most recent call last):
        ...
        ValueError: TFDEHAZE_MAX_PIXELS='lots': expected a positive whole number of pixels
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels")
    return value


class _BadHeader(Exception):
    """A file that starts like a known format but whose header is damaged or cut short."""


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _BadHeader("the header is cut short")
    return data


def _png_size(f):
    length, kind = struct.unpack(">I4s", _read(f, 8))
    if kind != b"IHDR" or length < 8:
        raise _BadHeader("no IHDR chunk after the signature")
    width, height = struct.unpack(">II", _read(f, 8))
    return height, width


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f):
    while True:
        if _read(f, 1) != b"\xff":
            raise _BadHeader("a marker was expected between JPEG segments")
        marker = _read(f, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read(f, 1)[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):
            raise _BadHeader("no frame header (SOF) before the image data")
        (length,) = struct.unpack(">H", _read(f, 2))
        if length < 2:
            raise _BadHeader(f"a JPEG segment of length {length}")
        if marker in _JPEG_SOF:
            _, height, width = struct.unpack(">BHH", _read(f, 5))
            return height, width
        f.seek(length - 2, os.SEEK_CUR)


def _bmp_size(f):
    _read(f, 12)  # file size, reserved, pixel offset
    (header,) = struct.unpack("<I", _read(f, 4))
    if header == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sides
        width, height = struct.unpack("<HH", _read(f, 4))
    elif header >= 16:
        width, height = struct.unpack("<ii", _read(f, 8))
    else:
        raise _BadHeader(f"unknown BMP header size {header}")
    return abs(height), abs(width)  # a negative height is a top-down bitmap


def _tiff_size(f, order, big):
    if big:
        offset_size, _ = struct.unpack(order + "HH", _read(f, 4))
        if offset_size != 8:
            raise _BadHeader("a BigTIFF with offsets that are not 8 bytes")
        (offset,) = struct.unpack(order + "Q", _read(f, 8))
    else:
        (offset,) = struct.unpack(order + "I", _read(f, 4))
    f.seek(offset)
    count_format, entry_size = ("Q", 20) if big else ("H", 12)
    (count,) = struct.unpack(order + count_format, _read(f, struct.calcsize(count_format)))
    sides = {}
    for _ in range(min(count, 4096)):
        entry = _read(f, entry_size)
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT, LONG or LONG8, stored in the entry itself
            value = entry[12:] if big else entry[8:]
            formats = {3: "H", 4: "I", 16: "Q"}
            if kind not in formats:
                raise _BadHeader(f"TIFF tag {tag} has type {kind}")
            sides[tag] = struct.unpack_from(order + formats[kind], value)[0]
            if len(sides) == 2:
                return sides[257], sides[256]
    raise _BadHeader("no ImageWidth / ImageLength in the first TIFF directory")


def _header_size(f):
    """(height, width) from the header of PNG / JPEG / BMP / TIFF data in `f`, or None for another format."""
    head = f.read(8)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_size(f)
    if head.startswith(b"\xff\xd8"):
        f.seek(2)
        return _jpeg_size(f)
    if head.startswith(b"BM") and len(head) == 8:
        f.seek(2)
        return _bmp_size(f)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        f.seek(4)
        return _tiff_size(f, "<" if head[:2] == b"II" else ">", head[2:4] in (b"+\x00", b"\x00+"))
    return None


def header_size(source: str | os.PathLike | bytes, name: str | os.PathLike | None = None) -> tuple[int, int] | None:
    """``(height, width)`` of a PNG, JPEG, BMP or TIFF image from its header alone, without decoding any pixel.

    `source` is a file's path or its contents (bytes); `name` is the file named in errors. Returns None when the
    data is none of those formats; raises `ImageError` when it starts like one of them but its header is damaged
    or cut short (or the file cannot be read). Reads a few bytes (JPEG: skips segments up to the frame header).

    Examples:
        >>> import tempfile
        >>> path = write_image(pathlib.Path(tempfile.mkdtemp(), "wide.png"), np.zeros((2, 5)))
        >>> header_size(path), header_size(path.read_bytes()[:24])    # the first 24 bytes of a PNG are enough
        ((2, 5), (2, 5))
        >>> header_size(b"GIF89a...") is None
        True
        >>> header_size(path.read_bytes()[:20], "cut.png")
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: cut.png: corrupt or truncated image (the header is cut short)
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "image" if name is None else name
        stream = io.BytesIO(source)
    else:
        name = source if name is None else name
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise _read_error(name, e) from None
    try:
        with stream:
            return _header_size(stream)
    except (_BadHeader, struct.error, OSError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None


def check_pixels(height: int, width: int, name: str | os.PathLike = "image", limit: int | None = None) -> None:
    """Refuse an image of ``height x width`` above ``limit`` pixels (default `max_pixels`) with an `ImageError`
    naming the file, its size and the limit, and saying how to raise it.

    Examples:
        >>> check_pixels(512, 512, "ok.png")
        >>> check_pixels(20000, 20000, "bomb.png")
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: bomb.png: image is 20000 x 20000 (width x height) = 400,000,000 pixels, above
        the limit of 178,956,970 pixels (a decompression bomb?); to read it, raise the limit with --max-pixels N or
        the environment variable TFDEHAZE_MAX_PIXELS=N
    """
    limit = max_pixels() if limit is None else int(limit)
    pixels = int(height) * int(width)
    if pixels > limit:
        raise ImageError(f"{name}: image is {width} x {height} (width x height) = {pixels:,} pixels, above the "
                         f"limit of {limit:,} pixels (a decompression bomb?); to read it, raise the limit with "
                         f"--max-pixels N or the environment variable {MAX_PIXELS_ENV}=N")


def check_image_size(source: str | os.PathLike | bytes, name: str | os.PathLike | None = None,
                     limit: int | None = None, require_format: bool = False) -> tuple[int, int] | None:
    """`header_size` then `check_pixels`: the one guard every reader of tfdehaze runs before decoding.

    Returns ``(height, width)``, or None when the data is not PNG, JPEG, BMP or TIFF (nothing to check) unless
    ``require_format``, which refuses such data with an `ImageError` (naming the format when Pillow knows it). Used
    by `decode_bytes` (so `read_image`, `decode`, evaluation, data_prep and the TIFF branch
    of the tf.data pipeline), by `tfdehaze.data.datasets.image_sizes` (manifest validation), by
    `tfdehaze.inference.dehaze_files` before any output is written, and by the REST server on posted bytes.

    Examples:
        >>> import tempfile
        >>> path = write_image(pathlib.Path(tempfile.mkdtemp(), "small.png"), np.zeros((30, 40)))
        >>> check_image_size(path)
        (30, 40)
        >>> check_image_size(path, limit=1000)
        Traceback (most recent call last):
        ...
        tfdehaze.data.io.ImageError: .../small.png: image is 40 x 30 (width x height) = 1,200 pixels, above the limit
        of 1,000 pixels (a decompression bomb?); ...
    """
    size = header_size(source, name)
    label = name if name is not None else (source if isinstance(source, (str, os.PathLike)) else "image")
    if size is not None:
        check_pixels(size[0], size[1], label, limit)
    elif require_format:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                source = f.read(1 << 16)  # enough for Pillow to name a format
        if not source:
            raise ImageError(f"{label}: empty file (0 bytes)")
        raise ImageError(f"{label}: {_unknown_format(bytes(source))}")
    return size


def _unknown_format(data):
    """Why data that is not PNG, JPEG, BMP or TIFF is refused: Pillow names the format if it knows it (header only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PIL.Image.open(io.BytesIO(data)) as im:
                found = f"a {im.format} image"
    except PIL.Image.DecompressionBombError:
        found = "an image"
    except Exception:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError... for what it cannot read
        return "not an image file (format not recognised)"
    return f"{found}, not PNG, JPEG, BMP or TIFF (the formats tfdehaze reads)"


def _failure_reason(data):
    """Why OpenCV could not decode `data` (whose header `check_image_size` read): ask Pillow, whose messages say
    'truncated', 'broken', etc."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
    except PIL.UnidentifiedImageError:  # a PNG / JPEG / BMP / TIFF header, then too little for Pillow to go on
        return "corrupt or truncated image (cut short after the header)"
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
    except OSError as e:
        raise _read_error(path, e) from None
    return decode_bytes(data, path)


def decode_bytes(data: bytes, name: str | os.PathLike = "image") -> np.ndarray:
    """`decode` for the file's contents (bytes) already read; `name` is the file named in an `ImageError`.

    The size in the header is checked against `max_pixels` first (`check_image_size`), and contents that are not
    PNG, JPEG, BMP or TIFF are refused, before anything is decoded.

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
    check_image_size(data, name, require_format=True)
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
