"""A small bundled hazy/clear sample set that needs no download, and the haze synthesis behind it.

The clear images are real photographs shipped inside the scikit-image wheel (read from its data folder directly, so
nothing is ever fetched). Haze follows the scattering model I = J t + A (1 - t) with t = exp(-beta d)
(Guided-Pix2Pix (Jiao et al., 'Guided-Pix2Pix: End-to-End Inference and Refinement Network for Image Dehazing'),
eqs. 1-2): the motorcycle scene uses its real depth (from the Middlebury ground-truth disparity bundled with it),
the others a synthetic depth that grows towards the top of the image with smooth random variation. A and beta are
drawn per image from a fixed seed in the ranges of RESIDE (Li et al., 'Benchmarking Single-Image Dehazing and
Beyond'): A in [0.7, 1.0], beta in [0.6, 1.8].
"""
from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterable

import cv2
import numpy as np
import pandas as pd

from tfdehaze import paths
from tfdehaze.data import datasets, io

#: (name, file in scikit-image's data folder): real photographs, 8 scenes.
SOURCES = (
    ("astronaut", "astronaut.png"),
    ("camera", "camera.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("coins", "coins.png"),
    ("motorcycle_left", "motorcycle_left.png"),
    ("motorcycle_right", "motorcycle_right.png"),
    ("rocket", "rocket.jpg"),
)
#: Disparity maps (file, disparity offset doffs in pixels) for sources that have one; depth = 1 / (disp + doffs).
DISPARITY = {"motorcycle_left": ("motorcycle_disp.npz", 31.086)}
AIRLIGHT_RANGE = (0.7, 1.0)
BETA_RANGE = (0.6, 1.8)
SEED = 0
_VERSION = 1


def _synthetic_depth(height, width, rng):
    """A plausible relative depth in [0.05, 1]: far (1) at the top row, near (0.2) at the bottom, plus smooth
    random undulation (Gaussian-blurred noise, amplitude 0.15)."""
    ramp = np.repeat(np.linspace(1.0, 0.2, height)[:, None], width, axis=1)
    noise = cv2.GaussianBlur(rng.standard_normal((height, width)), (0, 0), sigmaX=max(height, width) / 8)
    noise /= np.abs(noise).max() + 1e-12
    return np.clip(ramp + 0.15 * noise, 0.05, 1.0)


def _depth_from_disparity(disparity, doffs=0.0):
    """Relative depth in (0, 1] from a stereo disparity map: 1 / (disparity + doffs), divided by its maximum.

    Invalid (NaN / inf / non-positive) disparities, i.e. occluded pixels, are filled by inpainting."""
    disparity = np.asarray(disparity, np.float32) + np.float32(doffs)
    invalid = ~np.isfinite(disparity) | (disparity <= 0)
    if invalid.all():
        raise ValueError("disparity map has no valid pixel")
    if invalid.any():
        filled = np.where(invalid, 0, disparity).astype(np.float32)
        disparity = cv2.inpaint(filled, invalid.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        disparity = np.maximum(disparity, disparity[~invalid].min())
    depth = 1.0 / disparity
    return depth / depth.max()


def synthesize_set(out_dir: str | os.PathLike,
                   items: Iterable[tuple[str, np.ndarray, np.ndarray | None]], seed: int = SEED,
                   airlight_range: tuple[float, float] = AIRLIGHT_RANGE,
                   beta_range: tuple[float, float] = BETA_RANGE) -> pd.DataFrame:
    """Write hazy/, clear/, transmission/ PNGs and manifest.csv for `items` into `out_dir`; return the manifest.

    items: iterable of ``(name, clear, depth)`` with clear (H, W, 3) float in [0, 1] and depth (H, W) relative
    depth (None: a synthetic depth, far at the top, near at the bottom, with smooth random undulation). Per image,
    A = a + small per-channel tint (all within `airlight_range`) and beta are drawn from
    ``numpy.random.default_rng(seed)``; t = exp(-beta d). The hazy image is made from the
    8-bit clear image and 8-bit transmission map exactly as written, so re-reading the three PNGs reproduces it
    to 8-bit rounding. Manifest columns: hazy, clear, transmission, airlight_r, airlight_g, airlight_b, beta.
    The haze is `tfdehaze.physics.haze` in float64 (imported here, so that importing `tfdehaze.data` does not load
    TensorFlow).

    Examples:
        >>> import tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> items = [("flat", np.full((16, 16, 3), 0.5), np.ones((16, 16))), ("ramp", np.zeros((16, 16, 3)), None)]
        >>> df = synthesize_set(out, items, airlight_range=(0.8, 0.8), beta_range=(1.0, 1.0))
        >>> df[["airlight_r", "airlight_g", "airlight_b", "beta"]].round(3).to_numpy().tolist()
        [[0.8, 0.8, 0.8, 1.0], [0.8, 0.8, 0.8, 1.0]]
        >>> sorted(p.name for p in out.iterdir()), sorted(p.name for p in (out / "hazy").iterdir())
        (['clear', 'hazy', 'manifest.csv', 'transmission'], ['flat.png', 'ramp.png'])
        >>> t, hazy = io.read_image(df["transmission"][0]), io.read_image(df["hazy"][0])   # t = exp(-1)
        >>> round(float(t.mean()), 3), round(float(hazy.mean()), 3)                      # 0.5 t + 0.8 (1 - t)
        (0.369, 0.69)
    """
    from tfdehaze import physics

    if not 0 <= airlight_range[0] <= airlight_range[1] <= 1:
        raise ValueError(f"airlight_range must satisfy 0 <= lo <= hi <= 1, got {airlight_range}")
    if not 0 <= beta_range[0] <= beta_range[1]:
        raise ValueError(f"beta_range must satisfy 0 <= lo <= hi, got {beta_range}")
    out_dir = pathlib.Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for name, clear, depth in items:
        clear = np.asarray(clear, np.float64)
        if clear.ndim != 3 or clear.shape[2] != 3:
            raise ValueError(f"{name}: clear image must be (H, W, 3), got {clear.shape}")
        if depth is None:
            depth = _synthetic_depth(*clear.shape[:2], rng)
        depth = np.asarray(depth, np.float64)
        if depth.shape != clear.shape[:2] or not np.isfinite(depth).all() or (depth < 0).any():
            raise ValueError(f"{name}: depth must be finite, non-negative and {clear.shape[:2]}, got {depth.shape}")
        a = rng.uniform(*airlight_range)
        airlight = np.clip(a + rng.uniform(-0.03, 0.03, size=3), *airlight_range)
        beta = rng.uniform(*beta_range)
        clear8 = np.round(np.clip(clear, 0, 1) * 255) / 255
        trans8 = np.round(np.exp(-beta * depth) * 255) / 255
        hazy = physics.haze(clear8, trans8[..., None], airlight, dtype="float64").numpy()
        files = {kind: out_dir / kind / f"{name}.png" for kind in ("hazy", "clear", "transmission")}
        io.write_image(files["hazy"], hazy)
        io.write_image(files["clear"], clear8)
        io.write_image(files["transmission"], trans8)
        rows.append({**{k: str(v) for k, v in files.items()},
                     "airlight_r": airlight[0], "airlight_g": airlight[1], "airlight_b": airlight[2], "beta": beta})
    if not rows:
        raise ValueError("synthesize_set: no images given")
    df = pd.DataFrame(rows)
    datasets.write_manifest(df, out_dir / "manifest.csv")
    return df


def _center_square(image, size):
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = np.ascontiguousarray(image[top:top + s, left:left + s])
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def _sample_items(size):
    data = importlib.resources.files("skimage.data")
    for name, filename in SOURCES:
        path = data / filename
        if not path.is_file():
            raise FileNotFoundError(f"scikit-image's bundled {filename} is missing from {data}; "
                                    "the sample set uses only files shipped inside the wheel")
        clear = _center_square(io.read_image(path), size)
        depth = None
        if name in DISPARITY:
            npz, doffs = DISPARITY[name]
            with np.load(data / npz) as z:
                depth = _center_square(_depth_from_disparity(z["arr_0"], doffs), size)
            depth = depth / depth.max()
        yield name, clear, depth


def _default_root(size=256):
    """``$TFDEHAZE_HOME/sample`` (``~/.cache/tfdehaze/sample``); ``sample-<size>`` for a non-default size."""
    return paths.home() / ("sample" if size == 256 else f"sample-{size}")


def sample_dir(root: str | os.PathLike | None = None, size: int = 256) -> pathlib.Path:
    """The bundled sample set (8 pairs, `size` x `size` centre-cropped squares), built once and then reused.

    Holds hazy/, clear/, transmission/ PNGs (same file names) and manifest.csv (hazy, clear, transmission,
    airlight_r, airlight_g, airlight_b, beta; paths relative to the folder). Built in a temporary folder beside
    `root` and renamed into place, so an interrupted or concurrent build never leaves a partial set. The default
    `root` is ``$TFDEHAZE_HOME/sample`` (`tfdehaze.paths.home`), ``sample-<size>`` for a size other than 256.

    Examples:
        >>> import tempfile
        >>> root = sample_dir(pathlib.Path(tempfile.mkdtemp()) / "sample", size=16)   # built once: a few seconds
        >>> df = datasets.read_manifest(root / "manifest.csv")
        >>> len(df), io.read_image(df["hazy"][0]).shape, sorted(df["clear"].map(os.path.basename))[:3]
        (8, (16, 16, 3), ['astronaut.png', 'camera.png', 'chelsea.png'])
        >>> sample_dir(root, size=16) == root                                              # then reused
        True
        >>> sample_dir(root, size=32)
        Traceback (most recent call last):
        ...
        ValueError: .../sample holds a different sample set (...); remove it or pass another root
    """
    root = pathlib.Path(root).expanduser() if root is not None else _default_root(size)
    info = {"version": _VERSION, "size": size, "seed": SEED, "sources": [f for _, f in SOURCES],
            "credit": "photographs bundled with scikit-image (see skimage/data/README.txt); "
                      "motorcycle: Middlebury 2014 stereo"}
    if (root / "manifest.csv").is_file():
        try:
            found = json.loads((root / "sample.json").read_text())
        except (OSError, ValueError):
            found = None
        if found != info:
            raise ValueError(f"{root} holds a different sample set ({found}); remove it or pass another root")
        return root
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        synthesize_set(tmp, _sample_items(size))
        (tmp / "sample.json").write_text(json.dumps(info, indent=1))
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "manifest.csv").is_file():  # not a concurrent build that won the race
                raise ValueError(f"{root} exists and is not a tfdehaze sample folder") from None
            shutil.rmtree(tmp)
            return sample_dir(root, size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
