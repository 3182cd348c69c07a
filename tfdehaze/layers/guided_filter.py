"""Differentiable guided filter, as a function (`guided_filter`) and a Keras layer (`GuidedFilter`).

The filter is He, Sun and Tang's "Guided Image Filtering" (ECCV 2010 / TPAMI 2013); the algorithms, equation numbers
and gradients are those of §III-C/D of Jiao et al., "Guided-Pix2Pix: End-to-End Inference and Refinement Network
for Image Dehazing" (IEEE JSTARS 2021). `box_filter` is the count-normalised mean filter both are built on.
Shapes: guide (N, H, W, 1) or (N, H, W, 3), x (N, H, W, C) -> (N, H, W, C).

Forward = Algorithm 1 (eqs. 11-18): with ``f`` the mean over the part of the (2r+1)² window inside the image,

    var = f(I·I) − f(I)²,  a = (f(I·x) − f(I)·f(x)) / (var + eps),  b = f(x) − a·f(I),  y = f(a)·I + f(b).

A window where the guide is flat has var = 0 and a = 0 exactly; in floating point var comes out as a tiny positive
or negative round-off, and cov / (var + eps) with a tiny eps is then noise divided by eps. So a window whose var is
not positive gets its exact a = 0 (and b = f(x)). (The former clamp, a = cov / (max(var, 0) + eps), gave errors of
1e4 in a flat region at eps = 1e-20 in float32.)

Backward = Algorithm 2 made exact (``tf.custom_gradient``), following eq. (38) rather than the printed line 6 of
Algorithm 2, and using the true adjoint of the count-normalised mean filter, fᵀ(g) = B(g / N) with ``B`` the
un-normalised box sum and ``N`` the per-pixel window count (Proposition 1 holds only in the interior). The guide gets
its exact gradient too. The guided filter is invariant to adding a constant to the guide and equivariant to adding a
constant to ``x``, so both are shifted by a level near their per-image mean before the statistics (accuracy in
float32; the gradients are unchanged). float32 against float64 on smooth 2048² images: 3.5e-6 at r = 8, 6e-7 at
r = 60.

Box sums cost O(1) per pixel whatever the radius: along W a blocked prefix sum (a 16×16 triangular matmul inside
tiles plus a matmul over the tile totals) and the difference of two shifted prefix sums; along H the same with a
cumulative sum inside tiles of 16 rows, on rows zero-padded by r + 1 above and r below. The maps [I, I·I] and
[x, I·x] are box-filtered as two stacks, then [a, b] as one; each stack is centred by a level estimated from a few
pixels, so its float32 prefix sums stay small. The whole forward is one XLA-compiled function (``jit_compile=True``),
as is the backward: XLA fuses the elementwise work of Algorithms 1 and 2 into the passes of the box sums. The
forward keeps for the backward only the window sums it computes anyway (the prefix sums along H), and only those the
inputs a gradient tape records need: none in inference, the first two stacks' for x, all three for the guide too.

On CPU in float32 (the layer's dtype) `guided_filter` runs a C++ kernel instead (`tfdehaze.layers.native`: a custom
TensorFlow op, compiled once on first use, about 15 s): the same forward and exact custom gradient with running box
sums, double accumulation and the stages fused row by row; 3-5x faster than the XLA path and without its
compilations per image size. It falls back to the path above on GPU, for float64, when it cannot be compiled, under
``TFDEHAZE_NATIVE=0`` and inside `portable` (a graph for TF Serving must not contain the custom op: `export_model`
traces under it).
"""
from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Iterator

import keras
import tensorflow as tf

from tfdehaze.check import check_image, check_same_shape
from tfdehaze.layers import native

_TILE = 16


def _stage(fn):
    """fn as a tf.function, XLA-compiled when called with jit=True; ``jit`` is also passed on to fn (static)."""
    def compiled(*args):
        return fn(*args, jit=True)

    def traced(*args):
        return fn(*args, jit=False)

    xla = tf.function(compiled, jit_compile=True, reduce_retracing=True, autograph=False)
    plain = tf.function(traced, reduce_retracing=True, autograph=False)

    @tf.autograph.experimental.do_not_convert
    def run(*args, jit=True):
        return (xla if jit else plain)(*args)

    return run


