"""RFD's feature affinity loss (eqs. 7-11) against naive float64 NumPy formulas that build the P x P affinities."""
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.losses import FeatureAffinityLoss, build_term, feature_affinity_loss
from tfdehaze.losses.affinity import channel_affinity, pool_features, spatial_affinity
from tfdehaze.registry import LOSSES

COMBOS = [(a, d) for a in ("spatial", "channel") for d in ("l2", "l1", "kl")]


# ---------------------------------------------------------------- naive references (float64, P x P built) ----------
def np_pool(x, p):
    n, h, w, c = x.shape
    h2, w2 = h // p, w // p
    return x[:, :h2 * p, :w2 * p].reshape(n, h2, p, w2, p, c).mean(axis=(2, 4))


def np_log_softmax(a):
    a = a - a.max(axis=-1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=-1, keepdims=True))


def naive(teacher, student, affinity="spatial", distance="l2", teacher_pool=8, student_pool=4, temperature=1.0):
    """Per example, straight from the definitions (eqs. 7-11; the module docstring's table)."""
    f = np_pool(np.asarray(teacher, np.float64), teacher_pool)
    g = np_pool(np.asarray(student, np.float64), student_pool)
    n, h, w = f.shape[:3]
    f, g = f.reshape(n, h * w, -1), g.reshape(n, h * w, -1)
    p = h * w
    if affinity == "spatial":
        at, as_ = f @ f.transpose(0, 2, 1), g @ g.transpose(0, 2, 1)          # F^T F, (N, P, P)
        norm = p ** 2
    else:
        at, as_ = f.transpose(0, 2, 1) @ f / p, g.transpose(0, 2, 1) @ g / p  # F F^T / P, (N, C, C)
        norm = at.shape[-1] ** 2
    if distance == "l2":
        return np.sqrt(((at - as_) ** 2).sum(axis=(1, 2))) / (norm if affinity == "spatial" else np.sqrt(norm))
    if distance == "l1":
        return np.abs(at - as_).sum(axis=(1, 2)) / norm
    ls, lt = np_log_softmax(as_ / temperature), np_log_softmax(at / temperature)
    return (np.exp(ls) * (ls - lt)).sum(axis=-1).mean(axis=-1)                 # KL(student || teacher), eq. 11


def _maps(rng, shape, offset=0.0):
    return (rng.uniform(0, 1, shape) + offset).astype(np.float32)


@pytest.fixture
def pair(rng):
    """A teacher x2 SR output and a student output: grids 8 x 6 after pooling by 8 and 4."""
    return _maps(rng, (2, 64, 48, 3)), _maps(rng, (2, 32, 24, 3))


# ---------------------------------------------------------------- values -------------------------------------------
def test_spatial_l2_equals_the_naive_p_by_p_computation(pair):
    teacher, student = pair
    ours = FeatureAffinityLoss(affinity="spatial")(teacher, student).numpy()
    assert ours.shape == (2,) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, naive(teacher, student), rtol=1e-5)


@pytest.mark.parametrize("shapes, pools", [
    (((2, 20, 28, 7), (2, 20, 28, 5)), (4, 4)),     # different widths, equal pools (intermediate taps)
    (((1, 66, 40, 16), (1, 33, 20, 3)), (2, 1)),    # odd sizes, pool 1, P = 660
    (((3, 40, 40, 168), (3, 20, 20, 16)), (8, 4)),  # teacher "expand" (168) vs student group (16)
])
def test_spatial_l2_other_shapes(rng, shapes, pools):
    teacher, student = _maps(rng, shapes[0], offset=-0.5), _maps(rng, shapes[1], offset=0.2)
    ours = feature_affinity_loss(teacher, student, teacher_pool=pools[0], student_pool=pools[1]).numpy()
    np.testing.assert_allclose(ours, naive(teacher, student, teacher_pool=pools[0], student_pool=pools[1]), rtol=1e-5)


