import keras
import numpy as np
import pytest

from tfdehaze.layers.normalization import InstanceNormalization


def numpy_instance_norm(x, gamma, beta, eps):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, as instance norm uses
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def test_matches_numpy_instance_norm(rng):
    x = (rng.normal(size=(2, 9, 7, 5)) * rng.uniform(0.1, 10, size=(2, 1, 1, 5)) + 3).astype(np.float32)
    layer = InstanceNormalization()
    layer.build(x.shape)
    gamma = rng.normal(1.0, 0.5, size=5).astype(np.float32)
    beta = rng.normal(size=5).astype(np.float32)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(layer(x).numpy(), numpy_instance_norm(x, gamma, beta, 1e-5), atol=2e-5, rtol=1e-5)


def test_epsilon_is_1e5_and_matters_for_flat_channels():
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[..., 1] = 1e-3 * np.arange(16).reshape(4, 4)  # variance ~2e-5, comparable to eps
    layer = InstanceNormalization()
    expected = numpy_instance_norm(x, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    assert np.abs(expected - numpy_instance_norm(x, 1.0, 0.0, 1e-3)).max() > 0.1


def test_serialises_by_registered_name():
    layer = InstanceNormalization(epsilon=1e-3, center=False)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is InstanceNormalization
    assert clone.epsilon == 1e-3 and clone.center is False and clone.groups == -1


def test_rejects_other_group_counts():
    with pytest.raises(ValueError, match="groups=2"):
        InstanceNormalization(groups=2)
