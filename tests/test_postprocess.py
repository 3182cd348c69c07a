"""tfdehaze.postprocess: eqs. (48)-(50) by hand, range/shape, Retinex on constant and shaded images."""
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze import postprocess


def test_rescale_by_hand():
    # Half the values a, half b: mean (a + b) / 2, population std (b - a) / 2.
    a, b = 0.3, 0.5
    image = np.array([a, b] * 6, np.float32).reshape(1, 2, 2, 3)
    # d_r = 1: [mean - std, mean + std] = [a, b] -> a maps to 0 and b to 1.
    np.testing.assert_allclose(postprocess.rescale(image, d_r=1.0), (image == b).astype(np.float32), atol=1e-6)
    # d_r = 2: [mean - 2 std, mean + 2 std] = [2a - b ... ] -> a maps to 0.25, b to 0.75.
    np.testing.assert_allclose(postprocess.rescale(image, d_r=2.0), np.where(image == b, 0.75, 0.25), atol=1e-6)


def test_rescale_clips_outliers_and_uses_all_channels():
    values = np.zeros(100, np.float32)
    values[:50], values[50:99], values[99] = -1.0, 1.0, 50.0  # unclipped J with an outlier
    image = values.reshape(1, 1, 100, 1).repeat(3, axis=-1)
    image[..., 2] += 0.25  # shift one channel: a single mean/std for all channels keeps the shift
    mu, sigma = image.mean(), image.std()
    out = postprocess.rescale(image, d_r=2.0)
    expected = np.clip((image - (mu - 2 * sigma)) / (4 * sigma), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0, 0, 99].tolist() == [1.0, 1.0, 1.0]
    assert np.all(out[0, 0, :99, 2] > out[0, 0, :99, 0])


@pytest.mark.parametrize("fn", [postprocess.rescale, postprocess.multiscale_retinex])
def test_range_shape_dtype_and_tensor_input(rng, fn):
    image = rng.uniform(0, 1, (2, 24, 40, 3)).astype(np.float32)
    out = fn(tf.constant(image))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == image.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.1  # not collapsed
    np.testing.assert_array_equal(fn(image), out)


@pytest.mark.parametrize("value", [0.0, 0.4, 1.0])
def test_retinex_of_constant_image_is_finite(value):
    out = postprocess.multiscale_retinex(np.full((1, 20, 20, 3), value, np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.5)  # r = 0 everywhere: no contrast to stretch


def test_retinex_removes_smooth_shading():
    # J = shading x reflectance: a horizontal illumination ramp over a fine checkerboard.
    y, x = np.mgrid[:64, :128]
    reflectance = np.where((x // 4 + y // 4) % 2 == 0, 0.4, 0.8)
    shading = np.linspace(0.15, 1.0, 128)[None, :]
    image = np.repeat((reflectance * shading)[None, ..., None], 3, axis=-1).astype(np.float32)
    out = postprocess.multiscale_retinex(image, sigmas=(4, 8, 16))[0, ..., 0]
    left, right = out[:, 8:24].mean(), out[:, 104:120].mean()
    before = image[0, :, 8:24, 0].mean() / image[0, :, 104:120, 0].mean()
    assert before < 0.35 and abs(left - right) < 0.1, (before, left, right)
    bright, dark = reflectance[:, 8:24] == 0.8, reflectance[:, 8:24] == 0.4
    assert out[:, 8:24][bright].mean() > out[:, 8:24][dark].mean() + 0.2  # the checkerboard survives


@pytest.mark.parametrize("fn", [postprocess.rescale, postprocess.multiscale_retinex])
def test_bad_input(fn):
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        fn(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        fn(np.full((1, 8, 8, 3), np.nan, np.float32))
