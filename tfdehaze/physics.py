"""The atmospheric scattering model, airlight estimators, the dark channel and the dark-channel-prior baseline.

Images are float32 NHWC RGB in [0, 1]; airlight ``A`` is ``(N, 1, 1, 3)``; transmission ``t`` is ``(N, H, W, 1)`` or
``(N, H, W, 3)``. Equation numbers refer to Guided-Pix2Pix (papers/guided-pix2pix.md); the baseline is He, Sun and
Tang, "Single image haze removal using dark channel prior" (CVPR 2009 / TPAMI 2011).

Everything is TensorFlow and differentiable except the airlight estimators, whose output is wrapped in
``tf.stop_gradient``: the airlight is a constant picked from the image (an argmax), not a learned quantity.
"""
import numpy as np
import tensorflow as tf

from tfdehaze.layers.guided_filter import guided_filter

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # eq. (5)
AIRLIGHT_METHODS = ("brightest_luma", "brightest_value", "dark_channel")


def haze(clear, transmission, airlight):
    """Eq. (3): I = J t + A (1 - t).

    Args:
      clear: J, (N, H, W, 3).
      transmission: t, (N, H, W, 1) or (N, H, W, 3), in (0, 1].
      airlight: A, (N, 1, 1, 3) (anything that broadcasts).
    Returns:
      The hazy image I, (N, H, W, 3) float32.
    """
    clear = tf.convert_to_tensor(clear, tf.float32)
    t = tf.convert_to_tensor(transmission, tf.float32)
    a = tf.convert_to_tensor(airlight, tf.float32)
    return clear * t + a * (1.0 - t)


def dehaze(hazy, transmission, airlight, t_min=0.05):
    """Eq. (4) with a clamp: J = (I - A) / max(t, t_min) + A.

    The papers have no clamp; without one a near-zero t explodes (SPEC). The output is *not* clipped: train on it,
    clip to [0, 1] only for images shown or saved. The gradient w.r.t. t is zero where t < t_min.

    Args:
      hazy: I, (N, H, W, 3).
      transmission: t, (N, H, W, 1) or (N, H, W, 3).
      airlight: A, (N, 1, 1, 3).
      t_min: lower bound applied to t, in (0, 1].
    Returns:
      J, (N, H, W, 3) float32, unclipped.
    """
    if isinstance(t_min, (int, float)) and not 0.0 < t_min <= 1.0:
        raise ValueError(f"t_min must be in (0, 1], got {t_min}")
    hazy = tf.convert_to_tensor(hazy, tf.float32)
    t = tf.maximum(tf.convert_to_tensor(transmission, tf.float32), t_min)
    a = tf.convert_to_tensor(airlight, tf.float32)
    return (hazy - a) / t + a


def transmission_from_depth(depth, beta):
    """Eq. (2): t = exp(-beta d).

    Args:
      depth: d, (N, H, W, 1) (any units consistent with beta; RESIDE uses depth normalised to [0, 1] or metres).
      beta: scattering coefficient, a scalar or one per image, shape (N,).
    Returns:
      t, same shape as depth, float32.
    """
    depth = tf.convert_to_tensor(depth, tf.float32)
    beta = tf.convert_to_tensor(beta, tf.float32)
    if beta.shape.rank == 1:
        beta = tf.reshape(beta, [-1, 1, 1, 1])
    return tf.exp(-beta * depth)


