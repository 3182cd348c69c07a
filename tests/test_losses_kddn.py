"""KDDN losses: perceptual (eq. 4) with a tiny VGG-shaped network and a real VGG19 weights file, FMIL (eq. 5),
WFMIL and the haze density maps Psi_1 / Psi_2 (eqs. 6-7)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.losses import PerceptualLoss, build_terms, fmil, haze_density, tiny_vgg, total, wfmil
from tfdehaze.losses.perceptual import DEFAULT_LAYER_WEIGHTS, DEFAULT_LAYERS, KERAS_WEIGHTS_FILE, WEIGHTS_ENV
from tfdehaze.losses.perceptual import preprocess as vgg_preprocess
from tfdehaze.registry import LOSSES

IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


@pytest.fixture
def images(rng):
    return [rng.uniform(size=(2, 32, 32, 3)).astype(np.float32) for _ in range(2)]


# --- perceptual ------------------------------------------------------------------------------------------------

def test_preprocess_is_keras_caffe_mode(images):
    x = images[0]
    expected = x[..., ::-1] * 255.0 - IMAGENET_MEAN_BGR
    np.testing.assert_allclose(vgg_preprocess(x).numpy(), expected, rtol=1e-5, atol=1e-3)


def test_perceptual_matches_hand_computation(images):
    a, b = images
    net = tiny_vgg(seed=3)
    loss = PerceptualLoss(network=net)
    assert loss.layer_weights == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0) and loss.layers == DEFAULT_LAYERS

    def caffe(x):
        return (x[..., ::-1] * 255.0 - IMAGENET_MEAN_BGR).astype(np.float32)

    fa, fb = net(caffe(a)), net(caffe(b))
    expected = sum(w * np.abs(fb[i].numpy() - fa[i].numpy()).reshape(2, -1).mean(axis=1)
                   for i, w in enumerate(DEFAULT_LAYER_WEIGHTS))
    assert all(float(np.abs(f.numpy()).max()) > 0 for f in fa)      # every tapped layer carries signal
    got = loss(a, b).numpy()
    assert got.shape == (2,) and np.all(got > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_array_equal(loss(a, a).numpy(), [0.0, 0.0])


def test_perceptual_options_and_scale(images):
    """An identity 'network' shows the input scale: 255 x the mean absolute difference; layer weights multiply."""
    a, b = images
    loss = PerceptualLoss(network=lambda x: [x, x], layer_weights=(1.0, 0.5))
    np.testing.assert_allclose(loss(a, b).numpy(), 1.5 * 255.0 * np.abs(a - b).reshape(2, -1).mean(axis=1),
                               rtol=1e-4)
    custom = PerceptualLoss(network=tiny_vgg(layers=("block1_conv2", "block3_conv4")), layer_weights=(1.0, 2.0))
    assert custom(a, b).shape == (2,)
    with pytest.raises(ValueError, match="returns 2 feature maps for 1 layer_weights"):
        PerceptualLoss(network=lambda x: [x, x], layer_weights=(1.0,))(a, b)
    with pytest.raises(ValueError, match="unknown VGG19 layers \\['block6_conv1'\\]"):
        tiny_vgg(layers=("block6_conv1",))


def test_perceptual_in_tf_function_and_strategy_with_finite_gradients(images):
    a, b = (tf.constant(x) for x in images)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        loss = PerceptualLoss(network=tiny_vgg(seed=5))
    eager = loss(a, b).numpy()

    @tf.function
    def step(clear, dehazed):
        with tf.GradientTape() as tape:
            tape.watch(dehazed)
            value = tf.reduce_sum(loss(clear, dehazed))
        return value, tape.gradient(value, dehazed)

    value, grad = step(a, b)
    np.testing.assert_allclose(float(value), eager.sum(), rtol=1e-5)
    assert bool(tf.reduce_all(tf.math.is_finite(grad))) and float(tf.reduce_max(tf.abs(grad))) > 0
    per_replica = strategy.run(tf.function(lambda x, y: loss(x, y)), args=(a, b))
    np.testing.assert_allclose(strategy.gather(per_replica, axis=0).numpy(), eager, rtol=1e-5)
    _, grad = step(a, a)                                                # identical images: zero loss, no NaN
    assert bool(tf.reduce_all(tf.math.is_finite(grad)))


def test_missing_weights_file_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        PerceptualLoss()
    message = str(info.value)
    for needle in ("weights_path", "--vgg19-weights", WEIGHTS_ENV, KERAS_WEIGHTS_FILE, "save_weights"):
        assert needle in message
    missing = tmp_path / "vgg19.h5"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*from weights_path.*{WEIGHTS_ENV}"):
        build_terms([{"type": "perceptual", "weights_path": str(missing)}])
    monkeypatch.setenv(WEIGHTS_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match=f"{missing}.*from {WEIGHTS_ENV}.*weights_path"):
        PerceptualLoss()
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="could not load VGG19 weights"):
        PerceptualLoss(weights_path=tmp_path / "junk.h5")


def test_real_vgg19_weights_file(monkeypatch, tmp_path, images):
    """The production path: Keras' VGG19 (no top) with weights from a local file (here random, saved by Keras)."""
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg19_notop.weights.h5"
    vgg.save_weights(str(path))
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    loss = build_terms([{"type": "perceptual"}])[0].fn                  # from the environment variable
    a, b = images
    reference = keras.Model(vgg.input, [vgg.get_layer(name).output for name in DEFAULT_LAYERS])
    fa, fb = reference(vgg_preprocess(a)), reference(vgg_preprocess(b))
    expected = sum(w * np.abs(fb[i].numpy() - fa[i].numpy()).reshape(2, -1).mean(axis=1)
                   for i, w in enumerate(DEFAULT_LAYER_WEIGHTS))
    np.testing.assert_allclose(loss(a, b).numpy(), expected, rtol=1e-4)
    assert [f.shape[-1] for f in fa] == [64, 128, 256, 512, 512]
    assert not loss.network.trainable_weights and loss.network.layers[-1].name == "block5_conv1"


