"""FFA-Net's pixel attention and inner block, as used by the RFD student (Mitheran et al., "Rich Feature
Distillation with Feature Affinity Module for Efficient Image Dehazing", §3.2, eqs. 4-6; Qin et al., FFA-Net,
AAAI 2020).

- `PixelAttention`: P = x o sigmoid(conv_1x1(ReLU(conv_1x1(x)))), one weight per pixel shared by all channels (eq. 6).
- `FFABlock`: the *inner* block: r = ReLU(conv(x)) + x; r = conv(r); channel attention (eqs. 4-5); pixel attention
  (eq. 6); + x.

The channel attention is `tfdehaze.layers.attention.ChannelAttention` with ``reduction=8``: for 16 channels that is
GAP -> 16 -> 2 (ReLU) -> 16 (sigmoid) with biases, exactly FFA-Net's ``CALayer`` (its 1x1 convolutions on a 1x1 map
are the Dense layers of `ChannelAttention`).
"""
import keras
import tensorflow as tf

from tfdehaze.check import check_shape
from tfdehaze.layers.attention import ChannelAttention


@keras.saving.register_keras_serializable(package="tfdehaze")
class PixelAttention(keras.layers.Layer):
    """Pixel attention (RFD eq. 6; FFA-Net's ``PALayer``): x o sigmoid(W2 * ReLU(W1 * x + b1) + b2).

    W1 is a 1x1 convolution C -> max(C // reduction, 1), W2 one to a single channel, both with biases; the map
    (N, H, W, 1) multiplies every channel. For the RFD student (C = 16, reduction 8): 16 -> 2 -> 1, 37 weights.

    Args:
        reduction: hidden width = max(C // reduction, 1) (FFA-Net: 8).

    Shapes: (N, H, W, C) -> (N, H, W, C). Sub-layers: ``conv1`` (1x1, C -> hidden), ``conv2`` (1x1, hidden -> 1).

    Examples:
        >>> import tensorflow as tf
        >>> pa = PixelAttention()
        >>> y = pa(tf.ones([2, 8, 8, 16]))
        >>> tuple(y.shape), pa.count_params()          # (16*2 + 2) + (2*1 + 1)
        ((2, 8, 8, 16), 37)
        >>> tuple(pa.attention_map(tf.ones([2, 8, 8, 16])).shape)
        (2, 8, 8, 1)
    """

    def __init__(self, reduction=8, **kwargs):
        super().__init__(**kwargs)
        if int(reduction) != reduction or reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction!r}")
        self.reduction = int(reduction)

    def build(self, input_shape):
        c = check_shape(input_shape, "PixelAttention input", known_channels=True)[-1]
        hidden = max(c // self.reduction, 1)
        self.conv1 = keras.layers.Conv2D(hidden, 1, activation="relu", name="conv1", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(1, 1, activation="sigmoid", name="conv2", dtype=self.dtype_policy)
        self.conv1.build((None, None, None, c))
        self.conv2.build((None, None, None, hidden))

    def attention_map(self, x):
        """The map sigmoid(W2 ReLU(W1 x)): (N, H, W, C) -> (N, H, W, 1), values in (0, 1)."""
        return self.conv2(self.conv1(x))

    def call(self, x):
        return x * self.attention_map(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="tfdehaze")
class FFABlock(keras.layers.Layer):
    """FFA-Net's basic block, the *inner* block of the RFD student (§3.2, Fig. 3):

        r = ReLU(conv1(x)) + x          local residual (the "F(X) + X" skip of §3.2)
        r = conv2(r)
        r = CA(r)                       channel attention, eqs. (4)-(5): r o sigmoid(MLP(GAP(r)))
        r = PA(r)                       pixel attention, eq. (6)
        y = r + x

    conv1 and conv2 are C -> C convolutions with ``kernel_size`` kernels, zero "same" padding and biases (FFA-Net's
    ``default_conv``). The channel count is the input's (the block is residual).

    Args:
        kernel_size: of conv1 and conv2 (RFD: 3).
        reduction: of the channel and the pixel attention (FFA-Net: 8, i.e. 16 -> 2).

    Shapes: (N, H, W, C) -> (N, H, W, C). Sub-layers: ``conv1``, ``conv2`` (Conv2D), ``channel_attention``
    (`ChannelAttention`), ``pixel_attention`` (`PixelAttention`). Weights for C = 16, k = 3: 2 x 2320 + 82 + 37 = 4759.

    Examples:
        >>> import tensorflow as tf
        >>> block = FFABlock()
        >>> y = block(tf.zeros([1, 12, 10, 16]))
        >>> tuple(y.shape), block.count_params()
        ((1, 12, 10, 16), 4759)
    """

    def __init__(self, kernel_size=3, reduction=8, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.reduction = int(reduction)
        self.channel_attention = ChannelAttention(reduction=self.reduction, name="channel_attention")
        self.pixel_attention = PixelAttention(reduction=self.reduction, name="pixel_attention")

    def build(self, input_shape):
        c = check_shape(input_shape, "FFABlock input", known_channels=True)[-1]
        shape = (None, None, None, c)
        self.conv1 = keras.layers.Conv2D(c, self.kernel_size, padding="same", name="conv1", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(c, self.kernel_size, padding="same", name="conv2", dtype=self.dtype_policy)
        for layer in (self.conv1, self.conv2, self.channel_attention, self.pixel_attention):
            layer.build(shape)

    def call(self, x):
        r = tf.nn.relu(self.conv1(x)) + x
        r = self.conv2(r)
        r = self.channel_attention(r)
        r = self.pixel_attention(r)
        return r + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "reduction": self.reduction}
