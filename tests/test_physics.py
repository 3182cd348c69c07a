"""tfdehaze.physics: scattering model round trip, clamp, dark channel vs a naive reference, per-image airlight
estimators, and the dark-channel-prior baseline on synthetic, bundled and real hazy images."""
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from tfdehaze import physics
from tfdehaze.metrics import psnr


def test_haze_by_hand():
    hazy = physics.haze([[[[0.2, 0.4, 1.0]]]], [[[[0.5]]]], [[[[0.8, 0.8, 0.6]]]])
    np.testing.assert_allclose(hazy.numpy().ravel(), [0.5, 0.6, 0.8], atol=1e-7)


@pytest.mark.parametrize("t_channels", [1, 3])
def test_haze_dehaze_round_trip_and_clamp(rng, t_channels):
    t_min = 0.05
    clear = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    t = rng.uniform(0.01, 1.0, (2, 16, 16, t_channels)).astype(np.float32)
    airlight = rng.uniform(0.7, 1.0, (2, 1, 1, 3)).astype(np.float32)
    hazy = physics.haze(clear, t, airlight).numpy()
    restored = physics.dehaze(hazy, t, airlight, t_min=t_min).numpy()
    kept = np.broadcast_to(t >= t_min, restored.shape)
    clamped = ~kept
    assert kept.any() and clamped.any()
    np.testing.assert_allclose(restored[kept], clear[kept], atol=1e-5)
    expected = (hazy - airlight) / t_min + airlight  # the clamp, where t < t_min
    np.testing.assert_allclose(restored[clamped], expected[clamped], rtol=1e-5, atol=1e-5)


def test_dehaze_clamp_value_by_hand_and_unclipped():
    # I = 0.5, A = 0.9, t = 0.01 < t_min = 0.05: J = (0.5 - 0.9) / 0.05 + 0.9 = -7.1 (no clipping).
    j = physics.dehaze([[[[0.5, 0.5, 0.5]]]], [[[[0.01]]]], [[[[0.9, 0.9, 0.9]]]], t_min=0.05)
    np.testing.assert_allclose(j.numpy().ravel(), [-7.1] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="t_min"):
        physics.dehaze(j, [[[[0.5]]]], [[[[0.9, 0.9, 0.9]]]], t_min=0.0)


def test_dehaze_gradient_wrt_transmission():
    hazy = tf.constant([[[[0.5, 0.6, 0.7]], [[0.3, 0.2, 0.1]]]])  # (1, 2, 1, 3)
    airlight = tf.constant([[[[0.9, 0.8, 0.7]]]])
    t = tf.Variable([[[[0.4]], [[0.02]]]])  # second pixel below t_min
    with tf.GradientTape() as tape:
        j = tf.reduce_sum(physics.dehaze(hazy, t, airlight, t_min=0.05))
    grad = tape.gradient(j, t).numpy().ravel()
    # dJ/dt = -(I - A) / t^2 summed over channels where t >= t_min; 0 where clamped.
    expected0 = -np.sum(np.array([0.5, 0.6, 0.7]) - np.array([0.9, 0.8, 0.7])) / 0.4 ** 2
    np.testing.assert_allclose(grad, [expected0, 0.0], rtol=1e-5)


def test_transmission_from_depth():
    depth = np.linspace(0, 2, 2 * 4 * 5).reshape(2, 4, 5, 1).astype(np.float32)
    beta = np.array([0.6, 1.8], np.float32)
    t = physics.transmission_from_depth(depth, beta).numpy()
    np.testing.assert_allclose(t, np.exp(-beta[:, None, None, None] * depth), rtol=1e-6)
    np.testing.assert_allclose(physics.transmission_from_depth(depth, 1.0).numpy(), np.exp(-depth), rtol=1e-6)


def test_sample_haze_parameters():
    airlight, beta = physics.sample_haze_parameters(500, seed=3)
    assert airlight.shape == (500, 1, 1, 3) and beta.shape == (500,)
    assert airlight.dtype == np.float32 and beta.dtype == np.float32
    assert 0.7 <= airlight.min() and airlight.max() <= 1.0 and 0.6 <= beta.min() and beta.max() <= 1.8
    assert airlight.max() - airlight.min() > 0.25 and beta.max() - beta.min() > 1.0  # actually spread
    np.testing.assert_array_equal(airlight[..., 0], airlight[..., 2])  # gray, as in RESIDE
    again, _ = physics.sample_haze_parameters(500, seed=3)
    np.testing.assert_array_equal(airlight, again)
    colour, _ = physics.sample_haze_parameters(4, seed=np.random.default_rng(1), gray_airlight=False)
    assert not np.allclose(colour[..., 0], colour[..., 1])


def _naive_dark_channel(image, patch):
    n, h, w, _ = image.shape
    m = image.min(axis=-1)
    out = np.empty((n, h, w, 1), np.float32)
    before, after = (patch - 1) // 2, patch // 2
    for b in range(n):
        for i in range(h):
            for j in range(w):
                window = m[b, max(0, i - before):i + after + 1, max(0, j - before):j + after + 1]
                out[b, i, j, 0] = window.min()
    return out


@pytest.mark.parametrize("patch", [1, 3, 4, 15])
def test_dark_channel_matches_naive_reference(rng, patch):
    image = rng.uniform(0, 1, (2, 9, 13, 3)).astype(np.float32)
    np.testing.assert_array_equal(physics.dark_channel(image, patch).numpy(), _naive_dark_channel(image, patch))


def _planted(rng, size, corner, side, colour):
    image = rng.uniform(0.0, 0.5, (size, size, 3)).astype(np.float32)
    y, x = corner
    image[y:y + side, x:x + side] = colour
    return image