# ---------------------------------------------------------------------------------------------------- box sums
def _triu(n, dtype, strict=False):
    """(n, n) ones on and above (strictly above) the diagonal: ``u @ m`` is an inclusive (exclusive) prefix sum."""
    m = tf.linalg.band_part(tf.ones([n, n], dtype), 0, -1)
    return m - tf.eye(n, dtype=dtype) if strict else m


def _count(n, r, dtype):
    """Number of window pixels inside [0, n) along one axis, per position (r already at most n - 1)."""
    i = tf.range(n)
    return tf.cast(tf.minimum(i + r, n - 1) - tf.maximum(i - r, 0) + 1, dtype)


def _window_count(h, w, r, dtype):
    """N: (h, w) count of window pixels inside the image."""
    return _count(h, tf.minimum(r, h - 1), dtype)[:, None] * _count(w, tf.minimum(r, w - 1), dtype)[None, :]


def _window_sums(s, r, n, axis):
    """Box sums s[min(i+r, n-1)] - s[i-r-1] from inclusive prefix sums s (B, H, W) of length n along axis 1 or 2.

    Shifted slices, zero padding and a select: XLA on CPU fuses these into one vectorised pass (a concatenation
    along the minor axis would not be).
    """
    r = tf.minimum(r, n - 1)

    def take(start, stop):
        return s[:, start:stop] if axis == 1 else s[:, :, start:stop]

    def pad(t, before, after):
        return tf.pad(t, [[0, 0]] + [[before, after] if a == axis else [0, 0] for a in (1, 2)])

    last = tf.range(n) >= n - r
    hi = tf.where(last[:, None] if axis == 1 else last, take(n - 1, n), pad(take(r, n), 0, r))
    return hi - pad(take(0, n - r - 1), r + 1, 0)