def sample_haze_parameters(batch, seed=None, airlight_range=(0.7, 1.0), beta_range=(0.6, 1.8), gray_airlight=True):
    """Random airlight and scattering coefficients for haze synthesis, in RESIDE's ranges.

    A ~ U(airlight_range) (the same value in R, G and B when ``gray_airlight``, as in RESIDE; else one per channel),
    beta ~ U(beta_range).

    Args:
      batch: number of images N.
      seed: an int, None, or a ``numpy.random.Generator`` (used as is, so successive calls continue its stream).
    Returns:
      (airlight (N, 1, 1, 3) float32, beta (N,) float32) as numpy arrays.
    """
    (a_lo, a_hi), (b_lo, b_hi) = airlight_range, beta_range
    if not (0.0 <= a_lo <= a_hi <= 1.0 and 0.0 <= b_lo <= b_hi):
        raise ValueError(f"bad ranges: airlight_range={airlight_range} (need 0 <= lo <= hi <= 1), "
                         f"beta_range={beta_range} (need 0 <= lo <= hi)")
    rng = np.random.default_rng(seed)
    channels = 1 if gray_airlight else 3
    airlight = rng.uniform(a_lo, a_hi, size=(batch, 1, 1, channels))
    airlight = np.broadcast_to(airlight, (batch, 1, 1, 3)).astype(np.float32)
    beta = rng.uniform(b_lo, b_hi, size=(batch,)).astype(np.float32)
    return airlight, beta


def dark_channel(image, patch=15):
    """He et al.'s dark channel: min over colour channels, then a patch x patch minimum filter.

    Border handling: the minimum is taken over the part of the window that lies inside the image (a max-pool of
    ``-x`` with "SAME" padding never picks a padded value). With an even ``patch`` the window extends one pixel more to
    the bottom/right than to the top/left (TensorFlow's SAME padding).

    Args:
      image: (N, H, W, C) float32.
      patch: window side in pixels (He et al.: 15).
    Returns:
      (N, H, W, 1) float32. Differentiable (the gradient flows to the arg-min pixel).
    """
    if int(patch) != patch or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch}")
    image = tf.convert_to_tensor(image, tf.float32)
    x = tf.reduce_min(image, axis=-1, keepdims=True)
    return -tf.nn.max_pool2d(-x, int(patch), 1, "SAME")


def atmospheric_light(image, method="brightest_luma", top_fraction=0.001, patch=15):
    """Global airlight A of each image of a batch (the authors' code takes one argmax over the whole batch; this is
    per image).

    Methods:
      - ``"brightest_luma"`` (paper eqs. 5-7): the pixel with the largest Y = 0.299 R + 0.587 G + 0.114 B.
      - ``"brightest_value"`` (the authors' code): the pixel with the largest HSV value V = max(R, G, B).
      - ``"dark_channel"`` (He et al.): among the ``top_fraction`` (0.1 %, at least one) pixels with the largest dark
        channel (``patch``), the one with the highest intensity R + G + B (i.e. the largest channel mean).
    Ties go to the first pixel in row-major order.

    The result is a constant in backprop (``tf.stop_gradient``).

    Args:
      image: (N, H, W, 3) float32 in [0, 1].
    Returns:
      A, (N, 1, 1, 3) float32: the RGB value of the chosen pixel of each image.
    """
    if method not in AIRLIGHT_METHODS:
        raise ValueError(f"unknown airlight method {method!r}; choose one of {AIRLIGHT_METHODS}")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    image = tf.convert_to_tensor(image, tf.float32)
    if image.shape.rank != 4 or image.shape[-1] != 3:
        raise ValueError(f"image must be (N, H, W, 3), got shape {image.shape}")
    n = tf.shape(image)[0]
    pixels = tf.reshape(image, [n, -1, 3])  # (N, HW, 3)
    if method == "brightest_luma":
        index = tf.argmax(tf.tensordot(pixels, tf.constant(LUMA_WEIGHTS), axes=1), axis=1)
    elif method == "brightest_value":
        index = tf.argmax(tf.reduce_max(pixels, axis=-1), axis=1)
    else:
        dark = tf.reshape(dark_channel(image, patch), [n, -1])
        k = tf.maximum(1, tf.cast(tf.cast(tf.shape(dark)[1], tf.float32) * top_fraction, tf.int32))
        candidates = tf.math.top_k(dark, k=k, sorted=False).indices  # (N, k)
        intensity = tf.reduce_sum(tf.gather(pixels, candidates, batch_dims=1), axis=-1)  # (N, k)
        index = tf.gather(candidates, tf.argmax(intensity, axis=1, output_type=tf.int32), batch_dims=1)
    airlight = tf.gather(pixels, index, batch_dims=1)  # (N, 3)
    return tf.stop_gradient(tf.reshape(airlight, [-1, 1, 1, 3]))


