"""Full-reference metrics (PSNR, SSIM) and evaluation of a dehazing function over a manifest of image pairs.

PSNR with peak 1.0 on [0, 1] images; SSIM (Wang et al., 'Image Quality Assessment: From Error Visibility to
Structural Similarity', eq. 13, with that paper's 11 x 11 Gaussian window of sigma 1.5 and K1 = 0.01, K2 = 0.03) as
``tf.image.ssim`` on RGB, averaged over channels; tables report mean +- std per dataset, as the dehazing papers'
tables do.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfdehaze.check import center_crop_to as _center_crop_to
from tfdehaze.check import check_image, check_same_shape

METRICS = ("psnr", "ssim", "hazy_psnr", "hazy_ssim")


def _pair(a, b, min_size=None):
    """Both images as float32 NHWC tensors of one shape (`tfdehaze.check`); ValueError naming a / b otherwise."""
    a, b = check_image(a, "a", min_size=min_size), check_image(b, "b", min_size=min_size)
    check_same_shape(a, b, ("a", "b"))
    return a, b


def psnr(a: tf.Tensor | np.ndarray, b: tf.Tensor | np.ndarray) -> tf.Tensor:
    """PSNR in dB with peak 1.0 (``tf.image.psnr``), one value per image: (N,) float32. Identical images give inf.

    Examples:
        >>> clear = tf.zeros([2, 4, 4, 3])
        >>> dehazed = tf.concat([tf.fill([1, 4, 4, 3], 0.1), tf.zeros([1, 4, 4, 3])], axis=0)
        >>> psnr(dehazed, clear).numpy()                     # MSE 0.01 -> 20 dB; identical -> inf
        array([20., inf], dtype=float32)
        >>> psnr(tf.zeros([1, 4, 4, 3]), tf.zeros([1, 4, 5, 3]))
        Traceback (most recent call last):
        ...
        ValueError: a and b must have the same shape, got a (1, 4, 4, 3) and b (1, 4, 5, 3)
    """
    a, b = _pair(a, b)
    return tf.image.psnr(a, b, max_val=1.0)


def ssim(a: tf.Tensor | np.ndarray, b: tf.Tensor | np.ndarray) -> tf.Tensor:
    """SSIM (``tf.image.ssim``, Gaussian 11 x 11, sigma 1.5) on RGB, one value per image: (N,) float32.

    Images must be at least 11 x 11 pixels.

    Examples:
        >>> x = tf.random.stateless_uniform([1, 16, 16, 3], seed=[1, 2])
        >>> ssim(x, x).numpy()
        array([1.], dtype=float32)
        >>> bool(ssim(x, 0.5 * x + 0.4)[0] < 1.0)             # a uniform haze lowers it
        True
        >>> ssim(tf.zeros([1, 8, 8, 3]), tf.zeros([1, 8, 8, 3]))
        Traceback (most recent call last):
        ...
        ValueError: a must be at least 11 x 11 pixels (H x W), got 8 x 8 (shape (1, 8, 8, 3))
    """
    a, b = _pair(a, b, min_size=11)
    return tf.image.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def center_crop_to(clear: np.ndarray, hazy: np.ndarray, clear_name: str = "clear",
                   hazy_name: str = "hazy") -> np.ndarray:
    """Crop ``clear`` (H, W, C) to the height and width of ``hazy`` about its centre.

    RESIDE SOTS-outdoor ground truths are a few pixels larger than their hazy images; like the public evaluation code
    (FFA-Net's loader, torchvision ``CenterCrop``) the offset is ``round((H - h) / 2)`` on each axis (Python's
    round-half-to-even). This is `tfdehaze.check.center_crop_to`, the same crop the training pipeline
    (`tfdehaze.data.pipeline`) applies. A hazy image larger than its clear image is an error naming both files.

    Examples:
        >>> clear = np.arange(5 * 6).reshape(5, 6, 1)
        >>> center_crop_to(clear, np.zeros((3, 4, 3)))[..., 0]
        array([[ 7,  8,  9, 10],
               [13, 14, 15, 16],
               [19, 20, 21, 22]])
        >>> center_crop_to(clear, np.zeros((6, 6, 3)), "0001.png", "0001_0.8_0.2.jpg")
        Traceback (most recent call last):
        ...
        ValueError: hazy image 0001_0.8_0.2.jpg (6x6) is larger than its clear image 0001.png (5x6); cannot centre-crop
    """
    h, w = np.shape(hazy)[:2]
    return _center_crop_to(clear, h, w, name=f"its clear image {clear_name}", target=f"hazy image {hazy_name}")


def _resize(image, image_size):
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return tf.image.resize(image, size, method="bilinear", antialias=True).numpy()


def evaluate(dehaze_fn: Callable[[tf.Tensor], Any], pairs: pd.DataFrame,
             image_size: int | tuple[int, int] | None = None, batch_size: int = 1, name: str | None = None,
             dataset: str = "", read_image: Callable[[str], np.ndarray] | None = None) -> pd.DataFrame:
    """Dehaze every pair of a manifest and score it against its clear image.

    Args:
      dehaze_fn: callable taking a (B, H, W, 3) float32 batch in [0, 1] (B = 1 unless ``batch_size`` > 1) and
        returning the dehazed batch, or a dict with a ``"dehazed"`` entry (a tfdehaze model). The output is clipped
        to [0, 1] before scoring.
      pairs: DataFrame with columns ``hazy`` and ``clear`` (file paths), e.g. from
        ``tfdehaze.data.datasets.pair_folders``.
      image_size: None to score at full resolution; an int s (-> s x s) or (height, width) to resize both images
        (bilinear, antialiased) after the clear image is cropped to the hazy one — quick checks only; the papers
        score at full size.
      batch_size: consecutive pairs of the same size are dehazed together, up to this many.
      name: method name for the ``method`` column (default: ``dehaze_fn.__name__`` or its class name).
      dataset: value of the ``dataset`` column.
      read_image: path -> (H, W, 3) float32 in [0, 1]; default ``tfdehaze.data.io.read_image``.
    Returns:
      DataFrame, one row per pair in manifest order, columns ``dataset, method, image`` (hazy file name),
      ``hazy, clear`` (paths), ``psnr, ssim`` (dehazed vs clear) and ``hazy_psnr, hazy_ssim`` (hazy input vs clear,
      the do-nothing baseline).

    Examples:
        Haze with a known t = 0.5 and A = 0.8, and a dehazer that inverts exactly that:

        >>> import pathlib
        >>> import tempfile
        >>> from tfdehaze.data import pair_folders, write_image
        >>> root, rng = pathlib.Path(tempfile.mkdtemp()), np.random.default_rng(0)
        >>> for name in ("a.png", "b.png"):
        ...     clear = rng.uniform(size=(16, 16, 3))
        ...     _ = write_image(root / "clear" / name, clear)
        ...     _ = write_image(root / "hazy" / name, 0.5 * clear + 0.5 * 0.8)
        >>> def invert_haze(batch):
        ...     return (batch - 0.8) / 0.5 + 0.8
        >>> df = evaluate(invert_haze, pair_folders(root / "hazy", root / "clear"), dataset="toy", batch_size=2)
        >>> df[["dataset", "method", "image"]].to_numpy().tolist()
        [['toy', 'invert_haze', 'a.png'], ['toy', 'invert_haze', 'b.png']]
        >>> bool((df["psnr"] > df["hazy_psnr"] + 20).all()), bool((df["ssim"] > 0.99).all())
        (True, True)
    """
    if read_image is None:
        from tfdehaze.data.io import read_image
    missing = {"hazy", "clear"} - set(getattr(pairs, "columns", ()))
    if missing:
        raise ValueError(f"pairs must be a DataFrame with columns hazy, clear; missing {sorted(missing)}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    method = name or getattr(dehaze_fn, "__name__", type(dehaze_fn).__name__)
    rows, batch = [], []

    def flush():
        hazy = np.stack([item[2] for item in batch])
        clear = np.stack([item[3] for item in batch])
        out = dehaze_fn(tf.constant(hazy))
        if isinstance(out, dict):
            out = out["dehazed"]
        out = np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
        if out.shape != hazy.shape:
            raise ValueError(f"dehaze_fn returned shape {out.shape} for input {hazy.shape} "
                             f"(first file {batch[0][0]})")
        scores = zip(psnr(out, clear).numpy(), ssim(out, clear).numpy(),
                     psnr(hazy, clear).numpy(), ssim(hazy, clear).numpy(), strict=True)
        for (hazy_path, clear_path, _, _), values in zip(batch, scores, strict=True):
            rows.append((dataset, method, os.path.basename(hazy_path), hazy_path, clear_path, *map(float, values)))
        batch.clear()

    for hazy_path, clear_path in zip(pairs["hazy"].astype(str), pairs["clear"].astype(str), strict=True):
        hazy = np.asarray(read_image(hazy_path), np.float32)
        clear = center_crop_to(np.asarray(read_image(clear_path), np.float32), hazy, clear_path, hazy_path)
        if image_size is not None:
            hazy, clear = _resize(hazy, image_size), _resize(clear, image_size)
        if batch and (len(batch) == batch_size or batch[0][2].shape != hazy.shape):
            flush()
        batch.append((hazy_path, clear_path, hazy, clear))
    if batch:
        flush()
    return pd.DataFrame(rows, columns=["dataset", "method", "image", "hazy", "clear", *METRICS])


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (pandas' sample std, ddof=1) of each metric per (dataset, method), as the papers'
    tables report them ("mean +- std").

    Returns:
      DataFrame with columns ``dataset, method, n`` and ``<metric>_mean, <metric>_std`` for psnr, ssim, hazy_psnr,
      hazy_ssim (those present in ``df``), groups in order of first appearance.

    Examples:
        >>> df = pd.DataFrame({"dataset": ["sots"] * 3 + ["ohaze"], "method": ["dcp"] * 4,
        ...                    "psnr": [20.0, 22.0, 24.0, 17.0], "ssim": [0.8, 0.85, 0.9, 0.6]})
        >>> summarize(df)
          dataset method  n  psnr_mean  psnr_std  ssim_mean  ssim_std
        0    sots    dcp  3       22.0       2.0       0.85      0.05
        1   ohaze    dcp  1       17.0       NaN       0.60       NaN
    """
    metrics = [m for m in METRICS if m in df.columns]
    groups = df.groupby(["dataset", "method"], sort=False, dropna=False)
    table = groups[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table.insert(0, "n", groups.size())
    return table.reset_index()
