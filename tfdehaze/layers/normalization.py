"""Instance normalisation (Ulyanov et al., "Instance Normalization: The Missing Ingredient for Fast Stylization",
2016), as used by the Pix2Pix backbone and discriminator of Guided-Pix2Pix and by MI-Net.

Keras 3 has no instance norm layer; `GroupNormalization` with one group per channel (``groups=-1``) is exactly it
(equal to a numpy instance norm to ~2e-7, tests/layers/test_normalization.py). This module only fixes the group
count and the epsilon of the authors' code (1e-5) and registers the class, so models that use it serialise by name.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="tfdehaze")
class InstanceNormalization(keras.layers.GroupNormalization):
    """Affine instance normalisation over H and W, per image and channel.

    y = gamma * (x - mean_hw(x)) / sqrt(var_hw(x) + epsilon) + beta, with gamma, beta of shape (C,).

    Args:
        epsilon: added to the (biased) variance, 1e-5 as in the authors' code and PyTorch.
        **kwargs: any other `keras.layers.GroupNormalization` argument (center, scale, gamma_initializer, ...)
            except ``groups``, which is fixed to one group per channel.

    Shapes: (N, H, W, C) -> (N, H, W, C). Weights: gamma (C,), beta (C,).

    Examples:
        >>> import numpy as np
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.normalization import InstanceNormalization
        >>> x = tf.random.uniform([2, 16, 16, 3], maxval=10.0)
        >>> y = InstanceNormalization()(x)
        >>> y.shape, bool(np.allclose(tf.reduce_mean(y, axis=[1, 2]), 0.0, atol=1e-5))
        (TensorShape([2, 16, 16, 3]), True)
        >>> np.round(tf.math.reduce_std(y, axis=[1, 2]).numpy(), 3)  # unit variance per image and channel
        array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        groups = kwargs.pop("groups", -1)
        if groups != -1:
            raise ValueError(f"InstanceNormalization uses one group per channel (groups=-1), got groups={groups!r}")
        super().__init__(groups=-1, epsilon=epsilon, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("groups")
        return config
