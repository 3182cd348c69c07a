"""Differentiable guided filter, as a function (`guided_filter`) and a Keras layer (`GuidedFilter`).

The filter is He, Sun and Tang's "Guided Image Filtering" (ECCV 2010 / TPAMI 2013); the algorithms, equation numbers
and gradients are those of §III-C/D of Jiao et al., "Guided-Pix2Pix: End-to-End Inference and Refinement Network
for Image Dehazing" (IEEE JSTARS 2021). `box_filter` is the count-normalised mean filter both are built on.
Shapes: guide (N, H, W, 1) or (N, H, W, 3), x (N, H, W, C) -> (N, H, W, C).

Forward = Algorithm 1 (eqs. 11-18): with ``f`` the mean over the part of the (2r+1)² window inside the image,

    var = f(I·I) − f(I)²,  a = (f(I·x) − f(I)·f(x)) / (var + eps),  b = f(x) − a·f(I),  y = f(a)·I + f(b).

Backward = Algorithm 2 made exact (``tf.custom_gradient``), following eq. (38) rather than the printed line 6 of
Algorithm 2, and using the true adjoint of the count-normalised mean filter, fᵀ(g) = B(g / N) with ``B`` the
un-normalised box sum and ``N`` the per-pixel window count (Proposition 1 holds only in the interior). The guide gets
its exact gradient too. The guided filter is invariant to adding a constant to the guide and equivariant to adding a
constant to ``x``, so both are shifted by a level near their per-image mean before the statistics (accuracy in
float32; the gradients are unchanged). float32 against float64: ≤ 3e-5 at 2048², ≤ 1.5e-5 at 1024² (r ≥ 2).

Box sums cost O(1) per pixel whatever the radius: each axis is a blocked prefix sum (a 16×16 triangular matmul
inside tiles plus a matmul over the tile totals) followed by a difference of two shifted prefix sums; every map is
first centred by a level near its mean, so float32 prefix sums stay small. The elementwise work between the matmuls
runs in XLA-compiled functions (``jit_compile=True``), which fuse it into a few memory passes; the matmuls stay in
TensorFlow's own kernels, which are faster than XLA's for these shapes on CPU.
"""
from __future__ import annotations

import operator

import keras
import tensorflow as tf

from tfdehaze.check import check_image, check_same_shape

_TILE = 16


def _stage(fn):
    """fn as a tf.function, XLA-compiled when called with jit=True (fuses its elementwise work into a few passes)."""
    xla, plain = tf.function(fn, jit_compile=True, reduce_retracing=True), tf.function(fn, reduce_retracing=True)

    @tf.autograph.experimental.do_not_convert
    def run(*args, jit=True):
        return (xla if jit else plain)(*args)

    return run


# ---------------------------------------------------------------------------------------------------- box sums
def _triu(n, dtype, strict=False):
    """(n, n) ones on and above (strictly above) the diagonal: ``u @ m`` is an inclusive (exclusive) prefix sum."""
    m = tf.linalg.band_part(tf.ones([n, n], dtype), 0, -1)
    return m - tf.eye(n, dtype=dtype) if strict else m


def _radius(r, n):
    """A radius beyond n - 1 covers the whole axis: clamp it so the shifted slices stay in range."""
    return tf.minimum(r, n - 1)


def _count(n, r, dtype):
    """Number of window pixels inside [0, n) along one axis, per position."""
    i = tf.range(n)
    return tf.cast(tf.minimum(i + r, n - 1) - tf.maximum(i - r, 0) + 1, dtype)


def _window_count(h, w, r, dtype):
    """N: (h, w) count of window pixels inside the image."""
    return _count(h, r, dtype)[:, None] * _count(w, r, dtype)[None, :]


