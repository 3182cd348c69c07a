"""Channel attention blocks.

- `ChannelAttention`: squeeze-and-excitation channel attention x o sigmoid(MLP(GAP(x))), the "ordinary attention
  block" of MI-Net's ablation (Table 2, OA).
- `ResidualChannelAttention`: MI-Net's RCA-block (§3.3, eqs. 8-9, Fig. 5).

MI-Net is Shen et al., "Implicit Euler ODE networks for single-image dehazing" (CVPRW 2020).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfdehaze.check import check_shape


@keras.saving.register_keras_serializable(package="tfdehaze")
class ChannelAttention(keras.layers.Layer):
    """x o sigmoid(W2 ReLU(W1 GAP(x))) (squeeze-and-excitation; MI-Net's ordinary attention, Table 2 "OA").

    Args:
        reduction: hidden width of the MLP = max(C // reduction, 1).

    Shapes: (N, H, W, C) -> (N, H, W, C). Sub-layers: dense1 (C -> C // reduction), dense2 (-> C).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.attention import ChannelAttention
        >>> layer = ChannelAttention(reduction=4)
        >>> x = tf.random.uniform([2, 8, 8, 16])
        >>> y = layer(x)
        >>> y.shape, tuple(layer.dense1.kernel.shape)
        (TensorShape([2, 8, 8, 16]), (16, 4))
        >>> bool(tf.reduce_all(tf.abs(y) <= x))  # each channel scaled by a weight in (0, 1)
        True
    """

    def __init__(self, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)

    def build(self, input_shape):
        c = check_shape(input_shape, "ChannelAttention input", known_channels=True)[-1]
        self.dense1 = keras.layers.Dense(max(c // self.reduction, 1), activation="relu", name="dense1",
                                         dtype=self.dtype_policy)
        self.dense2 = keras.layers.Dense(c, activation="sigmoid", name="dense2", dtype=self.dtype_policy)
        self.dense1.build((None, c))
        self.dense2.build((None, max(c // self.reduction, 1)))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x * self.dense2(self.dense1(tf.reduce_mean(x, axis=[1, 2], keepdims=True)))

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="tfdehaze")
class ResidualChannelAttention(keras.layers.Layer):
    """RCA-block: Psi = sigmoid(MLP(GAP(conv_1x1(x)))) (eq. 8), x_r = Psi o x + x (eq. 9).

    Args:
        reduction: with ``mlp="channels"``, the MLP is Dense(C // reduction, activation) -> Dense(C) across the
            channel descriptor (the paper's two fully connected layers).
        mlp: ``"channels"`` (paper) or ``"scalar"``: the authors' released code, whose two fully connected layers
            are 1 -> 1 affine maps applied to each channel's descriptor alone (weights shared by all channels).
        mlp_activation: between the two layers; the authors' code has none (None), the paper is silent; "relu"
            by default for the channel MLP.

    Shapes: (N, H, W, C) -> (N, H, W, C). Sub-layers: conv (1x1, C -> C, bias), dense1, dense2.

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.attention import ResidualChannelAttention
        >>> x = tf.random.uniform([2, 8, 8, 16])
        >>> layer = ResidualChannelAttention(reduction=4)
        >>> y = layer(x)
        >>> y.shape, bool(tf.reduce_all((x <= y) & (y <= 2 * x)))  # x_r = Psi o x + x with Psi in (0, 1)
        (TensorShape([2, 8, 8, 16]), True)
        >>> scalar = ResidualChannelAttention(mlp="scalar", mlp_activation=None)  # the authors' code
        >>> scalar(x).shape, tuple(scalar.dense1.kernel.shape)
        (TensorShape([2, 8, 8, 16]), (1, 1))
    """

    def __init__(self, reduction: int = 16, mlp: str = "channels", mlp_activation: str | None = "relu", **kwargs):
        super().__init__(**kwargs)
        if mlp not in ("channels", "scalar"):
            raise ValueError(f"mlp must be 'channels' or 'scalar', got {mlp!r}")
        self.reduction = int(reduction)
        self.mlp = mlp
        self.mlp_activation = mlp_activation

    def build(self, input_shape):
        c = check_shape(input_shape, "ResidualChannelAttention input", known_channels=True)[-1]
        hidden, out = (max(c // self.reduction, 1), c) if self.mlp == "channels" else (1, 1)
        self.conv = keras.layers.Conv2D(c, 1, name="conv", dtype=self.dtype_policy)
        self.dense1 = keras.layers.Dense(hidden, activation=self.mlp_activation, name="dense1", dtype=self.dtype_policy)
        self.dense2 = keras.layers.Dense(out, name="dense2", dtype=self.dtype_policy)
        self.conv.build(input_shape)
        self.dense1.build((None, c if self.mlp == "channels" else 1))
        self.dense2.build((None, hidden))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        d = tf.reduce_mean(self.conv(x), axis=[1, 2], keepdims=True)            # (N, 1, 1, C)
        if self.mlp == "scalar":
            psi = tf.squeeze(self.dense2(self.dense1(d[..., None])), axis=-1)   # each channel alone
        else:
            psi = self.dense2(self.dense1(d))
        return x + tf.sigmoid(psi) * x

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "mlp": self.mlp,
                "mlp_activation": self.mlp_activation}
