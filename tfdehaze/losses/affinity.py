"""RFD's feature affinity loss L_FA (Mitheran et al., "Rich Feature Distillation with Feature Affinity Module for
Efficient Image Dehazing", §3.3, eqs. 7-11 and 15), one value per example.

For each (teacher, student) pair of NHWC feature maps:

    C* = Flatten(AvgPool(C*)),  H* = Flatten(AvgPool(H*))          (7), (8)   F: C x P, P = h*w pooled positions
    C = C* x C*^T,  H = H* x H*^T                                  (9), (10)  affinities
    L = distance(H, C)                                             (11) KL, or L2 / L1

The teacher's map is average-pooled by 1/``teacher_pool`` and the student's by 1/``student_pool`` (non-overlapping
windows, remainder rows/columns dropped, as PyTorch's ``AvgPool2d``) so that both land on the same h x w grid: the
teacher sees the clear image and returns its x2 super-resolution, so 8 and 4 (the authors' code). Two affinities:

- ``"spatial"`` (default; the authors' code): A = F^T F, P x P, the similarity of every pair of positions summed over
  channels. Teacher and student may have different channel counts.
- ``"channel"`` (the paper's eqs. 9-10 as printed): the Gram matrix F F^T / P, C x C, averaged over positions; teacher
  and student must have the same number of channels.

Distances, per example (i indexes the batch, T the teacher, S the student):

===========  ============================================================  =============================================
distance     spatial                                                       channel
===========  ============================================================  =============================================
``"l2"``     ||A_T - A_S||_F / P^2  (the authors' normalisation; see       ||G_T - G_S||_F / C  (root mean square of the
             "batch" below)                                                C^2 entries)
``"l1"``     sum |A_T - A_S| / P^2  (mean absolute difference of the P^2   mean |G_T - G_S| over the C^2 entries
             entries; DSRL's original FA loss, Wang et al. 2020 [54])
``"kl"``     KL(softmax(A_S / tau) || softmax(A_T / tau)) per row, mean    the same on G / tau (C x C)
             over the P rows: eq. (11) KL(H || C) with H the student's
             (hazy) and C the teacher's (clear) affinities, each row
             turned into a distribution over positions by a softmax
===========  ============================================================  =============================================

The loss of several pairs is the SUM over pairs (the paper's "module at each scale").

Memory. For l2 spatial the P x P matrices are never built: with S = F + G and D = F - G (F, G the two flattened
maps, zero-padded to a common channel count, which leaves F^T F unchanged), F^T F - G^T G = (S^T D + D^T S) / 2 and

    ||F^T F - G^T G||_F^2 = ( <S S^T, D D^T> + tr((D S^T)^2) ) / 2

with C x C matrices only, O(P C^2) time and O(P C) memory. This equals the textbook ||F F^T||^2 - 2 ||G F^T||^2 +
||G G^T||^2 exactly, but that form subtracts terms of size ||F||^4 to get a result of size ||F - G||^2 ||F + G||^2
and loses every digit in float32 once the student approaches the teacher (at a 1e-3 difference the float32 three-term
value is off by ~100 %); the S/D form has no such cancellation (the tests check 1e-5 relative against float64). F and
G are scaled by 1/sqrt(P) first, so the Gram entries are means over positions (O(1) whatever the image size). At the
paper's 460 x 620 (P = 115 * 155 = 17,825 after pooling) one P x P float32 matrix is 1.27 GB per image and the naive
loss peaks at 2.4 GB; this one allocates 3 MB (10 MB with its gradient), mostly pooled maps
(benchmarks/feature_affinity.py).

l1 and kl spatial do build the P x P affinities (they are not functions of C x C products): the pooled grids are
small for the crops these losses are meant for (a 256 x 256 student input pooled by 4 gives P = 4096, 64 MB per
matrix per example), and above ``max_positions`` the loss refuses with an error saying to pool more.

Batch. The authors' value is ONE number for the batch: the Frobenius norm of the (N, P, P) difference over the whole
batch divided by P^2, i.e. sqrt(sum_i d_i^2) / P^2 with d_i = ||A_T,i - A_S,i||_F. Here each example gets
d_i / P^2, so that a training step can divide by the global batch (`tf.nn.compute_average_loss`) under a
distribution strategy (a batch-level norm is not a sum over examples and would couple the replicas). For one image
the two agree; for N images the authors' value lies between our batch mean and N times it, and is sqrt(N) times it
when the d_i are alike: at the authors' batch of 2 their w_FA = 0.25 corresponds to about 0.25 * sqrt(2) = 0.35 here.

Everything is computed in float32 (features of another dtype are cast).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfdehaze.losses.terms import register_loss

AFFINITIES = ("spatial", "channel")
DISTANCES = ("l2", "l1", "kl")


def pool_features(x: tf.Tensor, pool: int) -> tf.Tensor:
    """Average pooling by 1/``pool`` over non-overlapping windows (remainder dropped): (N, H, W, C) ->
    (N, H // pool, W // pool, C), float32. Eqs. (7)-(8)'s AvgPool.

    Examples:
        >>> pool_features(tf.reshape(tf.range(16.0), [1, 4, 4, 1]), 2)[0, ..., 0].numpy()
        array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    if pool == 1:
        return x
    return tf.nn.avg_pool2d(x, ksize=pool, strides=pool, padding="VALID")


def _flatten(x: tf.Tensor) -> tf.Tensor:
    """(N, h, w, C) -> (N, P, C): the paper's F (C x P) transposed, one row per position."""
    shape = tf.shape(x)
    channels = x.shape[-1] if x.shape[-1] is not None else shape[3]
    return tf.reshape(x, [shape[0], shape[1] * shape[2], channels])


def spatial_affinity(x: tf.Tensor) -> tf.Tensor:
    """The paper's F^T F for a feature map: (N, h, w, C) -> (N, P, P), P = h*w. Materialises P x P: small maps only.

    Examples:
        >>> spatial_affinity(tf.ones([1, 2, 2, 3])).numpy()[0]
        array([[3., 3., 3., 3.],
               [3., 3., 3., 3.],
               [3., 3., 3., 3.],
               [3., 3., 3., 3.]], dtype=float32)
    """
    f = _flatten(tf.cast(x, tf.float32))
    return tf.matmul(f, f, transpose_b=True)


def channel_affinity(x: tf.Tensor) -> tf.Tensor:
    """The Gram matrix F F^T / P of eqs. (9)-(10): (N, h, w, C) -> (N, C, C), averaged over the P positions.

    Examples:
        >>> channel_affinity(tf.fill([1, 2, 2, 2], 2.0)).numpy()[0]
        array([[4., 4.],
               [4., 4.]], dtype=float32)
    """
    f = _flatten(tf.cast(x, tf.float32))
    return tf.matmul(f, f, transpose_a=True) / tf.cast(tf.shape(f)[1], tf.float32)


def _safe_sqrt(x):
    """sqrt(max(x, 0)) with a zero (not NaN) gradient at 0."""
    positive = x > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, x, 1.0)), 0.0)