def test_spatial_l2_is_accurate_when_student_nears_teacher(rng):
    """F ~ G is where training ends up. The S/D form keeps 1e-5; SPEC's three-term identity, evaluated in float32,
    cancels terms of size ||F||^4 and loses most digits.

    The reference starts from the float32 POOLED maps: pooling each map in float32 already perturbs F - G by
    ~eps |F| (1e-5 relative in the result at this 1e-3 distance), an error every float32 implementation shares; this
    test measures the affinity arithmetic."""
    teacher = _maps(rng, (2, 64, 64, 3))
    student = np_pool(teacher, 2).astype(np.float32) + 1e-3 * rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    ours = feature_affinity_loss(teacher, student).numpy()
    pooled_t, pooled_s = pool_features(teacher, 8), pool_features(student, 4)
    reference = naive(pooled_t.numpy(), pooled_s.numpy(), teacher_pool=1, student_pool=1)
    np.testing.assert_allclose(ours, reference, rtol=1e-5)
    np.testing.assert_allclose(ours, naive(teacher, student), rtol=1e-4)      # from the raw maps, pooling included

    f = tf.reshape(pooled_t, [2, 64, 3])
    g = tf.reshape(pooled_s, [2, 64, 3])

    def sq(a, b):
        return tf.reduce_sum(tf.square(tf.matmul(a, b, transpose_a=True)), axis=[1, 2])

    three_terms = tf.sqrt(tf.maximum(sq(f, f) - 2 * sq(g, f) + sq(g, g), 0.0)).numpy() / 64 ** 2
    error_three = np.abs(three_terms - reference).max() / reference.max()
    error_ours = np.abs(ours - reference).max() / reference.max()
    print(f"\nrelative error near F = G: S/D form {error_ours:.1e}, three-term identity {error_three:.1e}")
    assert error_three > 100 * error_ours


