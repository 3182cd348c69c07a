"""KDDN's representation mimicking losses (Hong et al., CVPR 2020, §3.3, eqs. 5-7), one value per example.

The student's tapped features S^n(I) of the hazy image, mapped by the 1x1 adapters g of the distillation step to
the teacher's widths, imitate the frozen teacher's features T^m(J) of the clear image, pair by pair::

    FMIL   L_rm  = sum_{(m,n) in C} | T^m(J) - g(S^n(I)) |                                         (5)
    WFMIL  L_wrm = sum_{(m,n) in C} Psi * | T^m(J) - g(S^n(I)) |                                    (6)
           Psi_1 = norm(1 - t)          when the data has transmission maps t
           Psi_2 = norm(|I_g - J_g|)    otherwise (I_g, J_g: gray hazy and clear images)
           norm(x) = (x - min x) / (max x - min x), per image                                      (7)

Reductions (the paper writes |.| without saying; these are the choices here):

- Within a pair, |.| is a mean absolute difference over the example's h x w x c elements, like the L1 of eqs. 1
  and 3. WFMIL weights that literally as eq. 6 reads: ``mean(Psi * |d|)`` over the same elements (Psi broadcast
  over channels), *not* a weighted average ``sum(Psi |d|) / sum(Psi)``. Since 0 <= Psi <= 1, WFMIL <= FMIL, and the
  least hazy pixels of each image get weight 0.
- Over the pairs: the mean (``pair_reduction="mean"``, default) so the term's scale does not grow with the number
  of pairs; ``"sum"`` is eq. 5/6 as printed (= 3 x the mean for KDDN's three pairs).
- Psi is computed at the image's resolution, normalised per image (eq. 7), then resized to each feature's grid
  with antialiased bilinear interpolation (a convex combination, so it stays in [0, 1]). It is data, not a function
  of the networks: no gradient flows through it. A flat map (max = min, e.g. a hazy image equal to its clear one,
  or a constant t) says nothing about where the haze is thicker: it is set to 1 everywhere, so WFMIL falls back to
  FMIL for that image (no 0/0, no NaN).
"""
from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfdehaze.losses.terms import register_loss

LUMA = (0.299, 0.587, 0.114)
DENSITY_KINDS = ("auto", "transmission", "difference")
PAIR_REDUCTIONS = ("mean", "sum")
FLAT_EPS = 1e-6


def _pairs(teacher_features, student_features):
    teacher, student = list(teacher_features), list(student_features)
    if not teacher or len(teacher) != len(student):
        raise ValueError(f"feature mimicking needs as many student as teacher features (at least one), got "
                         f"{len(student)} and {len(teacher)}")
    pairs = []
    for k, (t, s) in enumerate(zip(teacher, student, strict=True)):
        t, s = tf.cast(t, tf.float32), tf.cast(s, tf.float32)
        if t.shape.is_fully_defined() and s.shape.is_fully_defined() and t.shape != s.shape:
            raise ValueError(f"feature pair {k}: teacher {tuple(t.shape)} and student {tuple(s.shape)} differ "
                             "(the student's widths are adapted by the step's 1x1 adapters)")
        pairs.append((t, s))
    return pairs


def _reduce_pairs(values, pair_reduction):
    if pair_reduction not in PAIR_REDUCTIONS:
        raise ValueError(f"pair_reduction must be one of {PAIR_REDUCTIONS}, got {pair_reduction!r}")
    total = tf.add_n(values)
    return total if pair_reduction == "sum" else total / float(len(values))


def _per_example_mean(x):
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


@register_loss("fmil", inputs=("teacher_features", "student_features"),
               description="feature matching imitation loss: L1 between teacher and adapted student features "
                           "(KDDN eq. 5); distill step only")