def _level(u):
    """A constant near the mean of each (H, W) plane of u (..., H, W): the mean of a 1-in-8 subsample.

    Centring only serves accuracy (f(u) = B(u - m)/N + m and the guided filter's invariances hold for any m), and a
    full mean is a slow reduction in XLA on CPU, so a subsample does.
    """
    return tf.reduce_mean(u[..., ::8, ::8], axis=[-2, -1], keepdims=True)


def _begin(u, scale=None):
    """Centre each plane of u (B, H, W) near its mean and zero-pad W to a whole number of tiles.

    Returns the padded planes and the levels subtracted (B, 1, 1). ``scale`` multiplies u first (1/N for fᵀ).
    """
    if scale is not None:
        u = u * scale
    mean = _level(u)
    return tf.pad(u - mean, [[0, 0], [0, 0], [0, (-tf.shape(u)[2]) % _TILE]]), mean


def _window_sums(s, r, n, axis):
    """Box sums s[min(i+r, n-1)] - s[i-r-1] from inclusive prefix sums s (B, H, W) of length n along axis 1 or 2.

    Shifted slices, zero padding and a select (XLA on CPU is slow at concatenating along the minor axis).
    """
    r = _radius(r, n)

    def take(start, stop):
        return s[:, start:stop] if axis == 1 else s[:, :, start:stop]

    def pad(t, before, after):
        return tf.pad(t, [[0, 0]] + [[before, after] if a == axis else [0, 0] for a in (1, 2)])

    last = tf.range(n) >= n - r
    hi = tf.where(last[:, None] if axis == 1 else last, take(n - 1, n), pad(take(r, n), 0, r))
    return hi - pad(take(0, n - r - 1), r + 1, 0)


@_stage
def _finish_w(c, off, r, w):
    """Box sums along W from the W tile prefixes; pads H to whole tiles for the H scan."""
    b, h = tf.shape(c)[0], tf.shape(c)[1]
    s = tf.reshape(tf.reshape(c, [b, h, -1, _TILE]) + off[..., None], [b, h, -1])[:, :, :w]
    return tf.pad(_window_sums(s, r, w, 2), [[0, 0], [0, (-h) % _TILE], [0, 0]])