@pytest.mark.parametrize("affinity, distance", COMBOS)
def test_every_combination_matches_the_naive_formula(pair, affinity, distance):
    teacher, student = pair
    ours = feature_affinity_loss(teacher, student, affinity=affinity, distance=distance).numpy()
    np.testing.assert_allclose(ours, naive(teacher, student, affinity, distance), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("affinity", ["spatial", "channel"])
def test_kl_temperature(pair, affinity):
    teacher, student = pair
    ours = feature_affinity_loss(teacher, student, affinity=affinity, distance="kl", temperature=0.1).numpy()
    np.testing.assert_allclose(ours, naive(teacher, student, affinity, "kl", temperature=0.1), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("affinity, distance", COMBOS)
def test_zero_for_identical_features(rng, affinity, distance):
    x = _maps(rng, (2, 16, 12, 4))
    value = feature_affinity_loss(x, x, affinity=affinity, distance=distance, teacher_pool=4, student_pool=4)
    np.testing.assert_array_equal(value.numpy(), [0.0, 0.0])
    up = tf.image.resize(x, [32, 24], method="nearest")       # the same map at 2x: pooled by 8 vs 4 -> identical grids
    assert np.abs(feature_affinity_loss(up, x, affinity=affinity, distance=distance).numpy()).max() < 1e-6


def test_per_example_values_and_the_authors_batch_norm(pair):
    """Each example's value is its own (batch-independent), d_i / P^2; the authors' one batch value is
    sqrt(sum_i d_i^2) / P^2, recoverable from ours."""
    teacher, student = pair
    batch = feature_affinity_loss(teacher, student).numpy()
    single = [feature_affinity_loss(teacher[i:i + 1], student[i:i + 1]).numpy()[0] for i in range(2)]
    np.testing.assert_allclose(batch, single, rtol=1e-6)
    p = 8 * 6
    at = spatial_affinity(pool_features(teacher, 8)).numpy().astype(np.float64)
    as_ = spatial_affinity(pool_features(student, 4)).numpy().astype(np.float64)
    authors = np.linalg.norm((at - as_).ravel()) / p ** 2              # torch.norm(mat_T - mat_S) / (HW)^2
    np.testing.assert_allclose(np.sqrt(np.sum((batch * p ** 2) ** 2)) / p ** 2, authors, rtol=1e-5)
    assert batch.mean() <= authors <= batch.sum()


def test_several_pairs_sum_with_per_pair_pools(rng, pair):
    teacher, student = pair
    t2, s2 = _maps(rng, (2, 16, 16, 5)), _maps(rng, (2, 16, 16, 6))
    loss = FeatureAffinityLoss(teacher_pool=[8, 2], student_pool=[4, 2])
    expected = naive(teacher, student) + naive(t2, s2, teacher_pool=2, student_pool=2)
    np.testing.assert_allclose(loss([teacher, t2], [student, s2]).numpy(), expected, rtol=1e-5)


def test_helpers():
    x = tf.random.stateless_uniform([2, 4, 6, 3], seed=[3, 4])
    f = x.numpy().reshape(2, 24, 3)
    np.testing.assert_allclose(spatial_affinity(x).numpy(), f @ f.transpose(0, 2, 1), rtol=1e-5)
    np.testing.assert_allclose(channel_affinity(x).numpy(), f.transpose(0, 2, 1) @ f / 24, rtol=1e-5)
    np.testing.assert_allclose(pool_features(x, 2).numpy(), np_pool(x.numpy(), 2), rtol=1e-6)
    assert pool_features(tf.zeros([1, 7, 9, 2]), 4).shape == (1, 1, 2, 2)      # remainder dropped (AvgPool2d)


# ---------------------------------------------------------------- gradients ----------------------------------------
@pytest.mark.parametrize("affinity, distance", COMBOS)
@pytest.mark.parametrize("identical", [False, True])
def test_gradients_are_finite(pair, affinity, distance, identical):
    teacher, student = pair
    student = tf.Variable(np_pool(teacher, 2) if identical else student)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(feature_affinity_loss(teacher, student, affinity=affinity, distance=distance))
    grad = tape.gradient(value, student).numpy()
    assert np.isfinite(grad).all()
    if not identical:
        assert np.abs(grad).max() > 0


def test_spatial_l2_gradient_matches_the_dense_computation(pair):
    teacher, student = pair
    student = tf.Variable(student)

    def dense(s):
        diff = spatial_affinity(pool_features(teacher, 8)) - spatial_affinity(pool_features(s, 4))
        return tf.norm(diff, ord="fro", axis=[1, 2]) / 48 ** 2

    grads = []
    for fn in (lambda s: feature_affinity_loss(teacher, s), dense):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(fn(student))
        grads.append(tape.gradient(value, student).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * np.abs(grads[1]).max())


# ---------------------------------------------------------------- graph mode, registry, errors ---------------------
def test_graph_mode_with_unknown_sizes(pair):
    teacher, student = pair
    loss = FeatureAffinityLoss()
    fn = tf.function(loss, input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_allclose(fn(teacher, student).numpy(), loss(teacher, student).numpy(), rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grids differ"):
        fn(teacher, student[:, :16])


def test_registered_as_a_term():
    assert "affinity" in LOSSES and LOSSES.get("affinity").obj is FeatureAffinityLoss
    term = build_term({"type": "affinity", "weight": 0.25, "distance": "kl", "affinity": "channel"})
    assert term.inputs == ("teacher_features", "student_features") and term.weight == 0.25
    assert term.fn.get_config()["distance"] == "kl"
    x = tf.random.stateless_uniform([2, 16, 16, 3], seed=[5, 6])
    context = {"teacher_features": [tf.image.resize(x, [32, 32])], "student_features": [x]}
    assert term(context).shape == (2,)
    with pytest.raises(ValueError, match="affinity must be one of"):
        build_term({"type": "affinity", "affinity": "pixel"})


def test_errors(pair, rng):
    teacher, student = pair
    with pytest.raises(ValueError, match=r"teacher map \(2, 64, 48, 3\) pooled by 8 .* student map \(2, 16, 24, 3\)"):
        feature_affinity_loss(teacher, student[:, :16])
    with pytest.raises(ValueError, match="same channel count"):
        feature_affinity_loss(teacher, _maps(rng, (2, 32, 24, 5)), affinity="channel")
    with pytest.raises(ValueError, match="exceeds max_positions"):
        feature_affinity_loss(teacher, student, distance="l1", max_positions=40)
    assert feature_affinity_loss(teacher, student, distance="l2", max_positions=40).shape == (2,)   # l2: no P x P
    with pytest.raises(ValueError, match="distance must be one of"):
        FeatureAffinityLoss(distance="l3")
    with pytest.raises(ValueError, match="as many teacher as student"):
        feature_affinity_loss([teacher, teacher], [student])
    with pytest.raises(ValueError, match="factors for 1 feature pairs"):
        feature_affinity_loss(teacher, student, teacher_pool=[8, 8])
    with pytest.raises(ValueError, match="empty"):
        feature_affinity_loss(teacher[:, :4, :4], student[:, :2, :2])
    with pytest.raises(ValueError, match="NHWC"):
        feature_affinity_loss(teacher[0], student[0])
