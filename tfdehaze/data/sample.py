"""A small bundled hazy/clear sample set that needs no download, and the haze synthesis behind it.

The clear images are real photographs shipped inside the scikit-image wheel (read from its data folder directly, so
nothing is ever fetched). Haze follows the scattering model I = J t + A (1 - t) with t = exp(-beta d) (SPEC,
"Physics"): the motorcycle scene uses its real depth (from the Middlebury ground-truth disparity bundled with it),
the others a synthetic depth that grows towards the top of the image with smooth random variation. A and beta are
drawn per image from a fixed seed in RESIDE's ranges (A in [0.7, 1.0], beta in [0.6, 1.8]).
"""
import importlib.resources
import json
import os
import pathlib
import shutil
import uuid

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


def add_haze(clear, transmission, airlight):
    """I = J t + A (1 - t) in numpy (the same equation as ``tfdehaze.physics.haze``).

    clear (H, W, 3), transmission (H, W) / (H, W, 1) / (H, W, 3), airlight scalar or (3,).
    """
    t = np.asarray(transmission, np.float64)
    t = t[..., None] if t.ndim == 2 else t
    return np.asarray(clear, np.float64) * t + np.asarray(airlight, np.float64) * (1.0 - t)


def synthetic_depth(height, width, rng):
    """A plausible relative depth in [0.05, 1]: far (1) at the top row, near (0.2) at the bottom, plus smooth
    random undulation (Gaussian-blurred noise, amplitude 0.15)."""
    ramp = np.repeat(np.linspace(1.0, 0.2, height)[:, None], width, axis=1)
    noise = cv2.GaussianBlur(rng.standard_normal((height, width)), (0, 0), sigmaX=max(height, width) / 8)
    noise /= np.abs(noise).max() + 1e-12
    return np.clip(ramp + 0.15 * noise, 0.05, 1.0)


def depth_from_disparity(disparity, doffs=0.0):
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


def synthesize_set(out_dir, items, seed=SEED, airlight_range=AIRLIGHT_RANGE, beta_range=BETA_RANGE):
    """Write hazy/, clear/, transmission/ PNGs and manifest.csv for `items` into `out_dir`; return the manifest.

    items: iterable of ``(name, clear, depth)`` with clear (H, W, 3) float in [0, 1] and depth (H, W) relative
    depth (None: `synthetic_depth`). Per image, A = a + small per-channel tint (all within `airlight_range`) and
    beta are drawn from ``numpy.random.default_rng(seed)``; t = exp(-beta d). The hazy image is made from the
    8-bit clear image and 8-bit transmission map exactly as written, so re-reading the three PNGs reproduces it
    to 8-bit rounding. Manifest columns: hazy, clear, transmission, airlight_r, airlight_g, airlight_b, beta.
    """
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
            depth = synthetic_depth(*clear.shape[:2], rng)
        depth = np.asarray(depth, np.float64)
        if depth.shape != clear.shape[:2] or not np.isfinite(depth).all() or (depth < 0).any():
            raise ValueError(f"{name}: depth must be finite, non-negative and {clear.shape[:2]}, got {depth.shape}")
        a = rng.uniform(*airlight_range)
        airlight = np.clip(a + rng.uniform(-0.03, 0.03, size=3), *airlight_range)
        beta = rng.uniform(*beta_range)
        clear8 = np.round(np.clip(clear, 0, 1) * 255) / 255
        trans8 = np.round(np.exp(-beta * depth) * 255) / 255
        hazy = add_haze(clear8, trans8, airlight)
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
                depth = _center_square(depth_from_disparity(z["arr_0"], doffs), size)
            depth = depth / depth.max()
        yield name, clear, depth


def default_root(size=256):
    """``$TFDEHAZE_HOME/sample`` (``~/.cache/tfdehaze/sample``); ``sample-<size>`` for a non-default size."""
    return paths.home() / ("sample" if size == 256 else f"sample-{size}")


def sample_dir(root=None, size=256):
    """The bundled sample set (8 pairs, `size` x `size` centre-cropped squares), built once and then reused.

    Holds hazy/, clear/, transmission/ PNGs (same file names) and manifest.csv (hazy, clear, transmission,
    airlight_r, airlight_g, airlight_b, beta; paths relative to the folder). Built in a temporary folder beside
    `root` and renamed into place, so an interrupted or concurrent build never leaves a partial set.
    """
    root = pathlib.Path(root).expanduser() if root is not None else default_root(size)
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
