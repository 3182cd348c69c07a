"""KDDN teacher and student (§3.1, Fig. 2): shapes on odd sizes, the feature taps are exactly the named blocks,
config round trips, registry names."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.layers import SWRCAB, ResidualInResidualGroup
from tfdehaze.layers.images import pad_to_multiple
from tfdehaze.models import KDDNStudent, KDDNTeacher, registry
from tfdehaze.models.kddn import KDDNResidualBlock


def _small(kind, **kwargs):
    if kind == "teacher":
        return KDDNTeacher(filters=8, **kwargs)
    return KDDNStudent(filters=8, **{"blocks": 1, **kwargs})


@pytest.fixture
def image(rng):
    return rng.uniform(size=(2, 37, 50, 3)).astype(np.float32)


def _by_hand(model, x):
    """Every stage output and the restored image, running the sub-layers one by one (padding to 4 and cropping)."""
    padded, crop = pad_to_multiple(tf.constant(x), 4)
    h = model.down2(model.down1(padded))
    stages = {}
    for i in range(1, model._stages + 1):
        h = model.stage(i)(h)
        stages[i] = h.numpy()
    restored = crop(0.5 * (tf.tanh(model.last(model.up2(model.up1(h)))) + 1.0)).numpy()
    return stages, restored


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_odd_sizes_shapes_and_range(kind, image):
    model = _small(kind)
    out = model(image, training=False)
    assert set(out) == {"dehazed"} and out["dehazed"].shape == (2, 37, 50, 3)
    assert 0.0 < float(tf.reduce_min(out["dehazed"])) and float(tf.reduce_max(out["dehazed"])) < 1.0
    out = model(image, training=False, return_features=True)
    assert set(out) == {"dehazed", "features"} and len(out["features"]) == 3
    assert all(f.shape == (2, 10, 13, 8) for f in out["features"])          # ceil(37 / 4), ceil(50 / 4)
    assert model.feature_channels == (8, 8, 8)


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_default_taps_are_stages_2_4_6(kind, image, rng):
    """All three pairs come back (the unofficial code's zero-based taps lost the last), and they are the outputs of
    residual blocks / RIR groups 2, 4 and 6, the last one included."""
    model = _small(kind)
    model(image)
    model.set_weights([rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in model.get_weights()])
    assert model.feature_taps == (2, 4, 6) and model._stages == 6
    stages, restored = _by_hand(model, image)
    out = model(image, return_features=True)
    for got, index in zip(out["features"], (2, 4, 6), strict=True):
        np.testing.assert_allclose(got.numpy(), stages[index], rtol=1e-5, atol=1e-5)
    assert np.abs(stages[6] - stages[5]).max() > 1e-3                         # block 6 differs from block 5
    np.testing.assert_allclose(out["dehazed"].numpy(), restored, rtol=1e-5, atol=1e-5)


def test_custom_taps_keep_their_order(image):
    model = _small("student", groups=3, feature_taps=(3, 1))
    out = model(image[:1], return_features=True)
    stages, _ = _by_hand(model, image[:1])
    np.testing.assert_allclose(out["features"][0].numpy(), stages[3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["features"][1].numpy(), stages[1], rtol=1e-5, atol=1e-5)
    assert KDDNTeacher(res_blocks=4, feature_taps=4).feature_taps == (4,)


@pytest.mark.parametrize("taps, match", [((0, 2, 4), r"1-based .* each in 1\.\.6.*invalid: \[0\]"),
                                         ((2, 4, 7), r"invalid: \[7\]"), ((), "1-based"),
                                         ((2, 2), "must not repeat"), ((1.5,), "invalid"), ("ab", "invalid")])
def test_bad_taps_are_rejected(taps, match):
    with pytest.raises(ValueError, match=match):
        KDDNStudent(feature_taps=taps)
    with pytest.raises(ValueError, match=match):
        KDDNTeacher(feature_taps=taps)


def test_taps_beyond_a_shorter_backbone():
    with pytest.raises(ValueError, match=r"residual blocks, each in 1\.\.4.*invalid: \[6\]"):
        KDDNTeacher(res_blocks=4)
    with pytest.raises(ValueError, match=r"RIR groups, each in 1\.\.5.*invalid: \[6\]"):
        KDDNStudent(groups=5)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        KDDNStudent(groups=0)


def test_architecture_and_variable_counts():
    teacher = KDDNTeacher(filters=8)
    teacher.build((None, None, None, 3))
    assert all(isinstance(teacher.stage(i), KDDNResidualBlock) for i in range(1, 7))
    assert teacher.down1.strides == (2, 2) and teacher.down1.kernel.shape == (3, 3, 3, 8)
    assert teacher.last.kernel.shape == (3, 3, 8, 3)
    assert len(teacher.trainable_weights) == 2 * 2 + 6 * 4 + 2 * 2 + 2
    student = KDDNStudent(filters=8, groups=6, blocks=3, reduction=2)
    student.build((None, None, None, 3))
    group = student.stage(6)
    assert isinstance(group, ResidualInResidualGroup) and group.blocks == 3
    assert isinstance(group.block3, SWRCAB) and group.block3.reduction == 2
    assert len(student.trainable_weights) == 2 * 2 + 6 * (3 * 10 + 2) + 2 * 2 + 2


def _conv(c_in, c_out):                 # every KDDN convolution: 3x3 with bias
    return 9 * c_in * c_out + c_out


def _kddn_parameters(kind, f=64, stages=6, blocks=3, reduction=1):
    """KDDN's weights by hand from §3.1 and Figs. 2-3: down (2 stride-2 convs), the body, up (2 convs; bilinear
    upsampling has no weights), the last conv to RGB. Teacher stage: a residual block of two convs. Student stage:
    an RIR group of ``blocks`` SWRCABs (conv1, spatial, conv2, then the channel attention's linear layer C -> C, or
    a squeeze C -> C / r first) and the group's closing conv."""
    path = _conv(3, f) + _conv(f, f) + 2 * _conv(f, f) + _conv(f, 3)
    if kind == "teacher":
        return path + stages * 2 * _conv(f, f)
    hidden = f // reduction
    attention = f * f + f if reduction == 1 else (f * hidden + hidden) + (hidden * f + f)
    swrcab = 3 * _conv(f, f) + attention
    return path + stages * (blocks * swrcab + _conv(f, f))


