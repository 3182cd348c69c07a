"""MI-Net's multi-level fusion (MLF, §3.2, eqs. 6-7 of Shen et al., "Implicit Euler ODE networks for single-image
dehazing", CVPRW 2020)."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdehaze")
class MultiLevelFusion(keras.layers.Layer):
    """Per-pixel weighted sum of K same-shaped feature maps, the weights predicted by one convolution.

    W = conv([x_1, ..., x_K]) (eq. 6: K weight maps from the channel concatenation),
    x = sum_i W_i o x_i (eq. 7, each W_i broadcast over the C channels of x_i).
    The authors' code: a 3x3 convolution 3C -> 3 with bias and no activation, which is the default.

    Args:
        kernel_size: of the weight convolution.
        use_bias: bias of the weight convolution.

    Shapes: ``layer([x_1, ..., x_K])``, each (N, H, W, C) -> (N, H, W, C). Weights: ``conv`` (k, k, K*C, K).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.fusion import MultiLevelFusion
        >>> x1, x2, x3 = (tf.random.uniform([2, 16, 16, 8]) for _ in range(3))
        >>> layer = MultiLevelFusion()
        >>> layer([x1, x2, x3]).shape, tuple(layer.conv.kernel.shape)
        (TensorShape([2, 16, 16, 8]), (3, 3, 24, 3))
    """

    def __init__(self, kernel_size: int = 3, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.use_bias = bool(use_bias)
        self.conv = None

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2 or any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"MultiLevelFusion needs >= 2 inputs of one shape, got {shapes}")
        self.conv = keras.layers.Conv2D(len(shapes), self.kernel_size, padding="same", use_bias=self.use_bias,
                                        name="conv", dtype=self.dtype_policy)
        self.conv.build(shapes[0][:-1] + (shapes[0][-1] * len(shapes),))

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        weights = self.conv(tf.concat(inputs, axis=-1))
        return tf.add_n([weights[..., i:i + 1] * x for i, x in enumerate(inputs)])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "use_bias": self.use_bias}