def _pad_channels(x, channels):
    extra = channels - x.shape[-1]
    return x if extra == 0 else tf.pad(x, [[0, 0], [0, 0], [0, extra]])


def _sum_last2(x):
    return tf.reduce_sum(x, axis=[-2, -1])


def _kl_rows(a_teacher, a_student, temperature):
    """Mean over rows of KL(softmax(a_student) || softmax(a_teacher)), both (N, R, R') -> (N,)."""
    log_t = tf.nn.log_softmax(a_teacher / temperature, axis=-1)
    log_s = tf.nn.log_softmax(a_student / temperature, axis=-1)
    return tf.reduce_mean(tf.reduce_sum(tf.exp(log_s) * (log_s - log_t), axis=-1), axis=-1)


def _pair(teacher, student, affinity, distance, temperature, max_positions, index):
    """One pair of pooled maps (N, h, w, C_T), (N, h, w, C_S) -> (N,)."""
    f, g = _flatten(teacher), _flatten(student)                   # (N, P, C)
    positions = tf.cast(tf.shape(f)[1], tf.float32)
    ct, cs = teacher.shape[-1], student.shape[-1]
    if ct is None or cs is None:
        raise ValueError(f"feature pair {index}: the channel counts must be known, got teacher {tuple(teacher.shape)}"
                         f" and student {tuple(student.shape)}")
    if affinity == "channel":
        if ct != cs:
            raise ValueError(f"feature pair {index}: channel affinities (C x C Gram matrices) need the same channel "
                             f"count, got teacher {ct} and student {cs}; use affinity='spatial' or other taps")
        if distance == "kl":
            return _kl_rows(channel_affinity(teacher), channel_affinity(student), temperature)
        scale = tf.math.rsqrt(positions)
        s, d = (f + g) * scale, (f - g) * scale
        x = tf.matmul(d, s, transpose_a=True)                     # D^T S / P, (N, C, C)
        delta = 0.5 * (x + tf.linalg.matrix_transpose(x))         # G_T - G_S without cancellation
        if distance == "l1":
            return tf.reduce_mean(tf.abs(delta), axis=[-2, -1])
        return _safe_sqrt(_sum_last2(tf.square(delta))) / float(ct)

    if distance == "l2":                                          # never P x P
        width = max(ct, cs)
        scale = tf.math.rsqrt(positions)
        f, g = _pad_channels(f, width) * scale, _pad_channels(g, width) * scale
        s, d = f + g, f - g
        ss = tf.matmul(s, s, transpose_a=True)                    # (N, C, C)
        dd = tf.matmul(d, d, transpose_a=True)
        x = tf.matmul(d, s, transpose_a=True)
        squared = 0.5 * (_sum_last2(ss * dd) + _sum_last2(x * tf.linalg.matrix_transpose(x)))  # ||dA||^2 / P^2
        return _safe_sqrt(squared) / positions

    p_static = None if None in teacher.shape[1:3] else teacher.shape[1] * teacher.shape[2]
    message = (f"feature pair {index}: {distance} on spatial affinities builds P x P matrices; P = "
               f"{p_static if p_static is not None else 'h*w'} pooled positions exceeds max_positions="
               f"{max_positions} (~{4 * max_positions ** 2 / 2 ** 20:.0f} MB per matrix per example at the limit). "
               "Pool more (teacher_pool / student_pool), use smaller crops, raise max_positions, or use "
               "distance='l2', which needs no P x P matrix")
    if p_static is not None:
        if p_static > max_positions:
            raise ValueError(message)
    else:
        tf.debugging.assert_less_equal(tf.shape(f)[1], max_positions, message=message)
    if distance == "kl":
        return _kl_rows(tf.matmul(f, f, transpose_b=True), tf.matmul(g, g, transpose_b=True), temperature)
    width = max(ct, cs)
    f, g = _pad_channels(f, width), _pad_channels(g, width)
    m = tf.matmul(f + g, f - g, transpose_b=True)                 # S D^T, (N, P, P)
    delta = 0.5 * (m + tf.linalg.matrix_transpose(m))             # A_T - A_S without cancellation
    return tf.reduce_mean(tf.abs(delta), axis=[-2, -1])


