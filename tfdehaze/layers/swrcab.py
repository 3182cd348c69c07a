"""KDDN's student blocks (Hong et al., CVPR 2020, §3.1, Figs. 2-3).

- `SWRCAB`: the spatially weighted residual channel attention block (Fig. 3). Unlike a squeeze-and-excitation
  block, the global average pool that produces the channel attention sees the features already weighted by a
  learned spatial map, so densely hazy regions count more in each channel's weight::

      x1 = ReLU(conv1(x))                      3x3, C -> C
      S  = sigmoid(spatial(x1))                3x3, C -> C: a spatial weight per pixel and channel
      x2 = conv2(x1)                           3x3, C -> C
      w  = sigmoid(excite(GAP(x2 * S)))        (N, 1, 1, C): one linear layer C -> C (reduction 1, the default);
                                               reduction r > 1: squeeze Dense(C // r, ReLU) first, as in SE
      y  = x2 * w + x

- `ResidualInResidualGroup`: one "RIR" of the student backbone (Fig. 2; after RCAN, the paper's ref. [35]):
  ``blocks`` SWRCABs, a 3x3 conv, and a skip around the group: ``y = conv(SWRCAB_n(...SWRCAB_1(x))) + x``.

Every convolution is 3x3, stride 1, "same" padding, with bias; the channel count C is the input's.
"""
import keras
import tensorflow as tf


def _channels(input_shape, name):
    if input_shape[-1] is None:
        raise ValueError(f"{name} needs a known channel count, got input shape {tuple(input_shape)}")
    return int(input_shape[-1])


def _positive_int(value, key):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="tfdehaze")
class SWRCAB(keras.layers.Layer):
    """Spatially weighted residual channel attention block (KDDN §3.1, Fig. 3).

    ``y = x2 * sigmoid(excite(GAP(x2 * S))) + x`` with ``x1 = ReLU(conv1(x))``, ``S = sigmoid(spatial(x1))`` and
    ``x2 = conv2(x1)``; all convolutions 3x3, C -> C. The paper describes the channel branch as "a global average
    pooling layer followed by a linear transform layer and a Sigmoid": with ``reduction=1`` (the default) that is
    one Dense(C) layer; ``reduction=r > 1`` puts a Dense(max(C // r, 1), ReLU) squeeze before it, as in SE blocks.

    Args:
        reduction: channel reduction ratio of the attention branch (1: a single C -> C linear layer).

    Shapes: (N, H, W, C) -> (N, H, W, C). Sub-layers: ``conv1``, ``spatial``, ``conv2``, ``excite`` (and
    ``squeeze`` when ``reduction > 1``).

    Examples:
        >>> import numpy as np
        >>> block = SWRCAB()
        >>> y = block(np.zeros((2, 8, 10, 4), np.float32))
        >>> tuple(y.shape), tuple(block.excite.kernel.shape)
        ((2, 8, 10, 4), (4, 4))
        >>> SWRCAB.from_config(SWRCAB(reduction=2).get_config()).reduction
        2
    """

    def __init__(self, reduction: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.reduction = _positive_int(reduction, "reduction")

    def build(self, input_shape):
        c = _channels(input_shape, "SWRCAB")
        self.conv1 = keras.layers.Conv2D(c, 3, padding="same", activation="relu", name="conv1", dtype=self.dtype_policy)
        self.spatial = keras.layers.Conv2D(c, 3, padding="same", activation="sigmoid", name="spatial",
                                           dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(c, 3, padding="same", name="conv2", dtype=self.dtype_policy)
        shape = (None, None, None, c)
        self.conv1.build(shape)
        self.spatial.build(shape)
        self.conv2.build(shape)
        width = c
        if self.reduction > 1:
            width = max(c // self.reduction, 1)
            self.squeeze = keras.layers.Dense(width, activation="relu", name="squeeze", dtype=self.dtype_policy)
            self.squeeze.build((None, c))
        self.excite = keras.layers.Dense(c, activation="sigmoid", name="excite", dtype=self.dtype_policy)
        self.excite.build((None, width))

    def call(self, x):
        x1 = self.conv1(x)
        weighted = self.conv2(x1)
        pooled = tf.reduce_mean(weighted * self.spatial(x1), axis=[1, 2])          # (N, C)
        if self.reduction > 1:
            pooled = self.squeeze(pooled)
        w = self.excite(pooled)[:, None, None, :]                                   # (N, 1, 1, C)
        return weighted * w + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="tfdehaze")
class ResidualInResidualGroup(keras.layers.Layer):
    """One residual-in-residual group of KDDN's student backbone (§3.1, Fig. 2): ``blocks`` `SWRCAB` s, then a 3x3
    convolution (C -> C), plus a skip connection around the whole group.

    ``y = conv(SWRCAB_blocks(... SWRCAB_1(x))) + x``. The paper's student has 6 groups of 3 blocks.

    Args:
        blocks: number of SWRCABs (3 in the paper).
        reduction: reduction ratio of each SWRCAB's channel attention (1).

    Shapes: (N, H, W, C) -> (N, H, W, C). Sub-layers: ``block1`` ... ``block{blocks}`` (`SWRCAB`), ``conv``.

    Examples:
        >>> import numpy as np
        >>> group = ResidualInResidualGroup(blocks=2)
        >>> tuple(group(np.zeros((1, 6, 6, 8), np.float32)).shape), group.block2.reduction
        ((1, 6, 6, 8), 1)
        >>> ResidualInResidualGroup.from_config(group.get_config()).blocks
        2
    """

    def __init__(self, blocks: int = 3, reduction: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.blocks = _positive_int(blocks, "blocks")
        self.reduction = _positive_int(reduction, "reduction")

    def build(self, input_shape):
        c = _channels(input_shape, "ResidualInResidualGroup")
        shape = (None, None, None, c)
        for i in range(1, self.blocks + 1):  # attributes, not a list: tf.train.Checkpoint tracks them
            block = SWRCAB(reduction=self.reduction, name=f"block{i}", dtype=self.dtype_policy)
            block.build(shape)
            setattr(self, f"block{i}", block)
        self.conv = keras.layers.Conv2D(c, 3, padding="same", name="conv", dtype=self.dtype_policy)
        self.conv.build(shape)

    def call(self, x):
        y = x
        for i in range(1, self.blocks + 1):
            y = getattr(self, f"block{i}")(y)
        return self.conv(y) + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "blocks": self.blocks, "reduction": self.reduction}