# --- haze density ------------------------------------------------------------------------------------------------

@pytest.fixture
def hazy_pair(rng):
    """clear in [0, 0.5], t falling from 0.9 (left) to 0.1 (right), airlight 1: hazier to the right."""
    clear = rng.uniform(0.0, 0.5, size=(2, 32, 48, 3)).astype(np.float32)
    t = np.broadcast_to(np.linspace(0.9, 0.1, 48, dtype=np.float32)[None, None, :, None], (2, 32, 48, 1)).copy()
    hazy = clear * t + 1.0 * (1.0 - t)
    return hazy, clear, t


def _minmax(x):
    low = x.min(axis=(1, 2, 3), keepdims=True)
    return (x - low) / (x.max(axis=(1, 2, 3), keepdims=True) - low)


def _gray(x):
    return (x * np.array([0.299, 0.587, 0.114], np.float32)).sum(axis=-1, keepdims=True)


def test_density_maps_equal_eqs_6_7_and_grow_with_haze(hazy_pair):
    hazy, clear, t = hazy_pair
    psi1 = haze_density(hazy, clear, t).numpy()                          # auto: transmission given -> Psi_1
    psi2 = haze_density(hazy, clear, t, kind="difference").numpy()
    np.testing.assert_allclose(psi1, _minmax(1.0 - t), atol=1e-5)
    np.testing.assert_allclose(psi2, _minmax(np.abs(_gray(hazy) - _gray(clear))), atol=1e-5)
    np.testing.assert_allclose(haze_density(hazy, clear).numpy(), psi2)  # auto without t -> Psi_2
    np.testing.assert_allclose(haze_density(hazy, clear, np.repeat(t, 3, -1), kind="transmission").numpy(), psi1,
                               atol=1e-6)
    for psi in (psi1, psi2):
        assert psi.shape == (2, 32, 48, 1) and psi.min() >= 0.0 and psi.max() <= 1.0
        assert np.allclose(psi.min(axis=(1, 2, 3)), 0.0) and np.allclose(psi.max(axis=(1, 2, 3)), 1.0)
        assert np.all(psi[:, :, -16:].mean(axis=(1, 2, 3)) > psi[:, :, :16].mean(axis=(1, 2, 3)) + 0.3)


@pytest.mark.parametrize("size", [(8, 12), (4, 6), (2, 3), (3, 5)])
def test_density_resized_to_feature_grids(hazy_pair, size):
    hazy, clear, t = hazy_pair
    for kind, trans in (("transmission", t), ("difference", None)):
        psi = haze_density(hazy, clear, trans, kind=kind, size=size).numpy()
        assert psi.shape == (2, *size, 1) and psi.min() >= 0.0 and psi.max() <= 1.0
        columns = psi.mean(axis=(1, 3))                                   # (N, w)
        assert np.all(columns[:, -1] > columns[:, 0])


def test_flat_density_is_uniform_not_nan(images):
    a = images[0]
    psi = haze_density(a, a).numpy()                                      # no haze at all: |I_g - J_g| = 0
    np.testing.assert_array_equal(psi, np.ones_like(psi))
    psi = haze_density(a, a, np.full((2, 32, 32, 1), 0.7, np.float32)).numpy()
    np.testing.assert_array_equal(psi, np.ones_like(psi))
    with pytest.raises(ValueError, match="needs transmission maps"):
        haze_density(a, a, kind="transmission")
    with pytest.raises(ValueError, match="kind must be one of"):
        haze_density(a, a, kind="depth")


# --- FMIL / WFMIL ------------------------------------------------------------------------------------------------

@pytest.fixture
def features(rng):
    shapes = [(2, 8, 12, 4), (2, 8, 12, 4), (2, 4, 6, 8)]
    teacher = [rng.normal(size=s).astype(np.float32) for s in shapes]
    student = [rng.normal(size=s).astype(np.float32) for s in shapes]
    return teacher, student