def _as_list(features, who):
    if isinstance(features, (tf.Tensor, tf.Variable, np.ndarray)):
        return [features]
    if isinstance(features, Sequence) and not isinstance(features, str):
        return list(features)
    raise ValueError(f"{who} features must be an NHWC tensor or a list of them, got {type(features).__name__}")


def _pools(pool, count, who):
    pools = list(pool) if isinstance(pool, Sequence) and not isinstance(pool, str) else [pool] * count
    if len(pools) != count:
        raise ValueError(f"{who}_pool lists {len(pools)} factors for {count} feature pairs")
    for p in pools:
        if isinstance(p, bool) or int(p) != p or p < 1:
            raise ValueError(f"{who}_pool must be a positive integer or a list of them, got {pool!r}")
    return [int(p) for p in pools]


def _check_grids(index, teacher, student, pooled_t, pooled_s, pool_t, pool_s):
    """The pooled maps, checked: a clear error when the grids differ (statically when shapes are known, else at run
    time, before the maps are used)."""
    def describe():
        return (f"feature pair {index}: teacher map {tuple(teacher.shape)} pooled by {pool_t} gives grid "
                f"{tuple(pooled_t.shape[1:3])}, student map {tuple(student.shape)} pooled by {pool_s} gives grid "
                f"{tuple(pooled_s.shape[1:3])}; they must be equal (the teacher's output is at 2x the student's "
                "size: teacher_pool = 2 * student_pool; an intermediate teacher tap is at 1x: equal pools)")

    static_t, static_s = pooled_t.shape[:3], pooled_s.shape[:3]
    for a, b in zip(static_t, static_s, strict=True):
        if a is not None and b is not None and a != b:
            raise ValueError(describe())
    if 0 in static_t[1:] or 0 in static_s[1:]:
        raise ValueError(describe() + "; the pooled grid is empty: the maps are smaller than the pooling window")
    if static_t.is_fully_defined() and static_s.is_fully_defined():
        return pooled_t, pooled_s
    # Unknown sizes (graph mode): the checks run before anything reads the pooled maps (control dependencies), so
    # a mismatch is always this message, never a shape error from whichever later op the runtime executes first.
    checks = [tf.debugging.assert_equal(tf.shape(pooled_t)[:3], tf.shape(pooled_s)[:3],
                                        message=f"feature pair {index}: teacher and student grids differ after "
                                                f"pooling by {pool_t} and {pool_s}"),
              tf.debugging.assert_positive(tf.reduce_prod(tf.shape(pooled_t)[1:3]),
                                           message=f"feature pair {index}: the pooled grid is empty")]
    with tf.control_dependencies(checks):
        return tf.identity(pooled_t), tf.identity(pooled_s)