def test_paper_configuration_parameter_counts():
    """The paper's sizes (64 channels; teacher 6 residual blocks; student 6 RIR groups x 3 SWRCABs) have the weights
    counted by hand from the paper's description: 557,443 and 2,404,867."""
    teacher, student = registry.build("kddn-teacher"), registry.build("kddn")
    for model in (teacher, student):
        model.build((None, None, None, 3))
    assert teacher.count_params() == _kddn_parameters("teacher") == 557_443
    assert student.count_params() == _kddn_parameters("student") == 2_404_867
    assert student.stage(1).count_params() == 3 * (3 * _conv(64, 64) + 64 * 64 + 64) + _conv(64, 64)


@pytest.mark.parametrize("kind, fewer", [("student", {"groups": 5, "feature_taps": (1, 3, 5)}),
                                         ("student", {"blocks": 2}), ("student", {"reduction": 4}),
                                         ("teacher", {"res_blocks": 4, "feature_taps": (2, 4)})])
def test_a_smaller_backbone_drops_exactly_its_part(kind, fewer, image):
    """One RIR group / one SWRCAB per group / a squeezed channel attention / two residual blocks fewer: the count
    falls by exactly that part, and the shared down / up path keeps its weights."""
    make = KDDNTeacher if kind == "teacher" else KDDNStudent
    base, small = make(filters=8), make(filters=8, **fewer)
    for model in (base, small):
        model.build((None, None, None, 3))
    stages = fewer.get("groups", fewer.get("res_blocks", 6))
    options = {k: v for k, v in fewer.items() if k in ("blocks", "reduction")}
    assert base.count_params() == _kddn_parameters(kind, f=8)
    assert small.count_params() == _kddn_parameters(kind, f=8, stages=stages, **options) < base.count_params()
    assert small._stages == stages and not hasattr(small, f"stage{stages + 1}")
    out = small(image[:1], return_features=True)
    assert len(out["features"]) == len(small.feature_taps)


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_config_round_trip_and_keras_file(kind, image, tmp_path):
    model = _small(kind, feature_taps=(1, 6)) if kind == "teacher" else _small(kind, groups=2, feature_taps=(2,))
    expected = model(image, return_features=True)
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone(image)
    clone.set_weights(model.get_weights())
    got = clone(image, return_features=True)
    np.testing.assert_array_equal(got["dehazed"].numpy(), expected["dehazed"].numpy())
    np.testing.assert_array_equal(got["features"][-1].numpy(), expected["features"][-1].numpy())
    path = tmp_path / "kddn.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and loaded.feature_taps == model.feature_taps
    np.testing.assert_array_equal(loaded(image)["dehazed"].numpy(), expected["dehazed"].numpy())


def test_checkpoint_restores_every_weight(tmp_path, image):
    model = _small("student", groups=2, feature_taps=(1, 2))
    model(image)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = _small("student", groups=2, feature_taps=(1, 2))
    fresh(tf.zeros([1, 32, 32, 3]))
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(fresh(image)["dehazed"].numpy(), model(image)["dehazed"].numpy())


def test_registry_names():
    teacher, student = registry.build("kddn-teacher"), registry.build("kddn")
    assert isinstance(teacher, KDDNTeacher) and isinstance(student, KDDNStudent)
    assert (teacher.filters, teacher.res_blocks, teacher.feature_taps) == (64, 6, (2, 4, 6))
    assert (student.filters, student.groups, student.blocks, student.reduction) == (64, 6, 3, 1)
    assert student.feature_taps == (2, 4, 6) and student.feature_channels == (64, 64, 64)
    assert registry.describe()["kddn"] and registry.describe()["kddn-teacher"]
    small = registry.build("kddn", filters=8, groups=2, blocks=1, feature_taps=[1, 2])
    assert small.feature_taps == (1, 2)


def test_gradients_are_finite(image):
    model = _small("student", groups=2, feature_taps=(1, 2))
    with tf.GradientTape() as tape:
        out = model(image, training=True, return_features=True)
        loss = tf.reduce_mean(tf.abs(out["dehazed"] - image)) + tf.reduce_mean(tf.square(out["features"][0]))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
