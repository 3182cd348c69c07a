"""Post-processing of dehazed images for display: contrast rescaling and multiscale Retinex, eqs. (47)-(50) of
"Guided-Pix2Pix: End-to-End Inference and Refinement Network for Image Dehazing" (Jiao et al., IEEE JSTARS 2021).

For visualisation only, not for training: NumPy + OpenCV (``cv2.GaussianBlur`` is fast even at sigma = 250), no
gradients. Inputs are NHWC RGB (numpy arrays or tf tensors, checked by `tfdehaze.check.check_array`); outputs are
**numpy** float32 arrays in [0, 1] of the same shape (the paper writes x 255; we stay in [0, 1]).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow as tf

from tfdehaze.check import check_array


def _stretch(r, d_r):
    """Eqs. (48)-(50): map [mu - d_r sigma, mu + d_r sigma] to [0, 1] and clip.

    mu and sigma are one mean and one (population) standard deviation per image over all pixels *and* channels —
    the paper writes scalar mu_r, sigma_r — so the colour balance is kept (per-channel statistics would also
    white-balance). A flat image (sigma < 1e-6, float32 round-off) maps to 0.5.
    """
    if d_r <= 0:
        raise ValueError(f"d_r must be > 0, got {d_r}")
    r = r.astype(np.float64)
    mu = r.mean(axis=(1, 2, 3), keepdims=True)
    sigma = r.std(axis=(1, 2, 3), keepdims=True)
    flat = sigma < 1e-6
    out = 0.5 + (r - mu) / (2.0 * d_r * np.where(flat, 1.0, sigma))  # == (r - min_r) / (max_r - min_r)
    out = np.where(flat, 0.5, out)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def rescale(image: np.ndarray | tf.Tensor, d_r: float = 2.0) -> np.ndarray:
    """Eqs. (48)-(50) applied to the dehazed image J itself ("GP2P-Rescale").

    Args:
      image: J, (N, H, W, 3); any finite values (the unclipped output of ``physics.dehaze`` is fine).
      d_r: dynamic range control: mean -+ d_r std maps to 0 and 1 (statistics per image over all channels).
    Returns:
      numpy float32 (N, H, W, 3) in [0, 1].

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.postprocess import rescale
        >>> dull = np.linspace(0.4, 0.6, 16 * 16 * 3, dtype=np.float32).reshape(1, 16, 16, 3)  # low contrast
        >>> out = rescale(dull)
        >>> out.shape, out.dtype, round(float(out.min()), 2), round(float(out.max()), 2)
        ((1, 16, 16, 3), dtype('float32'), 0.07, 0.93)
        >>> float(rescale(np.full((1, 4, 4, 3), 0.3)).max())  # a flat image maps to mid-gray
        0.5
    """
    return _stretch(check_array(image, "image", channels=3, finite=True), d_r)


def multiscale_retinex(image: np.ndarray | tf.Tensor, sigmas: Sequence[float] = (15, 80, 250),
                       weights: Sequence[float] = (1 / 3,) * 3, d_r: float = 2.0,
                       offset: float = 1 / 255) -> np.ndarray:
    """Eq. (47) then eqs. (48)-(50) ("GP2P-Retinex").

    r = sum_k w_k (log J - log(G_sigma_k * J)) per channel, with J clipped to [0, 1] and ``offset`` added before the
    logs (guards log 0; 1/255 = the usual log(I + 1) on 8-bit images). Gaussian blur by ``cv2.GaussianBlur`` with the
    kernel size OpenCV derives from sigma and its default reflect-101 border.

    Args:
      image: J, (N, H, W, 3).
      sigmas, weights: Gaussian scales in pixels and their weights (paper: 15, 80, 250 and 1/3 each).
      d_r: dynamic range control of eqs. (48)-(49).
      offset: added to J before the logarithms.
    Returns:
      numpy float32 (N, H, W, 3) in [0, 1].

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.postprocess import multiscale_retinex
        >>> image = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
        >>> out = multiscale_retinex(image, sigmas=(2, 8), weights=(0.5, 0.5))
        >>> out.shape, out.dtype, bool(out.min() >= 0.0 and out.max() <= 1.0)
        ((2, 32, 32, 3), dtype('float32'), True)
    """
    if len(sigmas) != len(weights) or not sigmas:
        raise ValueError(f"need as many weights as sigmas, got sigmas={sigmas}, weights={weights}")
    if min(sigmas) <= 0 or offset <= 0:
        raise ValueError(f"sigmas and offset must be > 0, got sigmas={sigmas}, offset={offset}")
    x = np.clip(check_array(image, "image", channels=3, finite=True), 0.0, 1.0) + np.float32(offset)
    log_x = np.log(x)
    r = np.zeros_like(x)
    for i, frame in enumerate(x):
        for sigma, weight in zip(sigmas, weights, strict=True):
            r[i] += weight * (log_x[i] - np.log(cv2.GaussianBlur(frame, (0, 0), float(sigma))))
    return _stretch(r, d_r)