def fmil(teacher_features: Sequence[tf.Tensor], student_features: Sequence[tf.Tensor],
         pair_reduction: str = "mean") -> tf.Tensor:
    """Feature matching imitation loss (KDDN eq. 5): per example, the mean over pairs k of mean |T_k - S_k|.

    Args:
        teacher_features: list of K teacher maps, the k-th (N, h_k, w_k, c_k) (frozen; gradients are not needed).
        student_features: list of K student maps of the same shapes (already through the 1x1 adapters g).
        pair_reduction: ``"mean"`` over the pairs (default) or ``"sum"`` (eq. 5 as printed).

    Returns: (N,).

    Examples:
        >>> t = [tf.zeros([2, 4, 4, 8]), tf.zeros([2, 2, 2, 16])]
        >>> s = [tf.fill([2, 4, 4, 8], 0.5), tf.fill([2, 2, 2, 16], -1.5)]
        >>> fmil(t, s).numpy(), fmil(t, s, pair_reduction="sum").numpy()
        (array([1., 1.], dtype=float32), array([2., 2.], dtype=float32))
    """
    pairs = _pairs(teacher_features, student_features)
    return _reduce_pairs([_per_example_mean(tf.abs(t - s)) for t, s in pairs], pair_reduction)


def gray(images: tf.Tensor) -> tf.Tensor:
    """Luma 0.299 R + 0.587 G + 0.114 B (the I_g, J_g of eq. 6): (N, H, W, 3) -> (N, H, W, 1).

    Examples:
        >>> round(float(gray(tf.constant([[[[1.0, 0.5, 0.0]]]]))[0, 0, 0, 0]), 4)
        0.5925
    """
    images = tf.cast(images, tf.float32)
    return tf.reduce_sum(images * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)


def normalize(x: tf.Tensor, eps: float = FLAT_EPS) -> tf.Tensor:
    """Per-image min-max normalisation to [0, 1] (KDDN eq. 7) of (N, H, W, C) maps, over H, W and C.

    An image whose range is at most ``eps`` (flat) becomes all ones (uniform weight), never NaN.

    Examples:
        >>> x = tf.constant([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])[:, None, :, None]
        >>> normalize(x)[:, 0, :, 0].numpy()
        array([[0. , 1. , 0.5],
               [1. , 1. , 1. ]], dtype=float32)
    """
    x = tf.cast(x, tf.float32)
    low = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
    span = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True) - low
    flat = span <= eps
    scaled = (x - low) / tf.where(flat, tf.ones_like(span), span)
    return tf.clip_by_value(tf.where(flat, tf.ones_like(x), scaled), 0.0, 1.0)