def _column_sums(u, r, jit):
    """The window sums of u (B, H, W) before their last difference: prefix sums along H of the sums along W.

    Along W: a blocked prefix sum (a 16×16 triangular matmul inside tiles plus a matmul over the tile totals) and a
    difference of two shifted prefix sums. Along H the same on those row sums, zero-padded by r + 1 rows above and
    r below, as tiles of 16 rows: returns c (B, Hp/16, 16, W), the in-tile prefix sums (a cumulative sum under XLA,
    whose batched matmul is slow on CPU; a matmul otherwise, as TensorFlow's cumsum is slow), and off (B, Hp/16, W),
    the sums of the tiles above. `_window_rows` takes the difference.
    """
    b, h, w = tf.shape(u)[0], tf.shape(u)[1], tf.shape(u)[2]
    u = tf.pad(u, [[0, 0], [0, 0], [0, (-w) % _TILE]])
    wp = tf.shape(u)[2]
    c = tf.reshape(tf.matmul(tf.reshape(u, [-1, _TILE]), _triu(_TILE, u.dtype)), [b * h, wp // _TILE, _TILE])
    off = tf.matmul(c[:, :, -1], _triu(wp // _TILE, u.dtype, strict=True))
    s = tf.reshape(c + off[:, :, None], [b, h, wp])[:, :, :w]
    rh = tf.minimum(r, h - 1)
    v = tf.pad(_window_sums(s, r, w, 2), [[0, 0], [rh + 1, (-(h + 2 * rh + 1)) % _TILE + rh], [0, 0]])
    hp = tf.shape(v)[1]
    v = tf.reshape(v, [b, hp // _TILE, _TILE, w])
    if jit:
        c = tf.cumsum(v, axis=2)
        return c, tf.cumsum(c[:, :, -1], axis=1, exclusive=True)
    c = tf.matmul(_triu(_TILE, u.dtype), v, transpose_a=True)
    return c, tf.matmul(_triu(hp // _TILE, u.dtype, strict=True), c[:, :, -1], transpose_a=True)


def _window_rows(c, off, r, h):
    """Box sums (B, H, W) from `_column_sums`: the difference of two row-shifted prefix sums."""
    rh = tf.minimum(r, h - 1)
    s = tf.reshape(c + off[:, :, None], [tf.shape(c)[0], -1, tf.shape(c)[3]])
    return s[:, 2 * rh + 1:2 * rh + 1 + h] - s[:, :h]


def _sample(u):
    """A grid of at most 16 × 16 pixels of each (H, W) plane of u (N, K, H, W)."""
    h, w = tf.shape(u)[2], tf.shape(u)[3]
    return u[:, :, ::tf.maximum(h // 16, 1), ::tf.maximum(w // 16, 1)]


def _mean(u):
    return tf.reduce_mean(u, axis=[2, 3], keepdims=True)


def _box(p, r, jit, level=0.0, normalise=True, sums=False):
    """Box filter of the planes p (N, K, H, W) shifted by ``level`` (per plane), a constant near their mean.

    Centring only serves the accuracy of float32 prefix sums: B(p) = B(p - m) + m·N for any m. The caller computes
    the level from a few pixels of its inputs (`_sample`), so that p itself is never stored: XLA fuses its
    computation into the first box-sum pass. normalise=True: the mean f(p) over the window part inside the image;
    False: the sum B(p). sums=True also returns the window sums (`_column_sums`) for `_box_again`.
    """
    n, k, h, w = tf.shape(p)[0], tf.shape(p)[1], tf.shape(p)[2], tf.shape(p)[3]
    parts = _column_sums(tf.reshape(p - level, [n * k, h, w]), r, jit)
    s = tf.reshape(_window_rows(*parts, r, h), [n, k, h, w])
    count = _window_count(h, w, r, p.dtype)
    out = s / count + level if normalise else s + level * count
    return (out, parts) if sums else out


def _box_again(parts, like, r, level=0.0):
    """The mean f(p) that `_box` (normalise=True) gave, from its saved window sums; like: a plane of p's size."""
    n, h, w = tf.shape(like)[0], tf.shape(like)[2], tf.shape(like)[3]
    s = tf.reshape(_window_rows(*parts, r, h), [n, -1, h, w])
    return s / _window_count(h, w, r, like.dtype) + level


def _planes(x):
    """(N, H, W, C) -> (N, C, H, W)."""
    return tf.transpose(x, [0, 3, 1, 2]) if x.shape[-1] != 1 else tf.expand_dims(tf.squeeze(x, -1), 1)


def _nhwc(x):
    """(N, C, H, W) -> (N, H, W, C)."""
    return tf.transpose(x, [0, 2, 3, 1]) if x.shape[1] != 1 else tf.expand_dims(tf.squeeze(x, 1), -1)


@_stage
def _box_planes(p, r, jit):
    return _box(p, r, jit, _mean(_sample(p)))


def box_filter(x: tf.Tensor, radius: int, jit_compile: bool = True) -> tf.Tensor:
    """Mean over the part of the (2r+1)² window inside the image (He et al.'s count-normalised box filter).

    Args:
        x: (N, H, W, C) tensor (float32 or float64 computed as such; other types in float32).
        radius: int r >= 0; any value, including r larger than the image (then every pixel gets the image mean).
        jit_compile: compile with XLA (faster; compiles once per image size and radius).

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
    return _nhwc(_box_planes(_planes(x), radius, jit=bool(jit_compile)))


# ---------------------------------------------------------------------------------------------- guided filter
def _forward_math(guide, x, r, eps, keep, jit):
    """Algorithm 1 on planes: guide (N, 1, H, W), x (N, C, H, W) -> y (N, C, H, W) [, what the backward reuses].

    Both are first shifted by a level near their mean (accuracy; y is unchanged). Two stacked box filters give the
    four window means of lines 1-4, a third one those of a and b (lines 9-10). keep: None (inference), "x" (keep the
    first two stacks' window sums, which the gradient of x needs) or "both" (also the third's, for the guide's
    gradient). The window sums are buffers the forward computes anyway: keeping them costs no extra pass.
    """
    k = tf.shape(x)[1]
    level_i, level_x = _mean(_sample(guide)), _mean(_sample(x))
    g, v = guide - level_i, x - level_x
    gs, vs = _sample(g), _sample(v)
    levels = _mean(tf.concat([gs, gs * gs], axis=1)), _mean(tf.concat([vs, gs * vs], axis=1))
    # two stacks rather than one of the four maps: the same passes, a third less memory at the peak
    (means_i, sums_i), (means_x, sums_x) = (_box(tf.concat(maps, axis=1), r, jit, level, sums=True)
                                            for maps, level in zip(([g, g * g], [v, g * v]), levels))
    mean_i, mean_x, var_eps, cov, _ = _coefficients(means_i, means_x, k, eps)
    # b = mean_x - a·mean_i written without a, so that XLA computes both from the window sums in one pass
    ab, sums_ab = _box(tf.concat([cov / var_eps, (mean_x * var_eps - cov * mean_i) / var_eps], axis=1), r, jit,
                       sums=True)
    y = ab[:, :k] * g + ab[:, k:] + level_x
    if keep is None:
        return y
    return y, (level_i, level_x, levels, sums_i, sums_x) + ((sums_ab,) if keep == "both" else ())


def _coefficients(means_i, means_x, k, eps):
    """Algorithm 1 lines 5-7 from the window means [f(I), f(I·I)] and [f(x), f(I·x)]: mean_i, mean_x, var + eps,
    cov and where var > 0; cov = 0 where not (a flat window: a = cov / (var + eps) = 0 exactly, not round-off / eps)."""
    mean_i, mean_x = means_i[:, :1], means_x[:, :k]
    var = means_i[:, 1:] - mean_i * mean_i
    positive = var > 0.0
    cov = tf.where(positive, means_x[:, k:] - mean_i * mean_x, 0.0)
    return mean_i, mean_x, tf.maximum(var, 0.0) + eps, cov, positive


def _backward_math(dy, guide, x, saved, r, eps, jit):
    """Algorithm 2 made exact (eq. 38 with fᵀ(g) = B(g/N)) from the forward's window sums; with the guide's
    gradient when ``saved`` has the second box filter's sums, else (None, dx)."""
    k = tf.shape(x)[1]
    level_i, level_x, levels, sums_i, sums_x = saved[:5]
    g = guide - level_i
    means_i, means_x = _box_again(sums_i, x, r, levels[0]), _box_again(sums_x, x, r, levels[1])
    mean_i, mean_x, var_eps, cov, positive = _coefficients(means_i, means_x, k, eps)
    count = _window_count(tf.shape(x)[2], tf.shape(x)[3], r, x.dtype)
    gs, dys = _sample(g), _sample(dy)
    level = _mean(tf.concat([dys * gs, dys], axis=1) / _sample(count[None, None]))
    gab = _box(tf.concat([dy * g, dy], axis=1) / count, r, jit, level, normalise=False)  # fᵀ of d f(a), d f(b)
    da, db = gab[:, :k], gab[:, k:]  # eqs. (36), (34) before the b-term
    d_cov = tf.where(positive, (da - db * mean_i) / var_eps, 0.0)  # eq. (36); a = 0 where var <= 0
    d_mean_x = db - d_cov * mean_i  # eq. (38): dx = fᵀ(da/(var+eps))·I + fᵀ(db − da/(var+eps)·f(I))
    g_mean_x, g_corr_ix = tf.split(_box(tf.concat([d_mean_x, d_cov], axis=1) / count, r, jit, normalise=False), 2,
                                   axis=1)
    dx = g_mean_x + g * g_corr_ix
    if len(saved) == 5:
        return None, dx
    a = cov / var_eps
    d_var = -tf.reduce_sum(d_cov * a, axis=1, keepdims=True)
    d_mean_i = -tf.reduce_sum(db * a + d_cov * mean_x, axis=1, keepdims=True) - 2.0 * mean_i * d_var
    g_mean_i, g_corr_i = tf.split(_box(tf.concat([d_mean_i, d_var], axis=1) / count, r, jit, normalise=False), 2,
                                  axis=1)
    mean_a = _box_again(saved[5], x, r)[:, :k]
    d_guide = tf.reduce_sum(dy * mean_a + (x - level_x) * g_corr_ix, axis=1, keepdims=True)  # y = f(a)·I + f(b)
    return d_guide + g_mean_i + 2.0 * g * g_corr_i, dx


@_stage
def _forward(guide, x, r, eps, jit):
    """The forward alone (inference: nothing kept for a backward pass)."""
    return _forward_math(guide, x, r, eps, None, jit)


@_stage
def _forward_keeping_x(guide, x, r, eps, jit):
    return _forward_math(guide, x, r, eps, "x", jit)


@_stage
def _forward_keeping_both(guide, x, r, eps, jit):
    return _forward_math(guide, x, r, eps, "both", jit)


@_stage
def _backward(dy, guide, x, saved, r, eps, jit):
    return _backward_math(dy, guide, x, saved, r, eps, jit)


def _recording(tensors):
    """Whether a gradient tape records operations on these tensors."""
    try:
        from tensorflow.python.eager import record
        return bool(record.should_record_backprop(tensors))
    except Exception:  # noqa: BLE001 - private API gone: keep the window sums (always correct)
        return True


_FORWARDS = {None: _forward, "x": _forward_keeping_x, "both": _forward_keeping_both}


def _keep(guide, x):
    """What the forward keeps for a backward pass: the window sums for the inputs a gradient tape records."""
    return "both" if _recording([guide]) else "x" if _recording([x]) else None


def _guided_planes(guide, x, radius, eps, jit):
    """Guided filter on planes with the exact custom gradient for the guide and x.

    The forward keeps the window sums the backward needs, for the inputs a gradient tape records: none in inference;
    those of x alone when the guide is a constant image (Guided-Pix2Pix filters with the hazy input as guide), which
    also halves the backward's second box filter. A gradient asked for without a recording tape (symbolic
    ``tf.gradients``) recomputes them.
    """
    keep = _keep(guide, x)

    @tf.custom_gradient
    def gf(guide, x):
        # stop_gradient: the tape must not record the compiled forward itself (it would then keep the intermediates
        # of TensorFlow's own gradient of it: several more passes and planes, for nothing)
        guide, x = tf.stop_gradient(guide), tf.stop_gradient(x)
        y, saved = _FORWARDS[keep](guide, x, radius, eps, jit=jit), None
        if keep is not None:
            y, saved = y

        def grad(dy):
            kept = saved if saved is not None else _forward_keeping_both(guide, x, radius, eps, jit=jit)[1]
            return _backward(dy, guide, x, kept, radius, eps, jit=jit)

        return y, grad

    return gf(guide, x)


# ------------------------------------------------------------------------------------------- native CPU kernel
_portable_lock = threading.Lock()
_portable_depth = 0


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """Within this context `guided_filter` (and `GuidedFilter`) use the pure TensorFlow path, never the C++ kernel:
    what is traced inside contains only TensorFlow's own ops (a SavedModel for TF Serving, which cannot load the
    custom op). Process-wide while it lasts (tracing may run in other threads, e.g. MirroredStrategy's replicas).
    Also reachable as ``guided_filter.portable()``.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.guided_filter import guided_filter, portable
        >>> f = tf.function(lambda g, x: guided_filter(g, x, radius=2))
        >>> spec = tf.TensorSpec([1, 8, 8, 1], tf.float32)
        >>> with portable():
        ...     graph = f.get_concrete_function(spec, spec).graph
        >>> any(op.type.startswith("Tfdehaze") for op in graph.get_operations())
        False
    """
    global _portable_depth
    with _portable_lock:
        _portable_depth += 1
    try:
        yield
    finally:
        with _portable_lock:
            _portable_depth -= 1


def _on_cpu(tensors):
    """Whether these tensors live (or, in a graph without a device, will live) on a CPU."""
    devices = [(getattr(t, "device", "") or "").upper() for t in tensors]
    if any("GPU" in d or "TPU" in d for d in devices):
        return False
    return all("CPU" in d for d in devices) or not tf.config.list_logical_devices("GPU")


@tf.autograph.experimental.do_not_convert  # first use inside a tf.function: AutoGraph must not convert the loader
def _native_ops(guide, x):
    """The C++ kernel's ops when they apply to these float32 planes (CPU, enabled, not `portable`), else None."""
    if _portable_depth or x.dtype != tf.float32 or not native.enabled() or not _on_cpu([guide, x]):
        return None
    return native.load()


_KEEP = {None: 0, "x": 1, "both": 2}


def _guided_native(ops, guide, x, radius, eps):
    """`_guided_planes` with the C++ kernel: guide (N, H, W, 1), x (N, H, W, C) float32, NHWC as they come.

    The forward op keeps the window statistics for the inputs a gradient tape records (`_keep`); a gradient asked
    for without a recording tape (symbolic ``tf.gradients``) reruns the forward keeping them.
    """
    keep = _keep(guide, x)
    forward, backward = getattr(ops, native.FORWARD), getattr(ops, native.BACKWARD)

    @tf.custom_gradient
    def gf(guide, x):
        guide, x = tf.stop_gradient(guide), tf.stop_gradient(x)
        y, saved = forward(guide, x, radius=radius, eps=eps, keep=_KEEP[keep])

        def grad(dy):
            kept, both = saved, keep == "both"
            if keep is None:
                kept, both = forward(guide, x, radius=radius, eps=eps, keep=2)[1], True
            d_guide, dx = backward(dy, guide, x, kept, radius=radius, with_guide=both)
            return (d_guide if both else None), dx

        return y, grad

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
            [-1, 1], which equals 2.5e-5 on [0, 1]; the paper's 1e-8 and smaller are safe: a window where the guide
            is flat gets its exact a = 0, not round-off divided by eps.)
        jit_compile: for the TensorFlow path (GPU, float64, `portable`, no C++ kernel): compile the forward and the
            backward with XLA: about 2x faster on CPU, but each new image size or radius costs an XLA compilation (a
            few seconds for forward + backward on 2 CPU cores). Turn off when image sizes vary. The C++ kernel, used
            on CPU for float32 (see the module docstring), compiles nothing per size.
        custom_gradient: backward by Algorithm 2 (exact, default); False lets TensorFlow differentiate the same
            forward of the TensorFlow path (slower, more memory: for comparisons and benchmarks).

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
    ops = _native_ops(guide, x) if custom_gradient else None
    if ops is not None:
        return tf.cast(_guided_native(ops, guide, x, radius, eps), dtype)
    guide, x = _planes(guide), _planes(x)
    if custom_gradient:
        y = _guided_planes(guide, x, radius, eps, bool(jit_compile))
    else:
        keep = _keep(guide, x)
        y = _FORWARDS[keep](tf.stop_gradient(guide), tf.stop_gradient(x), radius, eps, jit=bool(jit_compile))
        if keep is not None:
            y = y[0]
            # TensorFlow differentiates its own variant of the compiled forward, which XLA fuses differently: take
            # the value from the forward the custom gradient runs (identical outputs) and the gradient from autodiff
            auto = _forward(guide, x, radius, eps, jit=bool(jit_compile))
            y += auto - tf.stop_gradient(auto)
    return tf.cast(_nhwc(y), dtype)


guided_filter.portable = portable  # ``with guided_filter.portable():`` (tfdehaze.layers.guided_filter is the function)


@keras.saving.register_keras_serializable(package="tfdehaze")
class GuidedFilter(keras.layers.Layer):
    """Differentiable guided filter layer (Guided-Pix2Pix §III-C/D, Algorithms 1-2, eqs. 8-38).

    Called as ``layer(guide, x)``: guide (N, H, W, 1) or (N, H, W, 3) in [0, 1] (RGB -> gray), x (N, H, W, C);
    returns (N, H, W, C). Gradients flow to both x and the guide (exact, ``tf.custom_gradient``). The function form
    is `guided_filter`.

    Args:
        radius: window radius r (default 60, the paper's recommendation for 512×512).
        eps: regularisation for a guide in [0, 1] (default 1e-4; the authors' 1e-4 referred to a [-1, 1] guide).
        jit_compile: XLA for the forward and the backward (see ``guided_filter``).
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
        # float32 under any mixed-precision policy: the window sums and the variance need its precision (inputs
        # in bfloat16 / float16 are cast up by Keras); pass dtype= to override.
        kwargs.setdefault("dtype", "float32")
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