def test_fmil_equals_numpy(features):
    teacher, student = features
    per_pair = [np.abs(t - s).reshape(2, -1).mean(axis=1) for t, s in zip(teacher, student, strict=True)]
    np.testing.assert_allclose(fmil(teacher, student).numpy(), np.mean(per_pair, axis=0), rtol=1e-5)
    np.testing.assert_allclose(fmil(teacher, student, pair_reduction="sum").numpy(), np.sum(per_pair, axis=0),
                               rtol=1e-5)
    np.testing.assert_array_equal(fmil(teacher, teacher).numpy(), [0.0, 0.0])
    with pytest.raises(ValueError, match="as many student as teacher"):
        fmil(teacher, student[:2])
    with pytest.raises(ValueError, match="1x1 adapters"):
        fmil(teacher[:1], [student[2]])
    with pytest.raises(ValueError, match="pair_reduction"):
        fmil(teacher, student, pair_reduction="max")


def test_wfmil_equals_numpy_on_the_image_grid(hazy_pair, rng):
    """Features on the image's own grid: Psi is exactly eq. 7's map and eq. 6 is mean(Psi * |T - S|)."""
    hazy, clear, t = hazy_pair
    teacher = [rng.normal(size=(2, 32, 48, 4)).astype(np.float32) for _ in range(2)]
    student = [rng.normal(size=(2, 32, 48, 4)).astype(np.float32) for _ in range(2)]
    for trans, psi in ((t, _minmax(1.0 - t)), (None, _minmax(np.abs(_gray(hazy) - _gray(clear))))):
        expected = np.mean([(psi * np.abs(a - b)).reshape(2, -1).mean(axis=1)
                            for a, b in zip(teacher, student, strict=True)], axis=0)
        np.testing.assert_allclose(wfmil(teacher, student, hazy, clear, trans).numpy(), expected, rtol=1e-4)


def test_wfmil_on_feature_grids(hazy_pair, features):
    hazy, clear, t = hazy_pair
    teacher, student = features
    expected = []
    for a, b in zip(teacher, student, strict=True):
        psi = haze_density(hazy, clear, t, size=a.shape[1:3]).numpy()    # (N, h, w, 1), broadcast over channels
        expected.append((psi * np.abs(a - b)).reshape(2, -1).mean(axis=1))
    got = wfmil(teacher, student, hazy, clear, t)
    np.testing.assert_allclose(got.numpy(), np.mean(expected, axis=0), rtol=1e-5)
    assert np.all(got.numpy() < fmil(teacher, student).numpy())           # 0 <= Psi <= 1
    by_difference = wfmil(teacher, student, hazy, clear, t, density="difference").numpy()
    np.testing.assert_allclose(by_difference, wfmil(teacher, student, hazy, clear).numpy())
    assert not np.allclose(by_difference, got.numpy())


def test_wfmil_upweights_the_hazy_side(hazy_pair):
    """The same feature error costs more where the haze is thick (right) than where it is thin (left)."""
    hazy, clear, t = hazy_pair
    teacher = [np.zeros((2, 8, 12, 4), np.float32)]
    left, right = np.zeros_like(teacher[0]), np.zeros_like(teacher[0])
    left[:, :, :3], right[:, :, -3:] = 1.0, 1.0
    for trans in (t, None):
        assert np.all(wfmil(teacher, [right], hazy, clear, trans).numpy()
                      > wfmil(teacher, [left], hazy, clear, trans).numpy() + 0.05)
    np.testing.assert_allclose(fmil(teacher, [right]).numpy(), fmil(teacher, [left]).numpy())


def test_wfmil_gradients_finite_in_tf_function(hazy_pair, features):
    hazy, clear, t = hazy_pair
    teacher, student = features
    student = [tf.Variable(s) for s in student]

    @tf.function
    def grads(hazy, clear, transmission):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(wfmil(teacher, student, hazy, clear, transmission))
        return tape.gradient(value, student)

    for h, c, trans in ((hazy, clear, t), (hazy, clear, None), (clear, clear, None)):
        for g in grads(h, c, trans):
            assert g is not None and bool(tf.reduce_all(tf.math.is_finite(g))) and float(tf.reduce_max(tf.abs(g))) > 0


def test_registered_terms_read_the_distillation_context(hazy_pair, features):
    hazy, clear, t = hazy_pair
    teacher, student = features
    assert LOSSES.get("fmil").obj.inputs == ("teacher_features", "student_features")
    assert LOSSES.get("wfmil").obj.inputs == ("teacher_features", "student_features", "hazy", "clear",
                                               "transmission?")             # optional: None without maps
    assert LOSSES.get("perceptual").obj.inputs == ("clear", "dehazed")
    terms = build_terms([{"type": "fmil"}, {"type": "wfmil", "weight": 2.0, "density": "difference"}])
    context = {"teacher_features": teacher, "student_features": student, "hazy": hazy, "clear": clear,
               "transmission": t}
    loss, parts = total(terms, context)
    np.testing.assert_allclose(parts["fmil"].numpy(), fmil(teacher, student).numpy())
    np.testing.assert_allclose(parts["wfmil"].numpy(), wfmil(teacher, student, hazy, clear).numpy())
    np.testing.assert_allclose(loss.numpy(), parts["fmil"].numpy() + 2.0 * parts["wfmil"].numpy(), rtol=1e-6)