def haze_density(hazy: tf.Tensor, clear: tf.Tensor, transmission: tf.Tensor | None = None, kind: str = "auto",
                 size: Sequence[int] | tf.Tensor | None = None) -> tf.Tensor:
    """Haze density map Psi in [0, 1], larger where the haze is thicker (KDDN eqs. 6-7, Fig. 5 c-d).

    ``kind``: ``"transmission"``: Psi_1 = norm(1 - t) (a multi-channel t is averaged over channels first);
    ``"difference"``: Psi_2 = norm(|gray(I) - gray(J)|); ``"auto"``: Psi_1 when ``transmission`` is given, else
    Psi_2. norm is the per-image min-max of eq. 7 (a flat map becomes all ones, see the module docstring). With
    ``size=(h, w)`` the map is then resized (antialiased bilinear) to that grid, e.g. a feature map's. No gradient.

    Args:
        hazy, clear: (N, H, W, 3) in [0, 1].
        transmission: (N, H, W, 1) (or (N, H, W, C)) in [0, 1], or None.
        kind: ``"auto"``, ``"transmission"`` or ``"difference"``.
        size: optional (h, w) to resize to.

    Returns: (N, H, W, 1), or (N, h, w, 1) with ``size``.

    Examples:
        >>> t = tf.reshape(tf.linspace(0.9, 0.3, 4), [1, 1, 4, 1]) * tf.ones([1, 2, 1, 1])
        >>> clear = tf.fill([1, 2, 4, 3], 0.2)
        >>> hazy = clear * t + 0.8 * (1.0 - t)
        >>> haze_density(hazy, clear, t)[0, 0, :, 0].numpy().round(3)
        array([0.   , 0.333, 0.667, 1.   ], dtype=float32)
        >>> haze_density(hazy, clear, kind="difference")[0, 0, :, 0].numpy().round(3)
        array([0.   , 0.333, 0.667, 1.   ], dtype=float32)
        >>> tuple(haze_density(hazy, clear, t, size=(1, 2)).shape)
        (1, 1, 2, 1)
    """
    if kind not in DENSITY_KINDS:
        raise ValueError(f"haze density kind must be one of {DENSITY_KINDS}, got {kind!r}")
    if kind == "transmission" and transmission is None:
        raise ValueError("haze density 'transmission' (Psi_1) needs transmission maps; the data has none "
                         "(use 'difference' or 'auto')")
    if kind == "transmission" or (kind == "auto" and transmission is not None):
        t = tf.cast(transmission, tf.float32)
        density = 1.0 - tf.reduce_mean(t, axis=-1, keepdims=True)
    else:
        density = tf.abs(gray(hazy) - gray(clear))
    psi = normalize(tf.stop_gradient(density))
    if size is not None:
        psi = tf.clip_by_value(tf.image.resize(psi, size, method="bilinear", antialias=True), 0.0, 1.0)
    return psi


@register_loss("wfmil", inputs=("teacher_features", "student_features", "hazy", "clear", "transmission?"),
               description="haze density aware feature imitation loss: FMIL weighted by norm(1 - t), else "
                           "norm(|I_gray - J_gray|) (KDDN eq. 6); distill step only")
def wfmil(teacher_features: Sequence[tf.Tensor], student_features: Sequence[tf.Tensor], hazy: tf.Tensor,
          clear: tf.Tensor, transmission: tf.Tensor | None = None, density: str = "auto",
          pair_reduction: str = "mean") -> tf.Tensor:
    """Haze density aware imitation loss (KDDN eq. 6): per example, the mean over pairs k of
    mean(Psi_k * |T_k - S_k|), with Psi_k = `haze_density` resized to the k-th feature grid.

    Args:
        teacher_features, student_features: as in `fmil`, K maps (N, h_k, w_k, c_k) each.
        hazy, clear: the images (N, H, W, 3) in [0, 1] (Psi_2, and the source grid of Psi).
        transmission: (N, H, W, 1) in [0, 1] or None (Psi_1 when given and ``density`` is ``"auto"``).
        density: ``"auto"``, ``"transmission"`` (Psi_1) or ``"difference"`` (Psi_2), see `haze_density`.
        pair_reduction: ``"mean"`` (default) or ``"sum"`` over the pairs (eq. 6 as printed).

    Returns: (N,). The weight Psi gets no gradient; the loss is differentiable in the features.

    Examples:
        >>> hazy, clear = tf.fill([1, 8, 8, 3], 0.6), tf.fill([1, 8, 8, 3], 0.2)   # uniform haze: Psi = 1
        >>> t, s = [tf.zeros([1, 2, 2, 4])], [tf.fill([1, 2, 2, 4], 0.5)]
        >>> wfmil(t, s, hazy, clear).numpy(), fmil(t, s).numpy()
        (array([0.5], dtype=float32), array([0.5], dtype=float32))
    """
    pairs = _pairs(teacher_features, student_features)
    psi = haze_density(hazy, clear, transmission, kind=density)
    values = []
    for t, s in pairs:
        weight = tf.clip_by_value(tf.image.resize(psi, tf.shape(t)[1:3], method="bilinear", antialias=True),
                                  0.0, 1.0)
        values.append(_per_example_mean(weight * tf.abs(t - s)))
    return _reduce_pairs(values, pair_reduction)
