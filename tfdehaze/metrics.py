"""Full-reference metrics (PSNR, SSIM) and evaluation of a dehazing function over a manifest of image pairs.

SPEC "Datasets": PSNR with peak 1.0 on [0, 1] images; SSIM = ``tf.image.ssim`` (Gaussian window 11, sigma 1.5,
k1 = 0.01, k2 = 0.03) on RGB, averaged over channels; tables report mean +- std per dataset.
"""
import os

import numpy as np
import pandas as pd
import tensorflow as tf

METRICS = ("psnr", "ssim", "hazy_psnr", "hazy_ssim")


def _pair(a, b):
    a = tf.convert_to_tensor(a, tf.float32)
    b = tf.convert_to_tensor(b, tf.float32)
    if a.shape.rank != 4 or a.shape != b.shape:
        raise ValueError(f"expected two (N, H, W, C) images of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def psnr(a, b):
    """PSNR in dB with peak 1.0 (``tf.image.psnr``), one value per image: (N,) float32. Identical images give inf."""
    a, b = _pair(a, b)
    return tf.image.psnr(a, b, max_val=1.0)


def ssim(a, b):
    """SSIM (``tf.image.ssim``, Gaussian 11 x 11, sigma 1.5) on RGB, one value per image: (N,) float32.

    Images must be at least 11 x 11 pixels.
    """
    a, b = _pair(a, b)
    if min(a.shape[1], a.shape[2]) < 11:
        raise ValueError(f"ssim needs images of at least 11 x 11 pixels, got {a.shape[1]} x {a.shape[2]}")
    return tf.image.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def center_crop_to(clear, hazy, clear_name="clear", hazy_name="hazy"):
    """Crop ``clear`` (H, W, C) to the height and width of ``hazy`` about its centre.

    RESIDE SOTS-outdoor ground truths are a few pixels larger than their hazy images; like the public evaluation code
    (FFA-Net's loader, torchvision ``CenterCrop``) the offset is ``int(round((H - h) / 2))`` on each axis (Python's
    round-half-to-even). A hazy image larger than its clear image is an error naming both files.
    """
    (h, w), (big_h, big_w) = hazy.shape[:2], clear.shape[:2]
    if h > big_h or w > big_w:
        raise ValueError(f"hazy image {hazy_name} ({h}x{w}) is larger than its clear image {clear_name} "
                         f"({big_h}x{big_w}); cannot align the pair")
    top, left = int(round((big_h - h) / 2.0)), int(round((big_w - w) / 2.0))
    return clear[top:top + h, left:left + w]


def _resize(image, image_size):
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return tf.image.resize(image, size, method="bilinear", antialias=True).numpy()


def evaluate(dehaze_fn, pairs, image_size=None, batch_size=1, name=None, dataset="", read_image=None):
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
                     psnr(hazy, clear).numpy(), ssim(hazy, clear).numpy())
        for (hazy_path, clear_path, _, _), values in zip(batch, scores):
            rows.append((dataset, method, os.path.basename(hazy_path), hazy_path, clear_path, *map(float, values)))
        batch.clear()

    for hazy_path, clear_path in zip(pairs["hazy"].astype(str), pairs["clear"].astype(str)):
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


def summarize(df):
    """Mean and standard deviation (pandas' sample std, ddof=1) of each metric per (dataset, method), as the papers'
    tables report them ("mean +- std").

    Returns:
      DataFrame with columns ``dataset, method, n`` and ``<metric>_mean, <metric>_std`` for psnr, ssim, hazy_psnr,
      hazy_ssim (those present in ``df``), groups in order of first appearance.
    """
    metrics = [m for m in METRICS if m in df.columns]
    groups = df.groupby(["dataset", "method"], sort=False, dropna=False)
    table = groups[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table.insert(0, "n", groups.size())
    return table.reset_index()