def _check_hazy(hazy, name="hazy"):
    """Eager validation for user-facing entry points: rank 4, 3 channels, finite, in [0, 1]."""
    try:
        hazy = tf.convert_to_tensor(hazy, tf.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a float image array, got {type(hazy).__name__}: {err}") from None
    if hazy.shape.rank != 4 or hazy.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N, H, W, 3), got {tuple(hazy.shape)}")
    if tf.executing_eagerly() and tf.size(hazy) > 0:
        bad = int(tf.reduce_sum(tf.cast(~tf.math.is_finite(hazy), tf.int32)))
        if bad:
            raise ValueError(f"{name} contains {bad} NaN/Inf value(s) of {int(tf.size(hazy))}")
        lo, hi = float(tf.reduce_min(hazy)), float(tf.reduce_max(hazy))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must be in [0, 1], got values in [{lo:g}, {hi:g}] (divide 8-bit images by 255)")
    return hazy


def dcp_dehaze(hazy, patch=15, omega=0.95, radius=60, eps=1e-3, t_min=0.1, airlight=None):
    """He et al.'s dark channel prior dehazing, the classical baseline (no weights).

    A = ``atmospheric_light(hazy, "dark_channel")`` unless given; t~ = 1 - omega * dark_channel(I / A);
    t = guided_filter(gray(I), t~, radius, eps) clipped to [0, 1]; J = clip(dehaze(I, t, A, t_min), 0, 1).

    Args:
      hazy: (N, H, W, 3) float32 in [0, 1]; any size (the guided filter handles radius > image). The shape is
        checked always; NaN/Inf and the [0, 1] range are checked when running eagerly (ValueError naming ``hazy``).
      patch: dark-channel window; omega: haze kept for depth perception (He: 0.95).
      radius, eps: guided filter (eps on the [0, 1] grayscale guide).
      t_min: transmission lower bound (He: 0.1).
      airlight: optional A, anything broadcastable to (N, 1, 1, 3) (a scalar, (3,), (N, 1, 1, 3)).
    Returns:
      dict(dehazed=(N, H, W, 3) in [0, 1], transmission=(N, H, W, 1) refined t (before the t_min clamp),
      airlight=(N, 1, 1, 3)).
    """
    hazy = _check_hazy(hazy)
    if not 0.0 < omega <= 1.0:
        raise ValueError(f"omega must be in (0, 1], got {omega}")
    if eps <= 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if airlight is None:
        airlight = atmospheric_light(hazy, "dark_channel", patch=patch)
    else:
        try:
            airlight = tf.broadcast_to(tf.convert_to_tensor(airlight, tf.float32), [tf.shape(hazy)[0], 1, 1, 3])
        except (ValueError, tf.errors.InvalidArgumentError):
            raise ValueError(f"airlight must broadcast to (N, 1, 1, 3), got shape {np.shape(airlight)}") from None
    safe_a = tf.maximum(airlight, 1e-6)
    raw = 1.0 - omega * dark_channel(hazy / safe_a, patch)
    guide = tf.image.rgb_to_grayscale(hazy)
    transmission = tf.clip_by_value(guided_filter(guide, raw, radius=radius, eps=eps), 0.0, 1.0)
    dehazed = tf.clip_by_value(dehaze(hazy, transmission, airlight, t_min=t_min), 0.0, 1.0)
    return {"dehazed": dehazed, "transmission": transmission, "airlight": airlight}
