"""Post-processing of dehazed images for display (Guided-Pix2Pix eqs. 47-50): contrast rescaling and multiscale Retinex.

For visualisation only, not for training: NumPy + OpenCV (``cv2.GaussianBlur`` is fast even at sigma = 250), no
gradients. Inputs are NHWC RGB (numpy arrays or tf tensors); outputs are **numpy** float32 arrays in [0, 1] of the
same shape (the paper writes x 255; we stay in [0, 1]).
"""
import cv2
import numpy as np


def _as_batch(image, name="image"):
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N, H, W, 3), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(x)).sum())} NaN/Inf value(s)")
    return x


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


def rescale(image, d_r=2.0):
    """Eqs. (48)-(50) applied to the dehazed image J itself ("GP2P-Rescale").

    Args:
      image: J, (N, H, W, 3); any finite values (the unclipped output of ``physics.dehaze`` is fine).
      d_r: dynamic range control: mean -+ d_r std maps to 0 and 1 (statistics per image over all channels).
    Returns:
      numpy float32 (N, H, W, 3) in [0, 1].
    """
    return _stretch(_as_batch(image), d_r)


def multiscale_retinex(image, sigmas=(15, 80, 250), weights=(1 / 3,) * 3, d_r=2.0, offset=1 / 255):
    """Eq. (47) then eqs. (48)-(50) ("GP2P-Retinex").

    r = sum_k w_k (log J - log(G_sigma_k * J)) per channel, with J clipped to [0, 1] and ``offset`` added before the
    logs (guards log 0; 1/255 = the usual log(I + 1) on 8-bit images). Gaussian blur by ``cv2.GaussianBlur`` with the
    kernel size OpenCV derives from sigma and its default reflect-101 border.

    Args:
      image: J, (N, H, W, 3).
      sigmas, weights: Gaussian scales in pixels and their weights (paper: 15, 80, 250 and 1/3 each).
      d_r: dynamic range control of eqs. (48)-(49).
    Returns:
      numpy float32 (N, H, W, 3) in [0, 1].
    """
    if len(sigmas) != len(weights) or not sigmas:
        raise ValueError(f"need as many weights as sigmas, got sigmas={sigmas}, weights={weights}")
    if min(sigmas) <= 0 or offset <= 0:
        raise ValueError(f"sigmas and offset must be > 0, got sigmas={sigmas}, offset={offset}")
    x = np.clip(_as_batch(image), 0.0, 1.0) + np.float32(offset)
    log_x = np.log(x)
    r = np.zeros_like(x)
    for i, frame in enumerate(x):
        for sigma, weight in zip(sigmas, weights):
            r[i] += weight * (log_x[i] - np.log(cv2.GaussianBlur(frame, (0, 0), float(sigma))))
    return _stretch(r, d_r)