@pytest.mark.parametrize("method", physics.AIRLIGHT_METHODS)
def test_atmospheric_light_finds_planted_patch_per_image(rng, method):
    # Two images with bright patches at different places and of different colours: a batch-wide argmax (the
    # authors' code) would give both images the first image's colour.
    colours = np.array([[0.95, 0.9, 0.85], [0.8, 0.85, 1.0]], np.float32)
    batch = np.stack([_planted(rng, 64, (5, 40), 20, colours[0]), _planted(rng, 64, (40, 3), 20, colours[1])])
    airlight = physics.atmospheric_light(batch, method)
    assert airlight.shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(airlight.numpy().reshape(2, 3), colours)
    # The same in a traced graph with unknown image sizes.
    graph_fn = tf.function(lambda x: physics.atmospheric_light(x, method),
                           input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_array_equal(graph_fn(batch).numpy().reshape(2, 3), colours)


def test_atmospheric_light_methods_differ_as_documented(rng):
    image = _planted(rng, 64, (30, 30), 20, [0.7, 0.75, 0.8])  # a large hazy region
    image[3, 3] = [0.0, 0.0, 1.0]  # pure blue: largest HSV value, low luma
    image[60, 5] = [0.9, 0.9, 0.9]  # a small white object: largest luma, but smaller than the dark-channel patch
    lights = {m: physics.atmospheric_light(image[None], m).numpy().ravel() for m in physics.AIRLIGHT_METHODS}
    np.testing.assert_array_equal(lights["brightest_value"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(lights["brightest_luma"], [0.9, 0.9, 0.9])
    np.testing.assert_allclose(lights["dark_channel"], [0.7, 0.75, 0.8])


def test_atmospheric_light_is_constant_in_backprop(rng):
    image = tf.Variable(rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(physics.atmospheric_light(image))
    assert tape.gradient(total, image) is None
    with pytest.raises(ValueError, match="unknown airlight method"):
        physics.atmospheric_light(image, "brightest")


def _astronaut(size=128):
    image = skimage.data.astronaut().astype(np.float32) / 255.0
    return tf.image.resize(image[None], (size, size), antialias=True).numpy().clip(0, 1)


def test_dcp_dehaze_improves_psnr_on_synthetic_haze():
    clear = _astronaut(128)
    rows = np.linspace(0.3, 1.5, 128, dtype=np.float32)
    depth = np.broadcast_to(rows[None, :, None, None], (1, 128, 128, 1))  # farther towards the bottom
    t = physics.transmission_from_depth(depth, 1.2)
    airlight = np.full((1, 1, 1, 3), 0.85, np.float32)
    hazy = physics.haze(clear, t, airlight).numpy()
    out = physics.dcp_dehaze(hazy)
    assert out["dehazed"].shape == hazy.shape and out["transmission"].shape == (1, 128, 128, 1)
    assert out["airlight"].shape == (1, 1, 1, 3)
    dehazed = out["dehazed"].numpy()
    assert dehazed.min() >= 0.0 and dehazed.max() <= 1.0
    before, after = float(psnr(hazy, clear)[0]), float(psnr(dehazed, clear)[0])
    assert after > before + 3.0, (before, after)
    # The estimated transmission follows the true one (decreasing with depth).
    corr = np.corrcoef(out["transmission"].numpy().ravel(), t.numpy().ravel())[0, 1]
    assert corr > 0.4, corr
    # Given the true airlight the restoration is at least as good.
    known = physics.dcp_dehaze(hazy, airlight=0.85)
    np.testing.assert_allclose(known["airlight"].numpy(), airlight)
    assert float(psnr(known["dehazed"], clear)[0]) > before + 3.0


def test_dcp_dehaze_improves_psnr_on_bundled_sample():
    from tfdehaze.data.datasets import read_manifest
    from tfdehaze.data.sample import sample_dir
    from tfdehaze.metrics import evaluate

    root = sample_dir()
    pairs = read_manifest(root / "manifest.csv")
    scores = evaluate(lambda x: physics.dcp_dehaze(x), pairs, image_size=128, name="dcp", dataset="sample")
    assert len(scores) == len(pairs) > 0
    assert scores["psnr"].mean() > scores["hazy_psnr"].mean() + 3.0, scores[["image", "psnr", "hazy_psnr"]]


def test_dcp_dehaze_improves_psnr_on_real_sots_indoor(reference_dir):
    from tfdehaze.data.datasets import pair_folders
    from tfdehaze.metrics import evaluate

    folder = reference_dir / "sots_indoor_sample"
    pairs = pair_folders(folder / "hazy", folder / "clear")
    scores = evaluate(lambda x: physics.dcp_dehaze(x), pairs, image_size=(115, 155), name="dcp", dataset="sots")
    assert len(scores) == len(pairs) >= 10
    assert scores["psnr"].mean() > scores["hazy_psnr"].mean() + 3.0, scores[["image", "psnr", "hazy_psnr"]]


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8, 3), np.float32), r"\(N, H, W, 3\)"),
    (np.zeros((1, 8, 8, 4), np.float32), r"\(N, H, W, 3\)"),
    (np.full((1, 8, 8, 3), np.nan, np.float32), "hazy contains 192 NaN"),
    (np.full((1, 8, 8, 3), 200.0, np.float32), r"hazy must be in \[0, 1\]"),
])
def test_dcp_dehaze_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        physics.dcp_dehaze(bad)


def test_dcp_dehaze_rejects_bad_airlight():
    with pytest.raises(ValueError, match="airlight must broadcast"):
        physics.dcp_dehaze(np.full((2, 16, 16, 3), 0.5, np.float32), airlight=np.ones((3, 1, 1, 3)))