def _scans(u, r, w, jit):
    """W-axis blocked scan of the padded planes, W box sums (width w), H-axis blocked scan (prefixes, offsets)."""
    b, h, wp = tf.unstack(tf.shape(u))
    c = tf.matmul(tf.reshape(u, [-1, _TILE]), _triu(_TILE, u.dtype))
    c = tf.reshape(c, [b * h, wp // _TILE, _TILE])
    off = tf.matmul(c[:, :, -1], _triu(wp // _TILE, u.dtype, strict=True))
    v = _finish_w(tf.reshape(c, [b, h, wp]), tf.reshape(off, [b, h, -1]), r, w, jit=jit)
    hp = tf.shape(v)[1]
    c = tf.matmul(_triu(_TILE, u.dtype), tf.reshape(v, [b, hp // _TILE, _TILE, w]), transpose_a=True)
    off = tf.matmul(_triu(hp // _TILE, u.dtype, strict=True), c[:, :, -1, :], transpose_a=True)
    return c, off


def _end(c, off, r, h):
    """Box sums along H from the H tile prefixes (B, H/T, T, W) and tile offsets (B, H/T, W): the 2-D box sums."""
    s = tf.reshape(c + off[:, :, None, :], [tf.shape(c)[0], -1, tf.shape(c)[3]])[:, :h]
    return _window_sums(s, r, h, 1)


def _planes(x):
    """(N, H, W, C) -> (N, C, H, W)."""
    return tf.transpose(x, [0, 3, 1, 2]) if x.shape[-1] != 1 else tf.expand_dims(x[..., 0], 1)


def _nhwc(x):
    """(N, C, H, W) -> (N, H, W, C)."""
    return tf.transpose(x, [0, 2, 3, 1]) if x.shape[1] != 1 else tf.expand_dims(x[:, 0], -1)


def _flat(u):
    """(N, K, H, W) -> (N*K, H, W)."""
    return tf.reshape(u, tf.concat([[-1], tf.shape(u)[2:]], 0))


def _unflat(u, n):
    """(N*K, H, W) -> (N, K, H, W)."""
    return tf.reshape(u, tf.concat([[n, -1], tf.shape(u)[1:]], 0))


_box_begin = _stage(_begin)


@_stage
def _box_end(c, off, mean, r, h):
    return _end(c, off, r, h) / _window_count(h, tf.shape(c)[3], r, c.dtype) + mean


def box_filter(x: tf.Tensor, radius: int, jit_compile: bool = True) -> tf.Tensor:
    """Mean over the part of the (2r+1)² window inside the image (He et al.'s count-normalised box filter).

    Args:
        x: (N, H, W, C) tensor (float32 or float64 computed as such; other types in float32).
        radius: int r >= 0; any value, including r larger than the image (then every pixel gets the image mean).
        jit_compile: run the elementwise stages with XLA (faster; compiles once per image size and radius).

    Returns:
        (N, H, W, C) in x's float dtype (float32 for integer x). Cost is independent of r (see the module docstring).

    Examples:
        Near the border the mean is over fewer pixels, so a ramp stays a ramp:

        >>> import tensorflow as tf
        >>> from tfdehaze.layers.guided_filter import box_filter
        >>> ramp = tf.reshape(tf.range(5.0), [1, 1, 5, 1])
        >>> box_filter(ramp, radius=1)[0, 0, :, 0].numpy()
        array([0.5, 1. , 2. , 3. , 3.5], dtype=float32)
        >>> box_filter(tf.ones([2, 16, 16, 1]), radius=40).shape  # any radius, even beyond the image
        TensorShape([2, 16, 16, 1])
    """
    x = check_image(x, "x", dtype=None)
    radius = _check_radius(radius)
    if x.dtype not in (tf.float32, tf.float64):
        y = box_filter(tf.cast(x, tf.float32), radius, jit_compile)
        return tf.cast(y, x.dtype) if x.dtype.is_floating else y
    p = _planes(x)
    u, mean = _box_begin(_flat(p), jit=jit_compile)
    c, off = _scans(u, radius, tf.shape(x)[2], jit_compile)
    y = _box_end(c, off, mean, radius, tf.shape(x)[1], jit=jit_compile)
    return _nhwc(_unflat(y, tf.shape(x)[0]))


# ---------------------------------------------------------------------------------------------- guided filter
def _split(st, k):
    """(N, 2 + 2k, H, W) stacked maps -> the four pieces of 1, 1, k and k planes."""
    return st[:, :1], st[:, 1:2], st[:, 2:2 + k], st[:, 2 + k:]


@_stage
def _fwd_stats_begin(guide, x):
    """Centred guide and x, and the maps [I, I·I, x, I·x] of Algorithm 1 lines 1-4, ready for the box sums."""
    guide = guide - _level(guide)
    x_mean = _level(x)
    x = x - x_mean
    u, mean = _begin(_flat(tf.concat([guide, guide * guide, x, guide * x], axis=1)))
    return guide, x, x_mean, u, mean


@_stage
def _fwd_coeffs(c, off, mean, guide, x, r, eps):
    """Algorithm 1 lines 1-8 (eqs. 11-15), then the maps [a, b] ready for the box sums."""
    n, h, w = tf.shape(x)[0], tf.shape(x)[2], tf.shape(x)[3]
    st = _unflat(_end(c, off, r, h) / _window_count(h, w, r, x.dtype) + mean, n)
    mean_i, corr_i, mean_x, corr_ix = _split(st, tf.shape(x)[1])
    var_raw = corr_i - mean_i * mean_i
    inv = 1.0 / (tf.maximum(var_raw, 0.0) + eps)  # clamp: round-off can make a flat window's variance negative
    a = (corr_ix - mean_i * mean_x) * inv
    b = mean_x - a * mean_i
    u, mean_ab = _begin(_flat(tf.concat([a, b], axis=1)))
    return mean_i, mean_x, a, var_raw, u, mean_ab


@_stage
def _fwd_output(c, off, mean, guide, x_mean, r):
    """Algorithm 1 lines 9-11 (eqs. 16-18): y = f(a)·I + f(b) (plus x's mean, taken out before)."""
    n, h, w = tf.shape(guide)[0], tf.shape(guide)[2], tf.shape(guide)[3]
    ab = _unflat(_end(c, off, r, h) / _window_count(h, w, r, guide.dtype) + mean, n)
    k = tf.shape(ab)[1] // 2
    mean_a, mean_b = ab[:, :k], ab[:, k:]
    return mean_a * guide + mean_b + x_mean, mean_a


@_stage
def _bwd_begin(dy, guide, mean_a, r):
    """Adjoint of lines 9-11: fᵀ(g) = B(g/N) of d f(a) = dy·I and d f(b) = dy; the guide's direct term Σ dy·f(a)."""
    h, w = tf.shape(dy)[2], tf.shape(dy)[3]
    u, mean = _begin(_flat(tf.concat([dy * guide, dy], axis=1)), 1.0 / _window_count(h, w, r, dy.dtype))
    return tf.reduce_sum(dy * mean_a, axis=1, keepdims=True), u, mean


@_stage
def _bwd_coeffs(c, off, mean, mean_i, mean_x, a, var_raw, r, eps):
    """Adjoint of lines 1-8 (eqs. 34-38 and the guide's terms): gradients of the four box-filtered maps, then fᵀ."""
    n, k, h, w = tf.unstack(tf.shape(a))
    count = _window_count(h, w, r, a.dtype)
    g = _unflat(_end(c, off, r, h) + mean * count, n)  # fᵀ = B(g/N); B(centred) + mean·N
    da, db = g[:, :k], g[:, k:]  # eqs. (36), (34) before the b-term
    d_mean_x = db
    da = da - db * mean_i  # eq. (36)
    d_mean_i = -tf.reduce_sum(db * a, axis=1, keepdims=True)
    d_cov = da / (tf.maximum(var_raw, 0.0) + eps)
    d_var = -tf.reduce_sum(d_cov * a, axis=1, keepdims=True) * tf.cast(var_raw >= 0.0, a.dtype)  # as tf.maximum
    d_mean_i -= tf.reduce_sum(d_cov * mean_x, axis=1, keepdims=True) + 2.0 * mean_i * d_var
    d_mean_x -= d_cov * mean_i  # eq. (38): dx = fᵀ(da/(var+eps))·I + fᵀ(db − da/(var+eps)·f(I))
    u, mean = _begin(_flat(tf.concat([d_mean_i, d_var, d_mean_x, d_cov], axis=1)), 1.0 / count)
    return u, mean


@_stage
def _bwd_end(c, off, mean, guide, x, d_guide, r):
    """fᵀ of the four maps' gradients, then through I·I and I·x to the guide and x (eq. 38 for x)."""
    n, k, h, w = tf.unstack(tf.shape(x))
    g = _unflat(_end(c, off, r, h) + mean * _window_count(h, w, r, x.dtype), n)
    g_mean_i, g_corr_i, g_mean_x, g_corr_ix = _split(g, k)
    dx = g_mean_x + guide * g_corr_ix
    d_guide += g_mean_i + 2.0 * guide * g_corr_i + tf.reduce_sum(x * g_corr_ix, axis=1, keepdims=True)
    return d_guide, dx


def _forward(guide, x, radius, eps, jit):
    """Algorithm 1 on planes: guide (N, 1, H, W), x (N, C, H, W) -> y (N, C, H, W) and what the backward reuses."""
    w = tf.shape(x)[3]
    guide, x, x_mean, u, mean = _fwd_stats_begin(guide, x, jit=jit)
    c, off = _scans(u, radius, w, jit)
    mean_i, mean_x, a, var_raw, u, mean = _fwd_coeffs(c, off, mean, guide, x, radius, eps, jit=jit)
    c, off = _scans(u, radius, w, jit)
    y, mean_a = _fwd_output(c, off, mean, guide, x_mean, radius, jit=jit)
    return y, (guide, x, mean_i, mean_x, a, var_raw, mean_a)


def _backward(dy, saved, radius, eps, jit):
    """Algorithm 2 made exact (eq. 38 with fᵀ(g) = B(g/N)), plus the guide's gradient; reuses the forward's maps."""
    guide, x, mean_i, mean_x, a, var_raw, mean_a = saved
    w = tf.shape(x)[3]
    d_guide, u, mean = _bwd_begin(dy, guide, mean_a, radius, jit=jit)
    c, off = _scans(u, radius, w, jit)
    u, mean = _bwd_coeffs(c, off, mean, mean_i, mean_x, a, var_raw, radius, eps, jit=jit)
    c, off = _scans(u, radius, w, jit)
    return _bwd_end(c, off, mean, guide, x, d_guide, radius, jit=jit)


def _guided_planes(guide, x, radius, eps, jit):
    """Guided filter on planes with the exact custom gradient for the guide and x."""

    @tf.custom_gradient
    def gf(guide, x):
        y, saved = _forward(guide, x, radius, eps, jit)
        return y, lambda dy: _backward(dy, saved, radius, eps, jit)

    return gf(guide, x)


# ------------------------------------------------------------------------------------------------- validation
def _check_radius(radius):
    try:
        r = operator.index(radius)
    except TypeError:
        r = -1
    if isinstance(radius, bool) or r < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    return r


def _check_eps(eps):
    try:
        value = float(eps)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0.0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    return value


def guided_filter(guide: tf.Tensor, x: tf.Tensor, radius: int = 60, eps: float = 1e-4, jit_compile: bool = True,
                  custom_gradient: bool = True) -> tf.Tensor:
    """Guided filter of x with the given guide (Algorithm 1), differentiable in both with the exact gradient.

    The output is locally linear in the guide, y = f(a)·I + f(b) (eqs. 9 and 16-18): it smooths x where the guide is
    flat and keeps the guide's edges; eqs. (34)-(38) give the backward pass. The layer form is `GuidedFilter`.

    Args:
        guide: (N, H, W, 1) or (N, H, W, 3) guide image in [0, 1]; RGB is converted by ``tf.image.rgb_to_grayscale``.
        x: (N, H, W, C) image to filter; every channel is filtered with the same guide.
        radius: window radius r >= 0 (window (2r+1)², clipped to the image); any r, cost independent of r.
        eps: regularisation ε > 0 of eq. (10) for a guide in [0, 1]. (The authors' eps=1e-4 was for a guide in
            [-1, 1], which equals 2.5e-5 on [0, 1]; the paper's 1e-8 is safe: variances are clamped at 0.)
        jit_compile: run the elementwise stages with XLA: about 1.6x faster on CPU, but each new image size or
            radius costs an XLA compilation (~1-2 s forward + backward on 2 CPU cores). Turn off when image sizes vary.
        custom_gradient: backward by Algorithm 2 (exact, default); False lets TensorFlow differentiate the same
            forward (slower, more memory: for comparisons and benchmarks).

    Returns:
        (N, H, W, C) filtered x in x's float dtype (float16/bfloat16 are computed in float32; integers give float32).

    Examples:
        >>> import numpy as np
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.guided_filter import box_filter, guided_filter
        >>> guide = tf.random.uniform([2, 16, 16, 3])  # RGB: filtered as its grayscale
        >>> x = tf.fill([2, 16, 16, 1], 0.5)
        >>> y = guided_filter(guide, x, radius=2, eps=1e-2)
        >>> y.shape, bool(np.allclose(y, 0.5))  # a constant image stays constant
        (TensorShape([2, 16, 16, 1]), True)

        Filtered by itself, a step edge stays sharp where a box filter of the same radius blurs it:

        >>> step = tf.tile(tf.reshape([0.0] * 8 + [1.0] * 8, [1, 1, 16, 1]), [2, 16, 1, 1])
        >>> np.round(guided_filter(step, step, radius=2, eps=1e-2)[0, 0, 4:12, 0].numpy(), 2)
        array([0.  , 0.01, 0.01, 0.02, 0.98, 0.99, 0.99, 1.  ], dtype=float32)
        >>> np.round(box_filter(step, radius=2)[0, 0, 4:12, 0].numpy(), 2)
        array([0. , 0. , 0.2, 0.4, 0.6, 0.8, 1. , 1. ], dtype=float32)
    """
    guide = check_image(guide, "guide", channels=(1, 3), dtype=None, known_channels=True)
    x = check_image(x, "x", dtype=None, known_channels=True)
    check_same_shape(guide, x, ("guide", "x"), axes=(0, 1, 2))
    radius, eps = _check_radius(radius), _check_eps(eps)
    dtype = x.dtype if x.dtype.is_floating else tf.float32
    work = dtype if dtype in (tf.float32, tf.float64) else tf.float32
    guide, x = tf.cast(guide, work), tf.cast(x, work)
    if guide.shape[-1] == 3:
        guide = tf.image.rgb_to_grayscale(guide)
    guide, x = _planes(guide), _planes(x)
    if custom_gradient:
        y = _guided_planes(guide, x, radius, eps, bool(jit_compile))
    else:
        y = _forward(guide, x, radius, eps, bool(jit_compile))[0]
    return tf.cast(_nhwc(y), dtype)


@keras.saving.register_keras_serializable(package="tfdehaze")
class GuidedFilter(keras.layers.Layer):
    """Differentiable guided filter layer (Guided-Pix2Pix §III-C/D, Algorithms 1-2, eqs. 8-38).

    Called as ``layer(guide, x)``: guide (N, H, W, 1) or (N, H, W, 3) in [0, 1] (RGB -> gray), x (N, H, W, C);
    returns (N, H, W, C). Gradients flow to both x and the guide (exact, ``tf.custom_gradient``). The function form
    is `guided_filter`.

    Args:
        radius: window radius r (default 60, the paper's recommendation for 512×512).
        eps: regularisation for a guide in [0, 1] (default 1e-4; the authors' 1e-4 referred to a [-1, 1] guide).
        jit_compile: XLA for the elementwise stages (see ``guided_filter``).
        custom_gradient: Algorithm 2 backward (default) or TensorFlow's autodiff of the same forward.

    Shapes: guide (N, H, W, 1) or (N, H, W, 3), x (N, H, W, C) -> (N, H, W, C). No weights.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.guided_filter import GuidedFilter
        >>> layer = GuidedFilter(radius=2, eps=1e-2)
        >>> guide, x = tf.random.uniform([2, 16, 16, 3]), tf.random.uniform([2, 16, 16, 1])
        >>> layer(guide, x).shape
        TensorShape([2, 16, 16, 1])
        >>> GuidedFilter.from_config(layer.get_config()).radius
        2
    """

    def __init__(self, radius: int = 60, eps: float = 1e-4, jit_compile: bool = True, custom_gradient: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.radius = _check_radius(radius)
        self.eps = _check_eps(eps)
        self.jit_compile = bool(jit_compile)
        self.custom_gradient = bool(custom_gradient)

    def call(self, guide: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return guided_filter(guide, x, self.radius, self.eps, self.jit_compile, self.custom_gradient)

    def compute_output_shape(self, guide_shape, x_shape):
        return tuple(x_shape)

    def get_config(self):
        return {**super().get_config(), "radius": self.radius, "eps": self.eps, "jit_compile": self.jit_compile,
                "custom_gradient": self.custom_gradient}
