"""The atmospheric scattering model, airlight estimators, the dark channel and the dark-channel-prior baseline.

Images are float32 NHWC RGB in [0, 1]; airlight ``A`` is ``(N, 1, 1, 3)``; transmission ``t`` is ``(N, H, W, 1)`` or
``(N, H, W, 3)``. Equation numbers refer to Jiao et al., "Guided-Pix2Pix: End-to-End Inference and Refinement
Network for Image Dehazing" (IEEE JSTARS 2021); the baseline is He, Sun and Tang, "Single Image Haze Removal Using
Dark Channel Prior" (CVPR 2009 / TPAMI 2011), whose transmission is refined by He, Sun and Tang, "Guided Image
Filtering" (ECCV 2010 / TPAMI 2013).

Everything is TensorFlow and differentiable except the airlight estimators, whose output is wrapped in
``tf.stop_gradient``: the airlight is a constant picked from the image (an argmax), not a learned quantity.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdehaze.check import check_image
from tfdehaze.layers.guided_filter import guided_filter

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # eq. (5)
AIRLIGHT_METHODS = ("brightest_luma", "brightest_value", "dark_channel")


def haze(clear: tf.Tensor | np.ndarray, transmission: tf.Tensor | np.ndarray | float,
         airlight: tf.Tensor | np.ndarray | float, dtype: tf.DType | str = tf.float32) -> tf.Tensor:
    """Eq. (3): I = J t + A (1 - t), the one haze synthesis of the package (`tfdehaze.data.sample` uses it too).

    Args:
      clear: J, (N, H, W, 3) (or (H, W, 3): the shapes only need to broadcast); tensors or numpy arrays.
      transmission: t, (N, H, W, 1) or (N, H, W, 3), in (0, 1].
      airlight: A, (N, 1, 1, 3) (anything that broadcasts).
      dtype: the dtype computed in and returned (float64 for numpy data that must not be rounded to float32).
    Returns:
      The hazy image I, (N, H, W, 3) tensor of ``dtype``.

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.physics import dehaze, haze
        >>> clear = np.full((1, 16, 16, 3), 0.2, np.float32)
        >>> hazy = haze(clear, 0.5, 1.0)  # t = 0.5, white airlight: halfway to A
        >>> hazy.shape, hazy[0, 0, 0].numpy()
        (TensorShape([1, 16, 16, 3]), array([0.6, 0.6, 0.6], dtype=float32))
        >>> bool(np.allclose(dehaze(hazy, 0.5, 1.0), clear))  # eq. (4) inverts eq. (3)
        True
    """
    dtype = tf.as_dtype(dtype)
    clear, t, a = (tf.cast(tf.convert_to_tensor(v), dtype) for v in (clear, transmission, airlight))
    return clear * t + a * (1.0 - t)


def dehaze(hazy: tf.Tensor | np.ndarray, transmission: tf.Tensor | np.ndarray | float,
           airlight: tf.Tensor | np.ndarray | float, t_min: float | tf.Tensor = 0.05) -> tf.Tensor:
    """Eq. (4) with a clamp: J = (I - A) / max(t, t_min) + A.

    The papers have no clamp; without one a near-zero t explodes. The output is *not* clipped: train on it,
    clip to [0, 1] only for images shown or saved. The gradient w.r.t. t is zero where t < t_min.

    Args:
      hazy: I, (N, H, W, 3).
      transmission: t, (N, H, W, 1) or (N, H, W, 3).
      airlight: A, (N, 1, 1, 3).
      t_min: lower bound applied to t, in (0, 1].
    Returns:
      J, (N, H, W, 3) float32, unclipped.

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.physics import dehaze, haze
        >>> rng = np.random.default_rng(0)
        >>> clear = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
        >>> t = rng.uniform(0.2, 1.0, size=(2, 16, 16, 1)).astype(np.float32)
        >>> airlight = np.full((2, 1, 1, 3), 0.9, np.float32)
        >>> restored = dehaze(haze(clear, t, airlight), t, airlight)
        >>> restored.shape, bool(np.allclose(restored, clear, atol=1e-5))
        (TensorShape([2, 16, 16, 3]), True)

        Below ``t_min`` the transmission is clamped, so a near-zero t cannot blow the image up:

        >>> dehaze(np.full((1, 1, 1, 3), 0.5), 1e-4, 0.9, t_min=0.05)[0, 0, 0].numpy()
        array([-7.1, -7.1, -7.1], dtype=float32)
    """
    if isinstance(t_min, (int, float)) and not 0.0 < t_min <= 1.0:
        raise ValueError(f"t_min must be in (0, 1], got {t_min}")
    hazy = tf.convert_to_tensor(hazy, tf.float32)
    t = tf.maximum(tf.convert_to_tensor(transmission, tf.float32), t_min)
    a = tf.convert_to_tensor(airlight, tf.float32)
    return (hazy - a) / t + a


def transmission_from_depth(depth: tf.Tensor | np.ndarray, beta: tf.Tensor | np.ndarray | float) -> tf.Tensor:
    """Eq. (2): t = exp(-beta d).

    Args:
      depth: d, (N, H, W, 1) (any units consistent with beta; RESIDE uses depth normalised to [0, 1] or metres).
      beta: scattering coefficient, a scalar or one per image, shape (N,).
    Returns:
      t, same shape as depth, float32.

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.physics import transmission_from_depth
        >>> depth = np.array([0.0, 1.0, 2.0], np.float32).reshape(1, 1, 3, 1)
        >>> np.round(transmission_from_depth(depth, beta=1.0).numpy().ravel(), 3)
        array([1.   , 0.368, 0.135], dtype=float32)
        >>> transmission_from_depth(np.ones((2, 4, 4, 1)), beta=[0.5, 2.0]).shape  # one beta per image
        TensorShape([2, 4, 4, 1])
    """
    depth = tf.convert_to_tensor(depth, tf.float32)
    beta = tf.convert_to_tensor(beta, tf.float32)
    if beta.shape.rank == 1:
        beta = tf.reshape(beta, [-1, 1, 1, 1])
    return tf.exp(-beta * depth)


def sample_haze_parameters(batch: int, seed: int | np.random.Generator | None = None,
                           airlight_range: tuple[float, float] = (0.7, 1.0),
                           beta_range: tuple[float, float] = (0.6, 1.8),
                           gray_airlight: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random airlight and scattering coefficients for haze synthesis, in RESIDE's ranges.

    A ~ U(airlight_range) (the same value in R, G and B when ``gray_airlight``, as in RESIDE; else one per channel),
    beta ~ U(beta_range).

    Args:
      batch: number of images N.
      seed: an int, None, or a ``numpy.random.Generator`` (used as is, so successive calls continue its stream).
      airlight_range, beta_range: (low, high) of the uniform distributions (RESIDE: A in [0.7, 1], beta in
        [0.6, 1.8]).
      gray_airlight: one value for R, G and B (True) or one per channel.
    Returns:
      (airlight (N, 1, 1, 3) float32, beta (N,) float32) as numpy arrays.

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.physics import sample_haze_parameters
        >>> airlight, beta = sample_haze_parameters(4, seed=0)
        >>> airlight.shape, airlight.dtype, beta.shape
        ((4, 1, 1, 3), dtype('float32'), (4,))
        >>> bool(np.all((0.7 <= airlight) & (airlight <= 1.0))), bool(np.all((0.6 <= beta) & (beta <= 1.8)))
        (True, True)
        >>> bool(np.all(airlight == airlight[..., :1]))  # gray airlight: R = G = B
        True
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


def dark_channel(image: tf.Tensor | np.ndarray, patch: int = 15) -> tf.Tensor:
    """He et al.'s dark channel: min over colour channels, then a patch x patch minimum filter.

    Border handling: the minimum is taken over the part of the window that lies inside the image (a max-pool of
    ``-x`` with "SAME" padding never picks a padded value). With an even ``patch`` the window extends one pixel more to
    the bottom/right than to the top/left (TensorFlow's SAME padding).

    Args:
      image: (N, H, W, C) float32.
      patch: window side in pixels (He et al.: 15).
    Returns:
      (N, H, W, 1) float32. Differentiable (the gradient flows to the arg-min pixel).

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.physics import dark_channel
        >>> image = np.full((1, 8, 8, 3), 0.5, np.float32)
        >>> image[0, 4, 4, 2] = 0.0  # one dark pixel in the blue channel
        >>> dark = dark_channel(image, patch=3)
        >>> dark.shape, float(dark[0, 0, 0, 0])
        (TensorShape([1, 8, 8, 1]), 0.5)
        >>> dark[0, 2:7, 2:7, 0].numpy()  # the dark pixel spreads over its 3 x 3 neighbourhood
        array([[0.5, 0.5, 0.5, 0.5, 0.5],
               [0.5, 0. , 0. , 0. , 0.5],
               [0.5, 0. , 0. , 0. , 0.5],
               [0.5, 0. , 0. , 0. , 0.5],
               [0.5, 0.5, 0.5, 0.5, 0.5]], dtype=float32)
    """
    if int(patch) != patch or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch}")
    image = tf.convert_to_tensor(image, tf.float32)
    x = tf.reduce_min(image, axis=-1, keepdims=True)
    return -tf.nn.max_pool2d(-x, int(patch), 1, "SAME")


def atmospheric_light(image: tf.Tensor | np.ndarray, method: str = "brightest_luma", top_fraction: float = 0.001,
                      patch: int = 15) -> tf.Tensor:
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
      method: one of `AIRLIGHT_METHODS` (above).
      top_fraction, patch: the share of pixels kept and the dark-channel window of ``"dark_channel"``.
    Returns:
      A, (N, 1, 1, 3) float32: the RGB value of the chosen pixel of each image.

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.physics import atmospheric_light
        >>> image = np.full((1, 8, 8, 3), 0.2, np.float32)
        >>> image[0, 2, 3] = [0.9, 0.8, 0.7]  # the brightest pixel (luma 0.82)
        >>> image[0, 5, 5] = [0.1, 0.1, 1.0]  # the largest single value, but dark (luma 0.20)
        >>> a = atmospheric_light(image)
        >>> a.shape, a[0, 0, 0].numpy()
        (TensorShape([1, 1, 1, 3]), array([0.9, 0.8, 0.7], dtype=float32))
        >>> atmospheric_light(image, "brightest_value")[0, 0, 0].numpy()
        array([0.1, 0.1, 1. ], dtype=float32)
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
        index = tf.argmax(tf.tensordot(pixels, tf.constant(_LUMA_WEIGHTS), axes=1), axis=1)
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


def dcp_dehaze(hazy: tf.Tensor | np.ndarray, patch: int = 15, omega: float = 0.95, radius: int = 60,
               eps: float = 1e-3, t_min: float = 0.1,
               airlight: tf.Tensor | np.ndarray | float | None = None) -> dict[str, tf.Tensor]:
    """He et al.'s dark channel prior dehazing, the classical baseline (no weights).

    From "Single Image Haze Removal Using Dark Channel Prior", with the soft matting replaced by the guided filter
    of "Guided Image Filtering", as that paper proposes:
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

    Examples:
        A clear image whose red channel is 0 everywhere (a dark channel of 0, the prior), hazed with t = 0.6
        and A = 0.9: the estimate is t~ = 1 - 0.95 (1 - 0.6) = 0.62 and J comes back to within 0.03.

        >>> import numpy as np
        >>> from tfdehaze.physics import dcp_dehaze, haze
        >>> clear = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype(np.float32)
        >>> clear[..., 0] = 0.0
        >>> out = dcp_dehaze(haze(clear, 0.6, 0.9), patch=3, radius=4, airlight=0.9)
        >>> {name: tuple(value.shape) for name, value in sorted(out.items())}
        {'airlight': (1, 1, 1, 3), 'dehazed': (1, 16, 16, 3), 'transmission': (1, 16, 16, 1)}
        >>> round(float(np.mean(out["transmission"])), 2), bool(np.abs(out["dehazed"] - clear).max() < 0.03)
        (0.62, True)
    """
    hazy = check_image(hazy, "hazy", channels=3, finite=True, value_range=(0.0, 1.0))
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