def _validate(affinity, distance, temperature, max_positions):
    if affinity not in AFFINITIES:
        raise ValueError(f"affinity must be one of {AFFINITIES}, got {affinity!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if int(max_positions) != max_positions or max_positions < 1:
        raise ValueError(f"max_positions must be a positive integer, got {max_positions!r}")


def feature_affinity_loss(teacher_features: tf.Tensor | Sequence[tf.Tensor],
                          student_features: tf.Tensor | Sequence[tf.Tensor], affinity: str = "spatial",
                          distance: str = "l2",
                          teacher_pool: int | Sequence[int] = 8, student_pool: int | Sequence[int] = 4,
                          temperature: float = 1.0, max_positions: int = 4096) -> tf.Tensor:
    """L_FA per example (eqs. 7-11), summed over feature pairs; see the module docstring for the exact definitions.

    Args:
        teacher_features, student_features: an NHWC map or a list of K maps each (pairs matched by position);
            teacher k is (N, H_k, W_k, C_k), student k (N, H'_k, W'_k, C'_k) with H_k // teacher_pool ==
            H'_k // student_pool (same for W).
        affinity: ``"spatial"`` (P x P, F^T F; the authors' code, default) or ``"channel"`` (C x C Gram F F^T / P;
            needs C_k == C'_k).
        distance: ``"l2"`` (Frobenius norm of the difference; spatial: / P^2, the authors'), ``"l1"`` or ``"kl"``
            (eq. 11 on row-softmaxed affinities, KL(student || teacher)).
        teacher_pool, student_pool: average-pooling factors, one int for every pair or a list per pair (8, 4).
        temperature: divides the affinities before the softmax of ``"kl"``.
        max_positions: the largest pooled grid (h*w) for which ``"l1"`` / ``"kl"`` spatial build P x P matrices.

    Returns:
        (N,) float32.

    Examples:
        >>> import numpy as np, tensorflow as tf
        >>> teacher = tf.random.stateless_uniform([2, 64, 64, 3], seed=[0, 1])   # x2 SR output, 2H x 2W
        >>> student = tf.random.stateless_uniform([2, 32, 32, 3], seed=[0, 2])   # dehazed output, H x W
        >>> loss = feature_affinity_loss(teacher, student)                       # spatial L2, 8x8 grids, P = 64
        >>> loss.shape
        TensorShape([2])
        >>> naive = tf.norm(spatial_affinity(pool_features(teacher, 8)) - spatial_affinity(pool_features(student, 4)),
        ...                 ord="fro", axis=[1, 2]) / 64 ** 2
        >>> bool(np.allclose(loss, naive, rtol=1e-5))
        True
        >>> feature_affinity_loss(student, student, teacher_pool=4).numpy()
        array([0., 0.], dtype=float32)
        >>> feature_affinity_loss(student, student)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: feature pair 0: teacher map (2, 32, 32, 3) pooled by 8 gives grid (4, 4), student map ... (8, 8)...
    """
    _validate(affinity, distance, temperature, max_positions)
    teachers, students = _as_list(teacher_features, "teacher"), _as_list(student_features, "student")
    if len(teachers) != len(students) or not teachers:
        raise ValueError(f"feature_affinity_loss needs as many teacher as student features (>= 1), got "
                         f"{len(teachers)} and {len(students)}")
    pools_t, pools_s = _pools(teacher_pool, len(teachers), "teacher"), _pools(student_pool, len(students), "student")
    total = None
    for index, (t, s, pt, ps) in enumerate(zip(teachers, students, pools_t, pools_s, strict=True)):
        t, s = tf.convert_to_tensor(t), tf.convert_to_tensor(s)
        if t.shape.rank != 4 or s.shape.rank != 4:
            raise ValueError(f"feature pair {index}: maps must be NHWC, got teacher {tuple(t.shape)} and student "
                             f"{tuple(s.shape)}")
        pooled_t, pooled_s = pool_features(t, pt), pool_features(s, ps)
        pooled_t, pooled_s = _check_grids(index, t, s, pooled_t, pooled_s, pt, ps)
        value = _pair(pooled_t, pooled_s, affinity, distance, float(temperature), int(max_positions), index)
        total = value if total is None else total + value
    return total


@register_loss("affinity", inputs=("teacher_features", "student_features"),
               description="RFD feature affinity L_FA: pooled spatial (or channel) affinities of teacher vs student "
                           "features, L2 (authors') / L1 / KL, per example")
class FeatureAffinityLoss:
    """`feature_affinity_loss` with its options fixed: ``FeatureAffinityLoss(**options)(teacher, student) -> (N,)``.

    Registered as the loss ``"affinity"`` reading the distillation step's ``teacher_features`` and
    ``student_features`` (use the step with ``adapters=False``: affinities compare maps of any widths).

    Args: see `feature_affinity_loss` (``affinity="spatial"``, ``distance="l2"``, ``teacher_pool=8``,
    ``student_pool=4``, ``temperature=1.0``, ``max_positions=4096``).

    Examples:
        >>> import tensorflow as tf
        >>> loss = FeatureAffinityLoss(affinity="channel", distance="kl")
        >>> x = tf.random.stateless_uniform([1, 16, 16, 3], seed=[1, 2])
        >>> loss([tf.image.resize(x, [32, 32])], [x]).shape
        TensorShape([1])
        >>> from tfdehaze.losses import build_term
        >>> term = build_term({"type": "affinity", "weight": 0.25})
        >>> term.inputs, term.fn.get_config()["teacher_pool"]
        (('teacher_features', 'student_features'), 8)
    """

    def __init__(self, affinity: str = "spatial", distance: str = "l2", teacher_pool: int | Sequence[int] = 8,
                 student_pool: int | Sequence[int] = 4, temperature: float = 1.0, max_positions: int = 4096):
        _validate(affinity, distance, temperature, max_positions)
        for who, pool in (("teacher", teacher_pool), ("student", student_pool)):
            _pools(pool, len(pool) if isinstance(pool, Sequence) else 1, who)
        self.affinity, self.distance = affinity, distance
        self.teacher_pool = list(teacher_pool) if isinstance(teacher_pool, Sequence) else int(teacher_pool)
        self.student_pool = list(student_pool) if isinstance(student_pool, Sequence) else int(student_pool)
        self.temperature, self.max_positions = float(temperature), int(max_positions)

    def __call__(self, teacher_features, student_features) -> tf.Tensor:
        return feature_affinity_loss(teacher_features, student_features, **self.get_config())

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {"affinity": self.affinity, "distance": self.distance, "teacher_pool": self.teacher_pool,
                "student_pool": self.student_pool, "temperature": self.temperature,
                "max_positions": self.max_positions}

    def __repr__(self) -> str:
        return "FeatureAffinityLoss(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"
