"""Channel attention blocks.

- `ChannelAttention`: squeeze-and-excitation channel attention x o sigmoid(MLP(GAP(x))), the "ordinary attention
  block" of MI-Net's ablation (Table 2, OA).
- `ResidualChannelAttention`: MI-Net's RCA-block (Shen et al., CVPRW 2020, §3.3, eqs. 8-9, Fig. 5).
"""
import keras
import tensorflow as tf


def _check_channels(input_shape, name):
    if input_shape[-1] is None:
        raise ValueError(f"{name} needs a known channel count, got input shape {tuple(input_shape)}")
    return int(input_shape[-1])


@keras.saving.register_keras_serializable(package="tfdehaze")
class ChannelAttention(keras.layers.Layer):
    """x o sigmoid(W2 ReLU(W1 GAP(x))) (squeeze-and-excitation; MI-Net's ordinary attention, Table 2 "OA").

    Args:
        reduction: hidden width of the MLP = max(C // reduction, 1).

    Shapes: (N, H, W, C) -> (N, H, W, C).
    """

    def __init__(self, reduction=16, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)

    def build(self, input_shape):
        c = _check_channels(input_shape, "ChannelAttention")
        self.dense1 = keras.layers.Dense(max(c // self.reduction, 1), activation="relu", name="dense1")
        self.dense2 = keras.layers.Dense(c, activation="sigmoid", name="dense2")
        self.dense1.build((None, c))
        self.dense2.build((None, max(c // self.reduction, 1)))

    def call(self, x):
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
    """

    def __init__(self, reduction=16, mlp="channels", mlp_activation="relu", **kwargs):
        super().__init__(**kwargs)
        if mlp not in ("channels", "scalar"):
            raise ValueError(f"mlp must be 'channels' or 'scalar', got {mlp!r}")
        self.reduction = int(reduction)
        self.mlp = mlp
        self.mlp_activation = mlp_activation

    def build(self, input_shape):
        c = _check_channels(input_shape, "ResidualChannelAttention")
        hidden, out = (max(c // self.reduction, 1), c) if self.mlp == "channels" else (1, 1)
        self.conv = keras.layers.Conv2D(c, 1, name="conv")
        self.dense1 = keras.layers.Dense(hidden, activation=self.mlp_activation, name="dense1")
        self.dense2 = keras.layers.Dense(out, name="dense2")
        self.conv.build(input_shape)
        self.dense1.build((None, c if self.mlp == "channels" else 1))
        self.dense2.build((None, hidden))

    def call(self, x):
        d = tf.reduce_mean(self.conv(x), axis=[1, 2], keepdims=True)            # (N, 1, 1, C)
        if self.mlp == "scalar":
            psi = tf.squeeze(self.dense2(self.dense1(d[..., None])), axis=-1)   # each channel alone
        else:
            psi = self.dense2(self.dense1(d))
        return x + tf.sigmoid(psi) * x

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "mlp": self.mlp,
                "mlp_activation": self.mlp_activation}
