"""Per-example losses against NumPy formulas."""
import numpy as np
import pytest

from tfdehaze import losses


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def test_pixel_losses_per_example(rng):
    a = rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    b = rng.uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(losses.l1(a, b), np.abs(a - b).mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(losses.mse(a, b), ((a - b) ** 2).mean(axis=(1, 2, 3)), rtol=1e-6)
    combined = losses.weighted_sum({"l1": 2.0, "mse": 0.5})(a, b)
    np.testing.assert_allclose(combined, 2 * np.abs(a - b).mean((1, 2, 3)) + 0.5 * ((a - b) ** 2).mean((1, 2, 3)),
                               rtol=1e-6)


def test_adversarial_losses_are_bce_from_logits(rng):
    real = rng.normal(0, 3, (2, 6, 6, 1)).astype("float32")
    fake = rng.normal(0, 3, (2, 6, 6, 1)).astype("float32")
    # BCE(1, x) = softplus(-x), BCE(0, x) = softplus(x)
    expected_d = 0.5 * (softplus(-real).mean((1, 2, 3)) + softplus(fake).mean((1, 2, 3)))
    np.testing.assert_allclose(losses.discriminator_loss(real, fake), expected_d, rtol=1e-5)
    np.testing.assert_allclose(losses.generator_gan_loss(fake), softplus(-fake).mean((1, 2, 3)), rtol=1e-5)
    # a confident, correct discriminator has a small loss; a fooled one a large loss
    assert float(losses.discriminator_loss(np.full((1, 4), 9.0), np.full((1, 4), -9.0))[0]) < 1e-3
    assert float(losses.generator_gan_loss(np.full((1, 4), -9.0))[0]) > 8.9


def test_unknown_loss_name():
    with pytest.raises(ValueError, match=r"unknown loss 'ssim'"):
        losses.weighted_sum({"l1": 1.0, "ssim": 1.0})
